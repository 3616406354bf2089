"""compose.yaml: valid for Compose v2 (`docker-compose config`), the same commands and LLMSERVE_*
environment as `llmserve up --workers 2 --tls` (llmserve_stack.launch; the cluster identity mounted
as secrets instead of a certificate per process), health-gated start order, restart policies, and
only the gateway's port published."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmserve_stack.launch import LOCAL_ONLY_VARS, ServiceSpec, StackConfig

from .conftest import (
    COMPOSE_FILE,
    COMPOSE_TLS,
    DEPLOY_ONLY_VARS,
    HTTP_PORT,
    GRPC_PORT,
    METRICS_PORT,
    REPO,
    SERVICE_EXTRAS,
    assert_settings_of,
    clean_env,
    compose_config,
    specs_with_tls,
    tool,
    translate_addresses,
    translate_tls,
)

# The stack compose.yaml stands for: `llmserve up --workers 2 --tls` with every other default.
COMPOSE_STACK = StackConfig(num_workers=2, tls=True)
OBSERVABILITY_UIS = {"jaeger": 16686, "grafana": 3000}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, Any]:
    return config["services"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> list[ServiceSpec]:
    return specs_with_tls(COMPOSE_STACK, tmp_path_factory.mktemp("tls"))


def _llmserve_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if (s.get("command") or [])[:2] == ["python", "-m"]}


def _started_before(services: dict[str, Any], name: str) -> set[str]:
    """Every service that compose starts before `name` (depends_on, transitively)."""
    seen: set[str] = set()
    todo = list(services[name].get("depends_on", {}))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(services[dep].get("depends_on", {}))
    return seen


def test_compose_validates_with_every_profile() -> None:
    for args in ((), ("--profile", "dashboards")):
        result = subprocess.run(
            [tool("docker-compose"), "-f", str(COMPOSE_FILE), *args, "config", "--quiet"],
            capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: a dependency on a service that does not exist is refused."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["gateway"]["depends_on"]["schedulerr"] = {"condition": "service_healthy"}
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(data))
    result = subprocess.run([tool("docker-compose"), "-f", str(broken), "config", "--quiet"], capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=60)
    assert result.returncode != 0 and "schedulerr" in result.stderr


def test_commands_and_env_match_llmserve_up(services: dict[str, Any], launched: list[ServiceSpec]) -> None:
    specs = launched
    address_to_name = {spec.address: spec.name for spec in specs}
    dns = {spec.name: f"{spec.name}:{GRPC_PORT}" for spec in specs}
    assert set(_llmserve_services(services)) == {spec.name for spec in specs}
    for spec in specs:
        service = services[spec.name]
        assert service["command"] == spec.argv(python="python"), spec.name
        env = service["environment"]
        launched = {k: v for k, v in env.items() if k not in DEPLOY_ONLY_VARS and not k.startswith("OTEL_")}
        ours = {k: v for k, v in spec.env.items() if k not in DEPLOY_ONLY_VARS | LOCAL_ONLY_VARS}
        expected = translate_tls(translate_addresses(ours, address_to_name, f"0.0.0.0:{GRPC_PORT}", dns), COMPOSE_TLS)
        assert launched == expected, spec.name


def test_every_service_mounts_the_cluster_identity(config: dict[str, Any], services: dict[str, Any]) -> None:
    files = {name: Path(secret["file"]).name for name, secret in config["secrets"].items()}
    assert files == {"llmserve-ca": "ca.crt", "llmserve-cert": "tls.crt", "llmserve-key": "tls.key"}
    assert {Path(secret["file"]).parent for secret in config["secrets"].values()} == {REPO / "deploy" / "tls"}
    for name, service in _llmserve_services(services).items():
        mounted = {secret["target"] for secret in service["secrets"]}
        assert mounted == set(COMPOSE_TLS.values()), name
        assert {k: v for k, v in service["environment"].items() if k in COMPOSE_TLS} == COMPOSE_TLS, name


def test_every_variable_is_a_setting_of_its_service(services: dict[str, Any], launched: list[ServiceSpec]) -> None:
    for spec in launched:
        assert_settings_of(spec.module, services[spec.name]["environment"], f"compose.yaml {spec.name}")


def test_each_service_builds_its_own_image(services: dict[str, Any], launched: list[ServiceSpec]) -> None:
    for spec in launched:
        service, extras = services[spec.name], SERVICE_EXTRAS[spec.module]
        assert service["build"]["args"] == {"EXTRAS": extras}, spec.name
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile", spec.name
        assert service["image"] == f"llmserve:cpu-{extras}", spec.name


def test_start_order_is_health_gated(services: dict[str, Any]) -> None:
    def healthy_deps(name: str) -> set[str]:
        return {dep for dep, cond in services[name].get("depends_on", {}).items() if cond["condition"] == "service_healthy"}

    workers = {name for name in services if re.fullmatch(r"worker-\d+", name)}
    assert len(workers) == COMPOSE_STACK.num_workers
    for worker in workers:
        assert healthy_deps(worker) == {"kvstore"}
    assert healthy_deps("scheduler") == {"kvstore", *workers}
    assert healthy_deps("gateway") == {"scheduler"}
    for name, service in _llmserve_services(services).items():
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "llmserve.runtime.probe"], name
        assert service["environment"]["LLMSERVE_ADDRESS"].endswith(f":{GRPC_PORT}"), name


def test_every_service_restarts_and_drains(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
    for name, service in _llmserve_services(services).items():
        grace = float(service["environment"]["LLMSERVE_DRAIN_GRACE_S"])
        stop = service["stop_grace_period"]
        seconds = int(stop.rstrip("s")) if stop.endswith("s") and "m" not in stop else None
        assert seconds is not None and seconds >= grace + 5, f"{name}: stop_grace_period {stop} vs drain {grace}s"


def test_only_the_gateway_is_published(services: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert [p["target"] for p in published.pop("gateway")] == [GRPC_PORT, HTTP_PORT]
    for name, ports in published.items():
        # Trace/metric UIs are for the operator on this host only.
        assert [(p["host_ip"], p["target"]) for p in ports] == [("127.0.0.1", OBSERVABILITY_UIS[name])], name


def test_dashboards_profile_adds_prometheus_and_grafana() -> None:
    services = compose_config("--profile", "dashboards")["services"]
    assert {"prometheus", "grafana"} <= set(services)
    assert [p["host_ip"] for p in services["grafana"]["ports"]] == ["127.0.0.1"]


def test_collector_scrapes_every_service_and_receives_their_traces(services: dict[str, Any]) -> None:
    collector = yaml.safe_load((REPO / "deploy" / "otel" / "collector.yaml").read_text())
    (job,) = collector["receivers"]["prometheus"]["config"]["scrape_configs"]
    targets = set(job["static_configs"][0]["targets"])
    llmserve = _llmserve_services(services)
    assert targets == {f"{name}:{METRICS_PORT}" for name in llmserve}
    otlp_port = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    for name, service in llmserve.items():
        assert service["environment"]["LLMSERVE_METRICS_PORT"] == str(METRICS_PORT), name
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{otlp_port}", name
        assert "otel-collector" in _started_before(services, name), name
    mounted = {v["source"] for v in services["otel-collector"]["volumes"]}
    assert str(REPO / "deploy" / "otel" / "collector.yaml") in mounted
