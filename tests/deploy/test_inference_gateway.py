"""The inference-gateway overlay: the gateway pods are an InferencePool whose selector matches
their labels, on the port of the OpenAI-compatible HTTP front (which also serves the vllm:* gauges
the picker scrapes); the pods carry the engine label that makes the picker read vLLM's names; the
route sends /v1 to the pool; and the rest of the overlay validates strictly like the others."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from .conftest import HTTP_PORT, K8S, by_kind_name, kustomize, tool

OVERLAY = K8S / "overlays" / "inference-gateway"
CRD_KINDS = {"InferencePool", "HTTPRoute"}


def test_the_pool_selects_the_gateway_pods_on_their_http_port() -> None:
    docs = by_kind_name(kustomize(OVERLAY))
    pool = docs[("InferencePool", "llmserve")]
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    gateway = docs[("Deployment", "gateway")]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["inference.networking.k8s.io/engine-type"] == "vllm"
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert pool["spec"]["targetPorts"] == [{"number": ports["http"]}] == [{"number": HTTP_PORT}]
    gateway_env: dict[str, Any] = {}
    for source in container["envFrom"]:
        gateway_env.update(docs[("ConfigMap", source["configMapRef"]["name"])]["data"])
    assert gateway_env["LLMSERVE_HTTP_ADDRESS"] == f"0.0.0.0:{HTTP_PORT}"
    # No other workload is in the pool: the picker must not send OpenAI requests to a worker.
    for (kind, name), doc in docs.items():
        if kind in ("Deployment", "StatefulSet") and name != "gateway":
            template_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert not pool["spec"]["selector"]["matchLabels"].items() <= template_labels.items(), name
    route = docs[("HTTPRoute", "llmserve")]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "llmserve"}]
    assert all(doc["metadata"].get("namespace") == "llmserve" for (kind, _), doc in docs.items() if kind != "Namespace")


def test_the_rest_validates_strictly(tmp_path: Path) -> None:
    core = [doc for doc in kustomize(OVERLAY) if doc["kind"] not in CRD_KINDS]
    rendered = tmp_path / "inference-gateway.yaml"
    rendered.write_text(yaml.safe_dump_all(core))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(rendered)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
