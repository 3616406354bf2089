"""ServiceMetrics: one registry per service instance, the documented names and labels, the
--metrics-port flag semantics, and a real /metrics endpoint scraped over HTTP."""

from __future__ import annotations

import argparse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmserve.runtime.metrics import ServiceMetrics, class_label, serve_metrics, start_metrics_server
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import add_settings, config_from_args


def test_registries_are_independent() -> None:
    gateway, other_gateway = ServiceMetrics.create("gateway"), ServiceMetrics.create("gateway")
    gateway.observe_finished("SERVICE_CLASS_REAL_TIME", ttft_s=0.1, tpot_s=0.02, e2e_s=1.0, slo_attained=True, finish_reason="stop")
    assert gateway.registry.get_sample_value("llmserve_slo_total", {"service_class": "real_time"}) == 1.0
    assert other_gateway.registry.get_sample_value("llmserve_slo_total", {"service_class": "real_time"}) is None


def test_observe_finished_counts_slo_per_class() -> None:
    m = ServiceMetrics.create("gateway")
    m.observe_finished("SERVICE_CLASS_REAL_TIME", ttft_s=0.1, tpot_s=0.02, e2e_s=1.0, slo_attained=True, finish_reason="stop")
    m.observe_finished("SERVICE_CLASS_REAL_TIME", ttft_s=0.9, tpot_s=0.05, e2e_s=3.0, slo_attained=False, finish_reason="length")
    m.observe_finished(3, ttft_s=None, tpot_s=None, e2e_s=0.5, slo_attained=False, finish_reason="cancelled")
    get = m.registry.get_sample_value
    assert get("llmserve_slo_total", {"service_class": "real_time"}) == 2.0
    assert get("llmserve_slo_attained_total", {"service_class": "real_time"}) == 1.0
    # A cancelled request is counted as finished, never as an SLO outcome.
    assert get("llmserve_slo_total", {"service_class": "best_effort"}) is None
    assert get("llmserve_requests_total", {"service_class": "best_effort", "finish_reason": "cancelled"}) == 1.0
    assert get("llmserve_ttft_seconds_count", {"service_class": "real_time"}) == 2.0
    assert get("llmserve_ttft_seconds_sum", {"service_class": "real_time"}) == pytest.approx(1.0)
    assert get("llmserve_ttft_seconds_bucket", {"service_class": "real_time", "le": "0.1"}) == 1.0
    assert get("llmserve_e2e_latency_seconds_count", {"service_class": "best_effort"}) == 1.0
    assert get("llmserve_ttft_seconds_count", {"service_class": "best_effort"}) is None


def test_scheduler_and_store_gauges() -> None:
    m = ServiceMetrics.create("scheduler")
    m.set_queue_lengths("worker-0", {"real_time": 3, "best_effort": 7})
    m.set_kv_blocks("worker-0", {"real_time": 10, "best_effort": 50}, total=128)
    m.observe_step("worker-0", seconds=0.03, prefill_tokens=256, decode_tokens=12, batch_size=14)
    m.preemptions_total.labels("best_effort", "checkpoint").inc()
    get = m.registry.get_sample_value
    assert get("llmserve_queue_length", {"worker": "worker-0", "service_class": "real_time"}) == 3
    assert get("llmserve_queue_length", {"worker": "worker-0", "service_class": "deadline"}) == 0
    assert get("llmserve_kv_blocks_used", {"worker": "worker-0", "service_class": "best_effort"}) == 50
    assert get("llmserve_kv_blocks_total", {"worker": "worker-0"}) == 128
    assert get("llmserve_running_batch_size", {"worker": "worker-0"}) == 14
    assert get("llmserve_tokens_per_step_sum", {"worker": "worker-0", "phase": "prefill"}) == 256
    assert get("llmserve_tokens_per_step_count", {"worker": "worker-0", "phase": "decode"}) == 1
    assert get("llmserve_step_seconds_count", {"worker": "worker-0"}) == 1
    assert get("llmserve_preemptions_total", {"service_class": "best_effort", "kind": "checkpoint"}) == 1


@pytest.mark.parametrize(
    ("value", "label"),
    [("SERVICE_CLASS_REAL_TIME", "real_time"), ("DEADLINE", "deadline"), ("best_effort", "best_effort"), (3, "best_effort"), (0, "unspecified"), ("bogus", "unspecified")],
)
def test_class_label(value: str | int, label: str) -> None:
    assert class_label(value) == label


def test_metrics_port_flag_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    def metrics_port(argv: list[str]) -> int:
        parser = argparse.ArgumentParser()
        add_settings(parser, ServiceSettings)
        return config_from_args(ServiceSettings, parser.parse_args(argv)).metrics_port

    monkeypatch.delenv("LLMSERVE_METRICS_PORT", raising=False)
    assert metrics_port([]) == 0
    monkeypatch.setenv("LLMSERVE_METRICS_PORT", "9464")
    assert metrics_port([]) == 9464
    assert metrics_port(["--metrics-port", "0"]) == 0


def test_port_zero_is_off_and_bad_port_is_refused() -> None:
    registry = ServiceMetrics.create("worker").registry
    assert start_metrics_server(0, registry) is None
    with pytest.raises(ValueError, match="--metrics-port"):
        start_metrics_server(70000, registry)


def test_metrics_endpoint_serves_the_registry() -> None:
    m = ServiceMetrics.create("kvstore")
    m.expired_leases_total.labels("worker-1").inc(2)
    m.checkpoint_bytes_total.labels("save").inc(4096)
    server = serve_metrics(m.registry, 0, host="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    expired = [s for s in families["llmserve_expired_leases"].samples if s.name == "llmserve_expired_leases_total"]
    assert [(s.labels, s.value) for s in expired] == [({"worker": "worker-1"}, 2.0)]
    assert families["llmserve_ttft_seconds"].type == "histogram"
    assert families["llmserve_queue_length"].type == "gauge"
