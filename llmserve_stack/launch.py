"""The process specs of a local llmserve stack: which services start, in which order, with which
environment. `llmserve up` runs them; `compose.yaml` and the Kubernetes manifests use the same
commands and the same LLMSERVE_* variables (a test keeps them in sync).

Every service is started as `python -m <package>` and configured only through LLMSERVE_*
variables (each flag `--foo-bar` of a service reads `LLMSERVE_FOO_BAR`).

Binding: only the gateway binds `--host`; the kvstore, workers and scheduler bind
`--internal-host` (loopback by default: nothing off this machine reaches them). `--tls` gives every
service its own certificate from a throwaway CA (`stack_tls`), so every hop is TLS and the internal
services take calls only from holders of one of those certificates (mTLS).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import GatewayConfig, SloClassName
from kvstore_svc.config import KvStoreConfig
from llmserve.model_source import LoadFormat, ModelSettings
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.runtime.tls import Tls
from llmserve.settings import check_choices, config_from_env, exposed, setting, specs, to_env, values_env
from llmserve_stack.certs import Issued, LocalCa
from llmserve_stack.local_machine import usable_cpus, worker_threads
from scheduler_svc.config import SchedulerServiceConfig
from worker_svc.config import WorkerConfig


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """What `llmserve up` runs: the stack's own settings, then the services' settings it exposes,
    each listed by name (`exposed`: the service's flag, variable, default and help). Every service
    whose config declares an exposed setting gets its value as that setting's LLMSERVE_* variable."""

    port: int = setting(50051, help="the gateway's gRPC port")
    http_port: int = setting(8000, help="the gateway's OpenAI-compatible HTTP port (0: no HTTP front)")
    metrics_port: int = setting(0, help="Prometheus /metrics ports from this one up: the gateway's, the "
                                        "scheduler's, the kvstore's, then one per worker (0: off)")
    host: str = setting("127.0.0.1", help="the address the gateway binds (the public one, both fronts)")
    internal_host: str = setting("127.0.0.1", help="the address the kvstore, workers and scheduler bind (loopback: "
                                                   "reachable from this machine only)")
    tls: bool = setting(False, help="TLS on every hop, mTLS between the internal services, with a throwaway local CA "
                                    "(its ca.crt is printed, for `llmserve generate --tls-ca`)")
    num_workers: int = setting(1, flag="--workers", help="worker processes")
    worker_threads: int = setting(0, help="torch CPU threads of each worker (0: one worker keeps torch's default; "
                                          "several share this machine's CPUs out, at least one thread each)")
    log_dir: str = setting("", help="write each service's log to DIR/<service>.log (empty: to this terminal)")
    max_restarts: int = setting(5, help="restarts of a service that exits on its own within --restart-window-s; "
                                        "one more exit stops the stack (0: stop at the first exit)")
    restart_window_s: float = setting(60.0, help="the window of --max-restarts, seconds")
    log_format: str = exposed(ServiceSettings, "log_format")
    model: str = exposed(ModelSettings, "model")
    load_format: LoadFormat = exposed(ModelSettings, "load_format")
    tokenizer: str | None = exposed(GatewayConfig, "tokenizer")
    default_slo_class: SloClassName = exposed(GatewayConfig, "default_slo_class")
    default_ttft_ms: float = exposed(GatewayConfig, "default_ttft_ms")
    default_tpot_ms: float = exposed(GatewayConfig, "default_tpot_ms")
    api_keys_file: str | None = exposed(GatewayConfig, "api_keys_file")
    tenant_max_concurrent_requests: int = exposed(GatewayConfig, "tenant_max_concurrent_requests")
    tenant_tokens_per_minute: int = exposed(GatewayConfig, "tenant_tokens_per_minute")
    max_prompt_bytes: int = exposed(GatewayConfig, "max_prompt_bytes")
    policy: str = exposed(SchedulerServiceConfig, "policy")
    cost_model: str = exposed(SchedulerServiceConfig, "cost_model")
    rt_admission_control: bool = exposed(SchedulerServiceConfig, "rt_admission_control")
    slack_bank_tpots: float = exposed(SchedulerServiceConfig, "slack_bank_tpots")
    prefix_cache: bool = exposed(SchedulerServiceConfig, "prefix_cache")
    num_kv_blocks: int = exposed(WorkerConfig, "num_kv_blocks")
    block_size: int = exposed(WorkerConfig, "block_size")
    max_num_batched_tokens: int = exposed(WorkerConfig, "max_num_batched_tokens")
    max_num_seqs: int = exposed(WorkerConfig, "max_num_seqs")
    dtype: str = exposed(WorkerConfig, "dtype")
    device: str = exposed(WorkerConfig, "device")
    prefix_host_tier_gb: float = exposed(WorkerConfig, "prefix_host_tier_gb")
    lease_ttl_s: float = exposed(KvStoreConfig, "lease_ttl_s")
    host_tier_bytes: int = exposed(KvStoreConfig, "host_tier_bytes")

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.worker_threads < 0:
            raise ValueError(f"--worker-threads must be >= 0, got {self.worker_threads}")
        ports = (("--port", self.port), ("--http-port", self.http_port), ("--metrics-port", self.metrics_port))
        for flag, port in ports:
            if not 0 <= port < 65536:
                raise ValueError(f"{flag} {port} is not a TCP port")
        if self.metrics_port and self.metrics_port + 3 + self.num_workers > 65536:
            raise ValueError(f"--metrics-port {self.metrics_port} leaves no room for {3 + self.num_workers} ports")
        if self.max_restarts < 0:
            raise ValueError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if not self.restart_window_s > 0:
            raise ValueError(f"--restart-window-s must be > 0, got {self.restart_window_s}")
        # The services validate the rest when they start; catch what can be caught before that.
        check_choices(self)


# The config class each service module (`python -m <module>`) reads its settings into.
SERVICE_CONFIGS: dict[str, type] = {"kvstore_svc": KvStoreConfig, "worker_svc": WorkerConfig,
                                    "scheduler_svc": SchedulerServiceConfig, "gateway": GatewayConfig}


# The stack's own settings: `metrics_port` shares its name with every service's, but is the first
# of a range, which `service_specs` hands out one port per process.
STACK_OWN = frozenset({"port", "http_port", "metrics_port", "host", "internal_host", "tls", "num_workers",
                       "worker_threads", "log_dir", "max_restarts", "restart_window_s"})
# What `llmserve up` sets for the machine and the run (`service_specs`), which a deployment
# (compose, Kubernetes) leaves to each worker's host or container: the workers' share of the
# local CPUs, and the file a restarted worker reuses its start-up calibration from.
LOCAL_ONLY_VARS = frozenset({"LLMSERVE_NUM_THREADS", "LLMSERVE_CALIBRATION_FILE"})


def exposed_env(config: StackConfig, service: type) -> dict[str, str]:
    """The LLMSERVE_* variables of the exposed settings that `service` (a config class) declares."""
    declared = {spec.name for spec in specs(service)} - STACK_OWN
    return to_env(config, [spec.name for spec in specs(StackConfig) if spec.name in declared])


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the stack."""

    name: str  # kvstore, worker-0, ..., scheduler, gateway
    module: str  # python -m <module>
    address: str  # host:port it serves gRPC on
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    # The identity the supervisor's health checks present (a TLS stack's); None: plaintext.
    probe_tls: Tls | None = None

    def argv(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports free right now on `host`. All are held open until the last is
    picked: one `free_port()` after another may hand out the same port twice (each socket is
    closed before the next bind), and two services told the same port fail to start."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass(frozen=True)
class StackTls:
    """The throwaway identities of a `--tls` stack: its CA, a certificate per service (by name),
    and the supervisor's own, which its health checks present."""

    ca: LocalCa
    services: dict[str, Issued]
    supervisor: Issued

    def settings(self, name: str) -> dict[str, str]:
        """The TLS settings (field name -> value) of service `name`."""
        issued = self.services[name]
        return {"tls_cert": str(issued.cert), "tls_key": str(issued.key), "tls_ca": str(self.ca.cert)}


_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def tls_hosts(config: StackConfig) -> list[str]:
    """The names a local stack's services are dialed by: the bound addresses, and for a wildcard
    bind loopback and this machine's names."""
    hosts = ["127.0.0.1", "localhost", "::1"]
    for bound in (config.host, config.internal_host):
        if bound in _WILDCARD_HOSTS:
            hosts += [socket.gethostname(), socket.getfqdn()]
        else:
            hosts.append(bound.strip("[]"))
    return list(dict.fromkeys(hosts))


def service_names(config: StackConfig) -> list[str]:
    """The stack's processes, in start order."""
    return ["kvstore", *(f"worker-{index}" for index in range(config.num_workers)), "scheduler", "gateway"]


def stack_tls(config: StackConfig, folder: str | os.PathLike[str]) -> StackTls:
    """A fresh CA in `folder` (a private temporary one: it holds the keys) and a certificate per
    service of `config`, each valid for `tls_hosts(config)`, plus the supervisor's."""
    ca = LocalCa.create(Path(folder), days=7, name="llmserve up CA")
    hosts = tls_hosts(config)
    services = {name: ca.issue(name, hosts) for name in service_names(config)}
    return StackTls(ca, services, ca.issue("llmserve-up", ["localhost"]))


def service_specs(config: StackConfig, ports: dict[str, int] | None = None, tls: StackTls | None = None,
                  cpus: int | None = None, state_dir: str | None = None) -> list[ServiceSpec]:
    """The stack's processes in start order: kvstore, workers, scheduler, gateway.

    `ports` maps a service name to its port; services not named get a free port (the gateway gets
    `config.port`). The gateway binds `config.host`, the others `config.internal_host`. Each
    process gets its wiring (address, peers, worker id), the exposed settings it declares, as the
    LLMSERVE_* variables its config reads, and with `tls` (which `config.tls` requires) its TLS
    identity. Each worker gets its share of the `cpus` (default: this process's usable CPUs) as its
    torch threads (`worker_threads`), and with `state_dir` (a folder that lives as long as the
    stack) a file there for its start-up calibration, which a restart of it reuses."""
    if config.tls and tls is None:
        raise ValueError("a --tls stack needs its certificates: pass stack_tls(config, folder)")
    ports = dict(ports or {})

    def address(name: str) -> str:
        host = config.host if name == "gateway" else config.internal_host
        if name not in ports:
            ports[name] = config.port if name == "gateway" else free_port(host)
        return f"{host}:{ports[name]}"

    # One metrics port per process, counted up from --metrics-port; always set, so that an
    # LLMSERVE_METRICS_PORT in the caller's environment cannot give every process the same one.
    metrics_order = ["gateway", "scheduler", "kvstore", *(f"worker-{i}" for i in range(config.num_workers))]

    def metrics_port(name: str) -> int:
        return config.metrics_port + metrics_order.index(name) if config.metrics_port else 0

    def env(name: str, service: type, **wiring: object) -> dict[str, str]:
        identity = tls.settings(name) if tls is not None else {}
        return {**values_env(service, metrics_port=metrics_port(name), **wiring, **identity),
                **exposed_env(config, service)}

    def spec(name: str, module: str, addr: str, service_env: dict[str, str], ready_timeout_s: float) -> ServiceSpec:
        probe = tls.ca.tls(tls.supervisor) if tls is not None else None
        return ServiceSpec(name, module, addr, service_env, ready_timeout_s=ready_timeout_s, probe_tls=probe)

    kvstore_addr = address("kvstore")
    kvstore_env = env("kvstore", KvStoreConfig, address=kvstore_addr)
    processes = [spec("kvstore", "kvstore_svc", kvstore_addr, kvstore_env, 30.0)]
    worker_addrs = []
    threads = worker_threads(config.num_workers, config.worker_threads, usable_cpus() if cpus is None else cpus)
    for index in range(config.num_workers):
        name = f"worker-{index}"
        worker_addr = address(name)
        worker_addrs.append(worker_addr)
        worker_env = env(name, WorkerConfig, address=worker_addr, kvstore_addr=kvstore_addr, worker_id=name,
                         **_worker_local(name, threads, state_dir))
        processes.append(spec(name, "worker_svc", worker_addr, worker_env, 300.0))
    scheduler_addr = address("scheduler")
    scheduler_env = env("scheduler", SchedulerServiceConfig, address=scheduler_addr, worker_addrs=tuple(worker_addrs),
                        kvstore_addr=kvstore_addr)
    processes.append(spec("scheduler", "scheduler_svc", scheduler_addr, scheduler_env, 120.0))
    gateway_addr = address("gateway")
    http_address = f"{config.host}:{config.http_port}" if config.http_port else ""
    gateway_env = env("gateway", GatewayConfig, address=gateway_addr, scheduler_addr=scheduler_addr,
                      http_address=http_address)
    processes.append(spec("gateway", "gateway", gateway_addr, gateway_env, 120.0))
    return processes


def _worker_local(name: str, threads: int, state_dir: str | None) -> dict[str, object]:
    """A worker's settings for this machine and this run (`LOCAL_ONLY_VARS`): its torch threads,
    where chosen, and the file it keeps its calibration in for a restart."""
    local: dict[str, object] = {"num_threads": threads} if threads else {}
    if state_dir:
        local["calibration_file"] = os.path.join(state_dir, f"{name}.calibration.json")
    return local


def preflight(config: StackConfig, processes: list[ServiceSpec]) -> None:
    """What can fail before anything starts, checked before anything starts (ValueError saying
    what to change): every process's settings build its config (cross-setting rules such as
    `--cost-model` needing `--policy bros` included), and every fixed port is free. A busy port
    would otherwise let the health check reach another stack and report this one ready."""
    for process in processes:
        try:
            config_from_env(SERVICE_CONFIGS[process.module], process.env)
        except ValueError as err:
            raise ValueError(f"{process.name}: {err}") from None
    fixed = [("--port", config.port), ("--http-port", config.http_port)]
    if config.metrics_port:
        fixed += [("--metrics-port", config.metrics_port + i) for i in range(3 + config.num_workers)]
    for flag, port in fixed:
        if port and not port_is_free(config.host, port):
            raise ValueError(f"{config.host}:{port} ({flag}) is already in use: stop what listens there "
                             f"(another `llmserve up`?) or choose another {flag}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
