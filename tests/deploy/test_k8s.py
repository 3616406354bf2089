"""Kubernetes manifests: each overlay renders (kustomize) and validates strictly against the API
schemas (kubernetes-validate --strict); pods run the commands and LLMSERVE_* environment that
`llmserve up --tls` gives each process (the cluster identity mounted from the Secret llmserve-tls
instead of a certificate per process); workers are a StatefulSet whose stable DNS names are exactly
the scheduler's worker list; probes through the mTLS-speaking probe command, drain-matching grace
periods, GPUs on GPU workers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig
from llmserve.settings import config_from_env
from llmserve_stack.launch import LOCAL_ONLY_VARS, ServiceSpec, StackConfig
from scheduler_svc.config import SchedulerServiceConfig
from worker_svc.config import WorkerConfig

from .conftest import (
    DEPLOY_ONLY_VARS,
    HTTP_PORT,
    GRPC_PORT,
    K8S,
    K8S_TLS,
    K8S_TLS_DIR,
    METRICS_PORT,
    OVERLAYS,
    SERVICE_EXTRAS,
    assert_settings_of,
    by_kind_name,
    kustomize,
    specs_with_tls,
    tool,
    translate_addresses,
    translate_tls,
)

# The `llmserve up` each overlay stands for.
OVERLAY_STACKS = {
    "cpu": StackConfig(num_workers=2, device="cpu", tls=True),
    "gpu": StackConfig(num_workers=4, device="cuda", dtype="bfloat16", tls=True),
}
# Oldest Kubernetes the manifests target and the newest schema.
K8S_VERSIONS = ("1.30.0", "1.37.0")
WORKLOADS = {"kvstore": "Deployment", "worker": "StatefulSet", "scheduler": "Deployment", "gateway": "Deployment"}
PROBE_COMMAND = ["python", "-m", "llmserve.runtime.probe"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    return request.param, by_kind_name(kustomize(K8S / "overlays" / request.param))


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[ServiceSpec]]:
    return {name: specs_with_tls(config, tmp_path_factory.mktemp(name)) for name, config in OVERLAY_STACKS.items()}


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


def _pod_env(docs: dict[tuple[str, str], dict[str, Any]], workload: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The environment a pod of `workload` gets: its envFrom ConfigMaps, then its env entries."""
    container = _container(workload)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(docs[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, item
            env[item["name"]] = pod_name
    return env


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_overlay_validates_strictly(name: str, version: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(yaml.safe_dump_all(kustomize(K8S / "overlays" / name)))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(rendered)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check above can fail: a misspelt probe field is refused in strict mode."""
    docs = kustomize(K8S / "overlays" / "cpu")
    worker = next(d for d in docs if d["kind"] == "StatefulSet")
    _container(worker)["readinessProbe"]["exec"]["comand"] = PROBE_COMMAND
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(rendered)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "comand" in result.stdout + result.stderr


def test_pods_run_what_llmserve_up_runs(overlay: tuple[str, dict], launched: dict[str, list[ServiceSpec]]) -> None:
    name, docs = overlay
    specs = launched[name]
    address_to_name = {spec.address: spec.name for spec in specs}
    worker_svc = docs[("StatefulSet", "worker")]["spec"]["serviceName"]
    dns = {spec.name: f"{spec.name}.{worker_svc}:{GRPC_PORT}" if spec.name.startswith("worker-") else f"{spec.name}:{GRPC_PORT}" for spec in specs}
    for spec in specs:
        workload_name = "worker" if spec.name.startswith("worker-") else spec.name
        workload = docs[(WORKLOADS[workload_name], workload_name)]
        assert _container(workload)["command"] == spec.argv(python="python"), spec.name
        env = _pod_env(docs, workload, pod_name=spec.name)
        launched = {k: v for k, v in env.items() if k not in DEPLOY_ONLY_VARS and not k.startswith("OTEL_")}
        ours = {k: v for k, v in spec.env.items() if k not in DEPLOY_ONLY_VARS | LOCAL_ONLY_VARS}
        expected = translate_tls(translate_addresses(ours, address_to_name, f"0.0.0.0:{GRPC_PORT}", dns), K8S_TLS)
        assert launched == expected, spec.name


def test_every_variable_is_a_setting_of_its_service(overlay: tuple[str, dict],
                                                    launched: dict[str, list[ServiceSpec]]) -> None:
    name, docs = overlay
    for spec in launched[name]:
        workload_name = "worker" if spec.name.startswith("worker-") else spec.name
        env = _pod_env(docs, docs[(WORKLOADS[workload_name], workload_name)], pod_name=spec.name)
        assert_settings_of(spec.module, env, f"{name} overlay {spec.name}")


def test_scheduler_addresses_every_worker_pod(overlay: tuple[str, dict]) -> None:
    name, docs = overlay
    workers = docs[("StatefulSet", "worker")]
    service = docs[("Service", workers["spec"]["serviceName"])]
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS record per pod
    assert service["spec"]["selector"].items() <= workers["spec"]["template"]["metadata"]["labels"].items()
    scheduler_env = _pod_env(docs, docs[("Deployment", "scheduler")], "scheduler")
    replicas = workers["spec"]["replicas"]
    assert replicas == OVERLAY_STACKS[name].num_workers
    expected = [f"worker-{i}.{service['metadata']['name']}:{GRPC_PORT}" for i in range(replicas)]
    assert scheduler_env["LLMSERVE_WORKER_ADDRS"].split(",") == expected


def test_probes_speak_mtls_and_ports(overlay: tuple[str, dict]) -> None:
    """The kubelet's own gRPC probe speaks no TLS: every probe runs the probe command, which
    presents the pod's identity (compose's healthcheck runs the same)."""
    _, docs = overlay
    for workload_name, kind in WORKLOADS.items():
        container = _container(docs[(kind, workload_name)])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        http = {"http": HTTP_PORT} if workload_name == "gateway" else {}
        assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, **http}, workload_name
        probes = [p for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]
        assert {"readinessProbe", "livenessProbe"} <= set(probes), workload_name
        for probe in probes:
            assert container[probe]["exec"] == {"command": PROBE_COMMAND}, (workload_name, probe)
            assert container[probe]["timeoutSeconds"] >= 3, (workload_name, probe)  # a Python start, a TLS handshake
        service = docs[("Service", workload_name)]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", workload_name


def test_every_pod_mounts_the_cluster_identity(overlay: tuple[str, dict]) -> None:
    _, docs = overlay
    common = next(d for (k, n), d in docs.items() if k == "ConfigMap" and n.startswith("llmserve-common"))
    assert {k: v for k, v in common["data"].items() if k in K8S_TLS} == K8S_TLS
    for workload_name, kind in WORKLOADS.items():
        pod = docs[(kind, workload_name)]["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "llmserve-tls", workload_name
        assert volume["secret"]["defaultMode"] == 0o440, workload_name  # the key is not world-readable
        mounts = {m["name"]: m for m in _container(docs[(kind, workload_name)])["volumeMounts"]}
        assert mounts[volume["name"]]["mountPath"] == K8S_TLS_DIR and mounts[volume["name"]]["readOnly"], workload_name
    # The Secret's keys are the files the variables name (cert-manager's names).
    assert {path.rsplit("/", 1)[1] for path in K8S_TLS.values()} == {"ca.crt", "tls.crt", "tls.key"}
# The setting each service's start waits on its peers with: a restarted pod may wait that long
# (a scheduler for a restarting worker, a gateway for a restarting scheduler) before SERVING.
START_WAITS = {"worker": (WorkerConfig, "kvstore_connect_timeout_s"),
               "scheduler": (SchedulerServiceConfig, "worker_connect_timeout_s"),
               "gateway": (GatewayConfig, "scheduler_timeout_s")}


def test_pods_restart_and_probes_leave_a_restarting_peer_time(overlay: tuple[str, dict]) -> None:
    """Every pod restarts (restartPolicy Always, the only one a Deployment or StatefulSet allows),
    and a restarted pod is not killed by liveness while its start waits for a peer: the startup
    probe's budget covers that wait. A service's health does not follow its peers' once it is up
    (docs/reliability.md), so liveness never restarts a pod for a peer's outage."""
    _, docs = overlay
    for workload_name, kind in WORKLOADS.items():
        workload = docs[(kind, workload_name)]
        assert workload["spec"]["template"]["spec"].get("restartPolicy", "Always") == "Always", workload_name
        if workload_name not in START_WAITS:
            continue
        config_class, wait_name = START_WAITS[workload_name]
        config = config_from_env(config_class, _pod_env(docs, workload, f"{workload_name}-0"))
        startup = _container(workload)["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= getattr(config, wait_name), f"{workload_name}: startup probe {budget}s < {wait_name}"


def test_grace_period_covers_the_drain(overlay: tuple[str, dict]) -> None:
    _, docs = overlay
    for workload_name, kind in WORKLOADS.items():
        workload = docs[(kind, workload_name)]
        drain = float(_pod_env(docs, workload, workload_name)["LLMSERVE_DRAIN_GRACE_S"])
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert drain + 5 <= grace <= drain + 30, f"{workload_name}: grace {grace}s for a {drain}s drain"


def test_singletons_never_run_twice(overlay: tuple[str, dict]) -> None:
    """One kvstore (lease authority) and one scheduler (sole planner of each worker), even mid-rollout."""
    _, docs = overlay
    for name in ("kvstore", "scheduler"):
        spec = docs[("Deployment", name)]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name


def test_pods_are_non_root_and_read_only(overlay: tuple[str, dict]) -> None:
    _, docs = overlay
    for workload_name, kind in WORKLOADS.items():
        pod = docs[(kind, workload_name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        container = _container(docs[(kind, workload_name)])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_gpus_only_on_gpu_workers(overlay: tuple[str, dict]) -> None:
    name, docs = overlay
    for workload_name, kind in WORKLOADS.items():
        resources = _container(docs[(kind, workload_name)])["resources"]
        gpus = resources.get("limits", {}).get("nvidia.com/gpu")
        if name == "gpu" and workload_name == "worker":
            assert gpus == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
            tolerations = docs[(kind, workload_name)]["spec"]["template"]["spec"]["tolerations"]
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
        else:
            assert gpus is None, (name, workload_name)
        assert "memory" in resources["limits"] and "cpu" in resources["requests"], workload_name

def test_each_service_runs_its_own_image(overlay: tuple[str, dict], launched: dict[str, list[ServiceSpec]]) -> None:
    """One image per service (its pyproject extra): only the workers' carries torch, and only on the
    GPU overlay is it the CUDA build."""
    name, docs = overlay
    for spec in launched[name]:
        workload_name = "worker" if spec.name.startswith("worker-") else spec.name
        image = _container(docs[(WORKLOADS[workload_name], workload_name)])["image"]
        variant = "cuda" if name == "gpu" and workload_name == "worker" else "cpu"
        assert image == f"llmserve:{variant}-{SERVICE_EXTRAS[spec.module]}", spec.name


def test_disruption_budgets_select_workloads(overlay: tuple[str, dict]) -> None:
    _, docs = overlay
    budgets = {n: d for (k, n), d in docs.items() if k == "PodDisruptionBudget"}
    assert set(budgets) == {"gateway", "worker"}
    for name, budget in budgets.items():
        labels = docs[(WORKLOADS[name], name)]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs[("Deployment", "gateway")]["spec"]["replicas"] > budgets["gateway"]["spec"]["minAvailable"]


def test_collector_scrapes_metrics_ports_and_receives_traces(overlay: tuple[str, dict]) -> None:
    _, docs = overlay
    config_maps = [d for (k, n), d in docs.items() if k == "ConfigMap" and n.startswith("otel-collector-config")]
    (config_map,) = config_maps
    collector = yaml.safe_load(config_map["data"]["config.yaml"])
    (job,) = collector["receivers"]["prometheus"]["config"]["scrape_configs"]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep == [{"source_labels": ["__meta_kubernetes_pod_container_port_name"], "action": "keep", "regex": "metrics"}]
    common = next(d for (k, n), d in docs.items() if k == "ConfigMap" and n.startswith("llmserve-common"))
    otlp_port = int(collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1])
    service_ports = {p["port"] for p in docs[("Service", "otel-collector")]["spec"]["ports"]}
    assert common["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{otlp_port}" and otlp_port in service_ports
    deployment = docs[("Deployment", "otel-collector")]
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    for pipeline in collector["service"]["pipelines"].values():
        for stage in ("receivers", "processors", "exporters"):
            assert set(pipeline[stage]) <= set(collector[stage]), stage


def test_headless_dns_names_are_valid() -> None:
    docs = by_kind_name(kustomize(K8S / "overlays" / "gpu"))
    addrs = _pod_env(docs, docs[("Deployment", "scheduler")], "scheduler")["LLMSERVE_WORKER_ADDRS"].split(",")
    for addr in addrs:
        host, port = addr.rsplit(":", 1)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", host) and port == str(GRPC_PORT)
