"""Prometheus metrics of the llmserve services, one explicit registry per service instance.

`ServiceMetrics.create(service)` builds a fresh `CollectorRegistry` holding every llmserve metric
(each service fills the ones it owns; the rest export no samples), so several services can run in
one process (tests, `llmserve up --in-process`) without sharing series. Pass the object to the
code that records; serve it with `start_metrics_server(port, metrics.registry)`.

Who records what (the labels in brackets):
- gateway:   request latencies and SLO outcomes per class (`ttft_seconds`, `tpot_seconds`,
             `e2e_latency_seconds`, `slo_total`, `slo_attained_total`, `requests_total[finish_reason]`)
             through `observe_finished()`.
- scheduler: `queue_length[worker, service_class]`, `running_batch_size[worker]`,
             `tokens_per_step[worker, phase]`, `step_seconds[worker]` (plan sent → result),
             `kv_blocks_used[worker, service_class]`, `kv_blocks_total[worker]`,
             `preemptions_total[service_class, kind]`.
- worker:    `step_seconds[worker]` (plan received → result sent), `tokens_per_step[worker, phase]`,
             `step_phase_seconds_total[worker, phase]` (a step's time by phase, through `observe_step_phases()`),
             `checkpoint_bytes_total[direction]`, `restores_total`, `checkpoint_seconds[direction]`
             (device↔host copies; restores include the fetch), `recomputed_tokens_total[reason]`
             (`restore_failed`) through `observe_checkpoint_step()`; the prefix cache's
             `prefix_cache_blocks_total[worker, event=hit|stale|cached|evicted|host_hit|demoted|
             host_dropped]` and
             `prefix_cache_blocks[worker]` through `observe_prefix_cache()`.
- scheduler (bidirectional KV): `preemptions_total[service_class, kind=checkpoint|recompute]`,
             `recomputed_tokens_total[reason=preempted|restore_failed]`, `kv_pool_blocks[worker, state]`
             and `kv_pool_live[worker]` from the store's capacity stream.
- kvstore:   `kv_blocks_used[worker, service_class]`, `kv_blocks_total[worker]`,
             `expired_leases_total[worker]`, `checkpoint_bytes_total[direction]`.
Class labels are `real_time`, `deadline`, `best_effort` (`class_label()` maps the proto enum names).
SLO attainment of a class = `rate(llmserve_slo_attained_total) / rate(llmserve_slo_total)`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from llmserve.types import ServiceClass, service_class_of

PREFIX = "llmserve"

SERVICE_CLASSES: tuple[str, ...] = tuple(c.label for c in ServiceClass if c is not ServiceClass.UNSPECIFIED)

# Latency buckets, seconds: TTFT spans sub-100 ms real-time targets to minutes of best-effort
# queueing; TPOT spans a few ms (GPU decode) to a second (CPU, big batches).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
TOKENS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def class_label(service_class: str | int) -> str:
    """`SERVICE_CLASS_REAL_TIME` (or `REAL_TIME`, `real_time`) -> `real_time`; the proto enum's
    number works too. Unknown values give `unspecified` rather than an error: metrics never fail a request."""
    if isinstance(service_class, int):
        known = service_class_of(service_class)
        return known.label if known is not None else ServiceClass.UNSPECIFIED.label
    name = service_class.lower().removeprefix("service_class_")
    return name if name in SERVICE_CLASSES else "unspecified"


@dataclass(frozen=True)
class ServiceMetrics:
    """Every llmserve metric, registered in `registry` (this service instance's own)."""

    registry: CollectorRegistry
    service: str
    ttft_seconds: Histogram
    tpot_seconds: Histogram
    e2e_latency_seconds: Histogram
    slo_total: Counter
    slo_attained_total: Counter
    requests_total: Counter
    queue_length: Gauge
    running_batch_size: Gauge
    tokens_per_step: Histogram
    step_seconds: Histogram
    kv_blocks_used: Gauge
    kv_blocks_total: Gauge
    preemptions_total: Counter
    checkpoint_bytes_total: Counter
    restores_total: Counter
    expired_leases_total: Counter
    checkpoint_seconds: Histogram
    recomputed_tokens_total: Counter
    kv_pool_blocks: Gauge
    kv_pool_live: Gauge
    step_phase_seconds_total: Counter
    prefix_cache_blocks_total: Counter
    prefix_cache_blocks: Gauge

    @classmethod
    def create(cls, service: str, registry: CollectorRegistry | None = None) -> ServiceMetrics:
        """All metrics in `registry` (a new one by default). `service` names the process kind
        (gateway, scheduler, worker, kvstore); Prometheus adds `job`/`instance` itself."""
        reg = CollectorRegistry(auto_describe=True) if registry is None else registry

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, namespace=PREFIX, buckets=buckets, registry=reg)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=PREFIX, registry=reg)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, doc, labels, namespace=PREFIX, registry=reg)

        cls_ = ("service_class",)
        return cls(
            registry=reg,
            service=service,
            ttft_seconds=histogram("ttft_seconds", "Time to first token from arrival at the gateway.", cls_, TTFT_BUCKETS),
            tpot_seconds=histogram("tpot_seconds", "Mean time per output token after the first, per request.", cls_, TPOT_BUCKETS),
            e2e_latency_seconds=histogram("e2e_latency_seconds", "Arrival to last token.", cls_, E2E_BUCKETS),
            slo_total=counter("slo", "Finished requests whose SLO was judged.", cls_),
            slo_attained_total=counter("slo_attained", "Finished requests that met their SLO.", cls_),
            requests_total=counter("requests", "Finished requests by how they ended.", ("service_class", "finish_reason")),
            queue_length=gauge("queue_length", "Requests waiting to be scheduled.", ("worker", "service_class")),
            running_batch_size=gauge("running_batch_size", "Requests in the last planned step.", ("worker",)),
            tokens_per_step=histogram("tokens_per_step", "Tokens computed per step.", ("worker", "phase"), TOKENS_BUCKETS),
            step_seconds=histogram("step_seconds", "Wall time of one step.", ("worker",), STEP_BUCKETS),
            kv_blocks_used=gauge("kv_blocks_used", "KV cache blocks leased.", ("worker", "service_class")),
            kv_blocks_total=gauge("kv_blocks_total", "KV cache blocks in the pool.", ("worker",)),
            preemptions_total=counter("preemptions", "Requests preempted.", ("service_class", "kind")),
            checkpoint_bytes_total=counter("checkpoint_bytes", "KV bytes moved to/from the host tier.", ("direction",)),
            restores_total=counter("restores", "Checkpointed requests restored."),
            expired_leases_total=counter("expired_leases", "KV leases expired by a missed heartbeat.", ("worker",)),
            checkpoint_seconds=histogram("checkpoint_seconds", "Time of a step's KV copies to/from the host tier.",
                                         ("direction",), STEP_BUCKETS),
            recomputed_tokens_total=counter("recomputed_tokens", "KV tokens computed again after losing them.",
                                            ("reason",)),
            kv_pool_blocks=gauge("kv_pool_blocks", "KV pool blocks as the store reports them (free, real_time, "
                                 "best_effort, reserved: held ahead by the worker).", ("worker", "state")),
            kv_pool_live=gauge("kv_pool_live", "1 while the store holds the worker's leases, 0 once they expired.",
                               ("worker",)),
            step_phase_seconds_total=counter("step_phase_seconds", "Where a worker's time went, by phase "
                                             "(worker_svc/step_phases.py: the step's phases add up to its wall "
                                             "time; encode, report and idle come between steps).",
                                             ("worker", "phase")),
            prefix_cache_blocks_total=counter("prefix_cache_blocks", "Prefix cache blocks by event: hit (served "
                                              "to an admission), stale (claimed but evicted meanwhile: computed), "
                                              "cached, evicted (from the KV pool); host_hit (served from the host tier), "
                                              "demoted (evicted into it), host_dropped (out of it).", ("worker", "event")),
            prefix_cache_blocks=gauge("prefix_cache_cached_blocks", "Blocks the worker's prefix cache holds.",
                                      ("worker",)),
        )

    def observe_prefix_cache(self, worker: str, num_cached: int, **events: int) -> None:
        """A worker's prefix cache since the last call: `events` (hit, stale, cached, evicted, and
        of its host tier host_hit, demoted, host_dropped) are
        block counts to add, `num_cached` the blocks it holds now."""
        for event, count in events.items():
            if count:
                self.prefix_cache_blocks_total.labels(worker, event).inc(count)
        self.prefix_cache_blocks.labels(worker).set(num_cached)

    def observe_finished(
        self,
        service_class: str | int,
        *,
        ttft_s: float | None,
        tpot_s: float | None,
        e2e_s: float,
        slo_attained: bool,
        finish_reason: str,
    ) -> None:
        """Records one finished request (the gateway calls this once per request). `ttft_s` is None
        when no token was produced, `tpot_s` when only one was; `finish_reason` is a lower-case
        label (stop, length, cancelled, error)."""
        label = class_label(service_class)
        if ttft_s is not None:
            self.ttft_seconds.labels(label).observe(ttft_s)
        if tpot_s is not None:
            self.tpot_seconds.labels(label).observe(tpot_s)
        self.e2e_latency_seconds.labels(label).observe(e2e_s)
        self.requests_total.labels(label, finish_reason).inc()
        # Cancelled requests have no SLO outcome: the client walked away.
        if finish_reason != "cancelled":
            self.slo_total.labels(label).inc()
            if slo_attained:
                self.slo_attained_total.labels(label).inc()

    def set_queue_lengths(self, worker: str, lengths: dict[str, int]) -> None:
        """Sets the waiting-request gauge of every class for `worker` (absent classes -> 0)."""
        for label in SERVICE_CLASSES:
            self.queue_length.labels(worker, label).set(lengths.get(label, 0))

    def set_kv_blocks(self, worker: str, used: dict[str, int], total: int) -> None:
        """Sets the per-class leased-block gauges and the pool size of `worker`."""
        for label in SERVICE_CLASSES:
            self.kv_blocks_used.labels(worker, label).set(used.get(label, 0))
        self.kv_blocks_total.labels(worker).set(total)

    def observe_step_phases(self, worker: str, phases: dict[str, int]) -> None:
        """Adds one step's time per phase (nanoseconds by phase name) to `step_phase_seconds_total`."""
        for phase, ns in phases.items():
            if ns > 0:
                self.step_phase_seconds_total.labels(worker, phase).inc(ns / 1e9)

    def observe_checkpoint_step(self, *, saved_bytes: int, restored_bytes: int, save_s: float, restore_s: float,
                                restores: int, recomputed_tokens: int) -> None:
        """Records one worker step's host-tier traffic (zeros record nothing)."""
        if saved_bytes:
            self.checkpoint_bytes_total.labels("save").inc(saved_bytes)
            self.checkpoint_seconds.labels("save").observe(save_s)
        if restored_bytes:
            self.checkpoint_bytes_total.labels("restore").inc(restored_bytes)
        if restore_s:
            self.checkpoint_seconds.labels("restore").observe(restore_s)
        if restores > 0:
            self.restores_total.inc(restores)
        if recomputed_tokens:
            self.recomputed_tokens_total.labels("restore_failed").inc(recomputed_tokens)

    def observe_step(self, worker: str, *, seconds: float, prefill_tokens: int, decode_tokens: int, batch_size: int) -> None:
        """Records one step of `worker`: its wall time, tokens per phase and batch size."""
        self.step_seconds.labels(worker).observe(seconds)
        if prefill_tokens:
            self.tokens_per_step.labels(worker, "prefill").observe(prefill_tokens)
        if decode_tokens:
            self.tokens_per_step.labels(worker, "decode").observe(decode_tokens)
        self.running_batch_size.labels(worker).set(batch_size)


@dataclass
class MetricsServer:
    """A running /metrics HTTP endpoint (a daemon thread)."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5.0)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serves `registry` at http://host:port/metrics (port 0 picks a free port; see `.port`)."""
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(httpd=httpd, thread=thread)


def start_metrics_server(port: int, registry: CollectorRegistry, host: str = "0.0.0.0") -> MetricsServer | None:
    """The `--metrics-port` semantics: None when `port` is 0 (off), else a server on that port."""
    if port == 0:
        return None
    if not 0 < port < 65536:
        raise ValueError(f"--metrics-port must be 0 (off) or a TCP port, got {port}")
    return serve_metrics(registry, port, host)

