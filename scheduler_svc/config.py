"""Configuration of the scheduler service (frozen; from flags or LLMSERVE_* variables)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from llmserve.runtime.flags import add_flag


@dataclass(frozen=True)
class SchedulerServiceConfig:
    """How the scheduler service runs. Per-worker geometry (blocks, budgets, context length) comes
    from each worker's Describe, not from here."""

    worker_addrs: tuple[str, ...]
    kvstore_addr: str = ""
    policy: str = "fcfs"
    # Options passed to the policy factory (e.g. cost-model coefficients for bros).
    policy_options: tuple[tuple[str, object], ...] = ()
    # Plans in flight per worker: 2 lets the scheduler plan step N+1 while step N runs.
    max_inflight_plans: int = 2
    # Requests waiting per worker before Submit answers RESOURCE_EXHAUSTED.
    max_num_waiting: int = 4096
    # How long to wait for a worker to become healthy at start, and between reconnect attempts.
    worker_connect_timeout_s: float = 300.0
    worker_retry_interval_s: float = 1.0
    drain_grace_s: float = 10.0
    # Port of Prometheus /metrics; 0 serves none.
    metrics_port: int = 0
    # Bidirectional KV: victims the policy preempts by CHECKPOINT (bros: best-effort and deadline)
    # go to the KV store's host tier and resume without recompute. False: recompute only.
    checkpoint_preemption: bool = True
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.worker_addrs:
            raise ValueError("at least one worker address is needed (--worker-addrs host:port[,host:port...])")
        if self.max_inflight_plans < 1:
            raise ValueError("--max-inflight-plans must be >= 1")
        if self.max_num_waiting < 1:
            raise ValueError("--max-num-waiting must be >= 1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scheduler_svc", description="llmserve scheduler service")
    add_flag(parser, "--address", default="127.0.0.1:50052", help="host:port to serve on")
    add_flag(parser, "--worker-addrs", default="", help="comma-separated worker addresses")
    add_flag(parser, "--kvstore-addr", default="", help="KV store address (capacity stream)")
    add_flag(parser, "--policy", default="fcfs", help="fcfs | priority | edf | bros | tempo")
    add_flag(parser, "--cost-model", default="", help="bros, tempo: JSON file of step-time coefficients, the prior of the cost model they refit online from step timings")
    add_flag(parser, "--max-inflight-plans", default=2, type=int, help="plans in flight per worker")
    add_flag(parser, "--max-num-waiting", default=4096, type=int, help="queue cap per worker")
    add_flag(parser, "--metrics-port", default=0, type=int, help="Prometheus port (0: off)")
    add_flag(parser, "--checkpoint-preemption", default=True, type=bool,
             help="preempt BE by checkpoint to the KV store's host tier (false: recompute only)")
    return parser


def config_from_args(args: argparse.Namespace) -> SchedulerServiceConfig:
    options: list[tuple[str, object]] = []
    if args.cost_model:
        if args.policy not in ("bros", "tempo"):
            raise ValueError(f"--cost-model is used by --policy bros or tempo only (got --policy {args.policy})")
        options.append(("cost_model_path", args.cost_model))
    return SchedulerServiceConfig(
        worker_addrs=tuple(a.strip() for a in args.worker_addrs.split(",") if a.strip()),
        kvstore_addr=args.kvstore_addr,
        policy=args.policy,
        policy_options=tuple(options),
        max_inflight_plans=args.max_inflight_plans,
        max_num_waiting=args.max_num_waiting,
        metrics_port=args.metrics_port,
        checkpoint_preemption=args.checkpoint_preemption,
    )
