"""The services started as processes with exactly compose.yaml's commands and environment (compose
DNS names swapped for loopback ports, the collector for an OTLP stub, the mounted secrets for a
cluster identity made by `python -m llmserve_stack.certs`), in compose's depends_on order: every
service becomes healthy over mTLS, a request streams through the gateway (over TLS), every service
serves /metrics, and the request's spans from all four services arrive at the collector as ONE trace.

The worker leases blocks from a reserve it holds ahead and tells the store in batched syncs at most
`kv_sync_interval_s` (1 s) late, so the store is on a request's path only when the request outlives
a sync: the traced request here generates long enough for that (the test says so if it does not)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.otlp_collector import OtlpCollector, running_collector
from llmserve_stack.certs import CLUSTER_HOSTS, LocalCa
from llmserve_stack.launch import ServiceSpec, free_ports
from llmserve.runtime.channel import open_channel
from llmserve.runtime.tls import Tls
from llmserve_stack.supervisor import Stack
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from worker_svc.config import WorkerConfig

from .conftest import COMPOSE_TLS, GRPC_PORT, compose_config

SERVICE_NAMES = {"gateway", "scheduler", "worker", "kvstore"}
# The worker's default --kv-sync-interval-s (compose keeps it).
KV_SYNC_INTERVAL_S = next(f.default for f in dataclasses.fields(WorkerConfig) if f.name == "kv_sync_interval_s")
MAX_TOKENS = 160


@pytest.fixture
async def collector() -> AsyncIterator[tuple[OtlpCollector, int]]:
    async with running_collector() as running:
        yield running


def _start_order(services: dict[str, Any]) -> list[str]:
    """Compose's start order: each service after everything it depends on."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dep in services[name].get("depends_on", {}):
                if dep in services:
                    visit(dep)
            order.append(name)

    for name in sorted(services):
        visit(name)
    return order


def cluster_identity(folder: Path) -> tuple[dict[str, str], Tls]:
    """What `python -m llmserve_stack.certs` makes for compose, as {TLS variable: local file} in
    place of compose's secret mounts, and that identity (what the supervisor's checks present)."""
    ca = LocalCa.create(folder, days=1)
    issued = ca.issue("llmserve cluster", CLUSTER_HOSTS, stem="tls")
    files = {"LLMSERVE_TLS_CERT": issued.cert, "LLMSERVE_TLS_KEY": issued.key, "LLMSERVE_TLS_CA": ca.cert}
    return {key: str(path) for key, path in files.items()}, ca.tls(issued)


def specs_from_compose(
    compose: dict[str, Any], otlp_port: int, folder: Path
) -> tuple[list[ServiceSpec], dict[str, int], Tls]:
    """ServiceSpecs running compose's llmserve services on loopback, their metrics ports, and the
    cluster identity they share."""
    services = {n: s for n, s in compose["services"].items() if (s.get("command") or [])[:2] == ["python", "-m"]}
    ports = iter(free_ports(2 * len(services) + 1))  # distinct: a port told to two services fails one
    grpc_ports = {name: next(ports) for name in services}
    metrics_ports = {name: next(ports) for name in services}
    tls_files, identity = cluster_identity(folder)

    def local(value: str) -> str:
        for name, port in grpc_ports.items():
            value = re.sub(rf"(?<![\w.-]){re.escape(name)}:{GRPC_PORT}\b", f"127.0.0.1:{port}", value)
        return value

    specs = []
    for name in _start_order(services):
        env = {key: local(value) for key, value in services[name]["environment"].items()}
        assert {key: env[key] for key in COMPOSE_TLS} == COMPOSE_TLS, name  # the mounted secrets
        env.update(tls_files)
        env["LLMSERVE_ADDRESS"] = f"127.0.0.1:{grpc_ports[name]}"
        env["LLMSERVE_METRICS_PORT"] = str(metrics_ports[name])
        if "LLMSERVE_HTTP_ADDRESS" in env:  # the gateway's HTTP front: loopback and a free port too
            env["LLMSERVE_HTTP_ADDRESS"] = f"127.0.0.1:{next(ports)}"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # flush spans quickly
        for key, value in env.items():
            assert not any(re.search(rf"(?<![\w.-]){re.escape(n)}:", value) for n in compose["services"]), f"{name}: {key}={value} still names a compose host"
        command = services[name]["command"]
        spec = ServiceSpec(name, command[2], env["LLMSERVE_ADDRESS"], env, probe_tls=identity,
                           ready_timeout_s=300.0 if name.startswith("worker") else 120.0)
        assert spec.argv(python="python") == command
        specs.append(spec)
    return specs, metrics_ports, identity


def test_compose_env_translates_to_loopback(tmp_path: Path) -> None:
    specs, _, _ = specs_from_compose(compose_config(), otlp_port=4317, folder=tmp_path)
    names = [s.name for s in specs]
    assert names.index("kvstore") < min(names.index("worker-0"), names.index("worker-1")) < names.index("scheduler") < names.index("gateway")
    scheduler = next(s for s in specs if s.name == "scheduler")
    workers = [s.address for s in specs if s.name.startswith("worker-")]
    assert scheduler.env["LLMSERVE_WORKER_ADDRS"].split(",") == workers


@pytest.mark.e2e
@pytest.mark.slow
async def test_compose_env_stack_is_healthy_and_traced(collector: tuple[OtlpCollector, int], tmp_path: Path) -> None:
    servicer, otlp_port = collector
    specs, metrics_ports, identity = specs_from_compose(compose_config(), otlp_port, tmp_path / "tls")
    gateway = next(s for s in specs if s.name == "gateway")
    async with Stack(specs, log_dir=str(tmp_path)):
        async with open_channel(gateway.address, tls=Tls(ca=identity.ca)) as channel:  # a public client: the CA
            request = gateway_pb2.GenerateRequest(
                text="The capital of France is",
                sampling=common_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True),
                slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=60_000, tpot_ms=10_000),
            )
            started = time.monotonic()
            chunks = [chunk async for chunk in gateway_pb2_grpc.GatewayStub(channel).Generate(request, timeout=120)]
            took_s = time.monotonic() - started
        assert sum(len(c.token_ids) for c in chunks) == MAX_TOKENS
        assert took_s > 2 * KV_SYNC_INTERVAL_S, f"done in {took_s:.2f} s, before a lease sync: raise MAX_TOKENS"
        bodies = {}
        for name, port in metrics_ports.items():
            bodies[name] = await asyncio.to_thread(lambda p=port: urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=10).read().decode())
        assert 'llmserve_requests_total{finish_reason="length",service_class="real_time"} 1.0' in bodies["gateway"]
        # Each service records its own part (the request ran on one of the two workers).
        steps = {name: _samples(bodies[name], "llmserve_step_seconds_count") for name in ("scheduler", "worker-0", "worker-1")}
        assert sum(steps["scheduler"].values()) >= 4, steps
        assert sum(steps["worker-0"].values()) + sum(steps["worker-1"].values()) >= 4, steps
        assert set(steps["scheduler"]) <= {(("worker", "worker-0"),), (("worker", "worker-1"),)}, steps
        assert _samples(bodies["kvstore"], "llmserve_kv_blocks_total").keys() == {(("worker", "worker-0"),), (("worker", "worker-1"),)}
    # The stack has drained: every service flushed its spans on the way out.
    traces: dict[bytes, set[str]] = defaultdict(set)
    for service, trace_id, _ in servicer.spans:
        traces[trace_id].add(service)
    generate = [t for s, t, name in servicer.spans if s == "gateway" and name == "/llmserve.v1.Gateway/Generate"]
    assert len(generate) == 1, servicer.spans
    assert traces[generate[0]] == SERVICE_NAMES, sorted((s, n) for s, t, n in servicer.spans if t == generate[0])
    in_trace = {(s, n) for s, t, n in servicer.spans if t == generate[0]}
    assert {("scheduler", "scheduler.queue"), ("scheduler", "scheduler.decode"), ("worker", "worker.prefill_chunk"),
            ("kvstore", "kvstore.lease")} <= in_trace, sorted(in_trace)


def _samples(body: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called `name` in a /metrics body, by their sorted labels."""
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(body)
            for s in family.samples if s.name == name}
