"""`llmserve up` is derived from the services' declarations: the settings it exposes are theirs
(flag, variable, default, help), each process gets them as its LLMSERVE_* variables and reads back
exactly the stack's values, and the `up` flags parse into a StackConfig."""

from __future__ import annotations

import argparse
import os

import pytest

from kvstore_svc.config import GIB
from llmserve.settings import add_settings, config_from_args, config_from_env, specs
from llmserve_stack.cli import build_parser
from llmserve_stack.launch import SERVICE_CONFIGS, STACK_OWN, StackConfig, service_specs, stack_tls
from scheduler_svc.core.policy import POLICY_NAMES



def test_exposed_settings_are_the_services_own() -> None:
    exposed = [spec for spec in specs(StackConfig) if spec.name not in STACK_OWN]
    for spec in exposed:
        declaring = [cls for cls in SERVICE_CONFIGS.values() if spec.name in {s.name for s in specs(cls)}]
        assert declaring, f"{spec.name} is exposed but no service declares it"
        for cls in declaring:
            (theirs,) = [s for s in specs(cls) if s.name == spec.name]
            assert theirs == spec, f"{spec.name}: StackConfig and {cls.__name__} disagree"


def test_each_process_reads_back_the_stacks_values() -> None:
    stack = StackConfig(num_workers=2, model="/m", load_format="dummy", tokenizer="/tok", policy="bros",
                        cost_model="/c.json", rt_admission_control=True, num_kv_blocks=96, block_size=32, max_num_batched_tokens=256,
                        max_num_seqs=8, dtype="float32", device="cpu", lease_ttl_s=1.5,
                        host_tier_bytes=GIB // 4, log_format="text")
    processes = service_specs(stack, ports={"gateway": 50051, "kvstore": 1, "scheduler": 2, "worker-0": 3, "worker-1": 4})
    configs = {p.name: config_from_env(SERVICE_CONFIGS[p.module], p.env) for p in processes}
    assert [p.name for p in processes] == ["kvstore", "worker-0", "worker-1", "scheduler", "gateway"]
    assert all(c.log_format == "text" for c in configs.values())
    kv = configs["kvstore"]
    assert (kv.address, kv.lease_ttl_s, kv.host_tier_bytes) == ("127.0.0.1:1", 1.5, GIB // 4)
    for index, name in enumerate(["worker-0", "worker-1"]):
        w = configs[name]
        assert (w.address, w.worker_id, w.kvstore_addr) == (f"127.0.0.1:{3 + index}", name, "127.0.0.1:1")
        assert (w.model, w.load_format, w.num_kv_blocks, w.block_size) == ("/m", "dummy", 96, 32)
        assert (w.max_num_batched_tokens, w.max_num_seqs, w.dtype, w.device) == (256, 8, "float32", "cpu")
    s = configs["scheduler"]
    assert (s.worker_addrs, s.kvstore_addr, s.policy, s.cost_model) == (("127.0.0.1:3", "127.0.0.1:4"), "127.0.0.1:1",
                                                                         "bros", "/c.json")
    assert s.rt_admission_control
    g = configs["gateway"]
    assert (g.address, g.scheduler_addr, g.model, g.load_format, g.tokenizer) == ("127.0.0.1:50051", "127.0.0.1:2",
                                                                                   "/m", "dummy", "/tok")


def test_defaults_are_the_services_own() -> None:
    (_, worker, scheduler, gateway) = (config_from_env(SERVICE_CONFIGS[p.module], p.env)
                                       for p in service_specs(StackConfig(), ports={"gateway": 1, "kvstore": 2,
                                                                                     "worker-0": 3, "scheduler": 4}))
    assert (worker.max_num_batched_tokens, worker.max_num_seqs, worker.num_kv_blocks) == (0, 0, 0)  # auto
    assert (scheduler.policy, scheduler.cost_model, gateway.tokenizer) == ("fcfs", "", None)
    assert not scheduler.rt_admission_control


def test_up_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("LLMSERVE_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["up", "--workers", "2", "--policy", "bros", "--max-num-seqs", "8",
                                      "--host-tier-gb", "0.5"])
    config = config_from_args(StackConfig, args)
    assert (config.num_workers, config.policy, config.max_num_seqs, config.host_tier_bytes) == (2, "bros", 8, GIB // 2)
    assert config_from_args(StackConfig, build_parser().parse_args(["up"])) == StackConfig()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--policy", "lifo"])
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        StackConfig(num_workers=0)


def test_up_help_shows_the_services_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, StackConfig, env={})
    text = " ".join(parser.format_help().split())
    assert "--max-num-seqs MAX_NUM_SEQS most sequences per step (auto: 64 on CPU, 128 on CUDA) (default: auto;" in text
    assert "--policy {" + ",".join(POLICY_NAMES) + "}" in text and "--workers WORKERS" in text


def test_only_the_gateway_binds_host() -> None:
    processes = service_specs(StackConfig(host="0.0.0.0", num_workers=2), ports={"gateway": 50051})
    bound = {p.name: config_from_env(SERVICE_CONFIGS[p.module], p.env).address.rsplit(":", 1)[0] for p in processes}
    assert bound == {"gateway": "0.0.0.0", "kvstore": "127.0.0.1", "worker-0": "127.0.0.1", "worker-1": "127.0.0.1",
                     "scheduler": "127.0.0.1"}
    internal = service_specs(StackConfig(internal_host="10.0.0.7"), ports={"gateway": 1, "kvstore": 2, "worker-0": 3,
                                                                            "scheduler": 4})
    assert [p.address for p in internal] == ["10.0.0.7:2", "10.0.0.7:3", "10.0.0.7:4", "127.0.0.1:1"]


def test_a_tls_stack_gives_each_process_its_own_identity(tmp_path) -> None:
    config = StackConfig(tls=True, num_workers=2)
    with pytest.raises(ValueError, match="needs its certificates"):
        service_specs(config)
    tls = stack_tls(config, tmp_path)
    processes = service_specs(config, ports={"gateway": 1, "kvstore": 2, "worker-0": 3, "worker-1": 4, "scheduler": 5},
                              tls=tls)
    certs = set()
    for process in processes:
        service = config_from_env(SERVICE_CONFIGS[process.module], process.env)
        identity = service.load_tls()
        assert identity is not None and identity.ca == tls.ca.cert.read_bytes(), process.name
        certs.add(identity.cert)
        assert process.probe_tls is not None and process.probe_tls.cert == tls.supervisor.cert.read_bytes()
    assert len(certs) == len(processes)  # one certificate per service
    assert all(p.probe_tls is None for p in service_specs(StackConfig(), ports={"gateway": 1}))
def test_each_process_gets_its_own_metrics_port_and_the_gateway_its_http_port() -> None:
    processes = service_specs(StackConfig(num_workers=2, metrics_port=9500, http_port=8100))
    ports = {p.name: config_from_env(SERVICE_CONFIGS[p.module], p.env).metrics_port for p in processes}
    assert ports == {"gateway": 9500, "scheduler": 9501, "kvstore": 9502, "worker-0": 9503, "worker-1": 9504}
    gateway = config_from_env(SERVICE_CONFIGS["gateway"], processes[-1].env)
    assert gateway.http_address == "127.0.0.1:8100"
    # Off by default, and explicitly so: the caller's LLMSERVE_METRICS_PORT cannot leak into every process.
    assert all(p.env["LLMSERVE_METRICS_PORT"] == "0" for p in service_specs(StackConfig()))
    no_http = service_specs(StackConfig(http_port=0))[-1]
    assert config_from_env(SERVICE_CONFIGS["gateway"], no_http.env).http_address == ""


def test_preflight_refuses_a_busy_port_and_a_bad_combination_before_anything_starts() -> None:
    import socket

    from llmserve_stack.launch import free_port, preflight

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = StackConfig(port=port, http_port=free_port())
        with pytest.raises(ValueError, match=rf"127.0.0.1:{port} \(--port\) is already in use"):
            preflight(config, service_specs(config))
        config = StackConfig(port=free_port(), http_port=port)
        with pytest.raises(ValueError, match=r"\(--http-port\) is already in use"):
            preflight(config, service_specs(config))
    config = StackConfig(port=free_port(), http_port=free_port(), cost_model="h100_llama3_8b")  # fcfs: no cost model
    with pytest.raises(ValueError, match="scheduler: --cost-model is used by --policy bros or tempo only"):
        preflight(config, service_specs(config))
    config = StackConfig(port=free_port(), http_port=free_port(), rt_admission_control=True)  # fcfs again
    with pytest.raises(ValueError, match="scheduler: --rt-admission-control needs --policy bros or tempo"):
        preflight(config, service_specs(config))
    config = StackConfig(port=free_port(), http_port=free_port())
    preflight(config, service_specs(config))  # all free, all valid


def _threads_by_worker(config: StackConfig, cpus: int) -> dict[str, int]:
    return {p.name: config_from_env(SERVICE_CONFIGS[p.module], p.env).num_threads
            for p in service_specs(config, ports={"gateway": 1}, cpus=cpus) if p.module == "worker_svc"}


def test_several_workers_share_the_cpus_out() -> None:
    # Two workers of a thread per core each on 2 cores served half of what one thread each did (issue 11).
    assert _threads_by_worker(StackConfig(num_workers=2), cpus=2) == {"worker-0": 1, "worker-1": 1}
    assert _threads_by_worker(StackConfig(num_workers=3), cpus=8) == {"worker-0": 2, "worker-1": 2, "worker-2": 2}
    assert set(_threads_by_worker(StackConfig(num_workers=3), cpus=2).values()) == {1}  # at least one each


def test_one_worker_keeps_torchs_default_and_worker_threads_wins() -> None:
    one = service_specs(StackConfig(), ports={"gateway": 1}, cpus=16)[1]
    assert one.module == "worker_svc" and "LLMSERVE_NUM_THREADS" not in one.env  # 0: torch's default
    assert _threads_by_worker(StackConfig(worker_threads=3), cpus=2) == {"worker-0": 3}
    assert set(_threads_by_worker(StackConfig(num_workers=2, worker_threads=4), cpus=2).values()) == {4}
    with pytest.raises(ValueError, match="--worker-threads"):
        StackConfig(worker_threads=-1)


def test_with_a_state_dir_each_worker_keeps_its_own_calibration_file() -> None:
    processes = service_specs(StackConfig(num_workers=2), ports={"gateway": 1}, state_dir="/run/stack")
    files = {p.name: config_from_env(SERVICE_CONFIGS[p.module], p.env).calibration_file
             for p in processes if p.module == "worker_svc"}
    assert files == {"worker-0": "/run/stack/worker-0.calibration.json",
                     "worker-1": "/run/stack/worker-1.calibration.json"}
    without = service_specs(StackConfig(num_workers=2), ports={"gateway": 1})
    assert all("LLMSERVE_CALIBRATION_FILE" not in p.env for p in without)  # every start calibrates
