"""Configuration of the gateway service (frozen; from flags or LLMSERVE_* variables)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llmserve.runtime.flags import add_flag
from llmserve.runtime.metrics import add_metrics_flag


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway runs. Model limits (context, vocabulary) come from the scheduler's workers."""

    scheduler_addr: str
    # The model spec whose tokenizer the gateway uses (the workers serve the same one).
    model: str = "default"
    load_format: str = "auto"
    tokenizer: str | None = None
    # Running Generate calls beyond this get RESOURCE_EXHAUSTED.
    max_concurrent_requests: int = 1024
    # How long to wait at start for the scheduler to be healthy and to report its model.
    scheduler_timeout_s: float = 300.0
    # Time a Cancel RPC gives Scheduler.Abort.
    abort_timeout_s: float = 5.0
    # Time in-flight streams get to finish on a graceful stop.
    drain_grace_s: float = 10.0
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if not self.scheduler_addr:
            raise ValueError("the scheduler address is needed (--scheduler-addr host:port)")
        if self.load_format not in ("auto", "safetensors", "gguf", "dummy"):
            raise ValueError(f"--load-format must be auto, safetensors, gguf or dummy, got {self.load_format!r}")
        if self.max_concurrent_requests < 1:
            raise ValueError(f"--max-concurrent-requests must be >= 1, got {self.max_concurrent_requests}")
        if not self.scheduler_timeout_s > 0:
            raise ValueError(f"--scheduler-timeout-s must be > 0, got {self.scheduler_timeout_s}")
        if self.drain_grace_s < 0:
            raise ValueError(f"--drain-grace-s must be >= 0, got {self.drain_grace_s}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="llmserve public Gateway service")
    add_flag(parser, "--address", default="127.0.0.1:50051", help="host:port to serve on")
    add_flag(parser, "--scheduler-addr", default="127.0.0.1:50052", help="scheduler service address")
    add_flag(parser, "--model", default="default", help="model spec: 'default' (bundled SmolLM2), a folder or a .gguf")
    add_flag(parser, "--load-format", default="auto", help="auto | safetensors | gguf | dummy")
    add_flag(parser, "--tokenizer", default=None, help="tokenizer folder (when the model spec has none)")
    add_flag(parser, "--max-concurrent-requests", default=1024, type=int, help="running requests before RESOURCE_EXHAUSTED")
    add_flag(parser, "--scheduler-timeout-s", default=300.0, type=float, help="wait for the scheduler at start, seconds")
    add_flag(parser, "--drain-grace-s", default=10.0, type=float, help="grace for in-flight streams on stop, seconds")
    add_flag(parser, "--log-level", default="INFO", help="DEBUG | INFO | WARNING | ERROR")
    add_flag(parser, "--log-format", default="json", help="json | text")
    add_metrics_flag(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """Raises ValueError naming the flag to fix."""
    return GatewayConfig(
        scheduler_addr=args.scheduler_addr,
        model=args.model,
        load_format=args.load_format,
        tokenizer=args.tokenizer or None,
        max_concurrent_requests=args.max_concurrent_requests,
        scheduler_timeout_s=args.scheduler_timeout_s,
        drain_grace_s=args.drain_grace_s,
        metrics_port=args.metrics_port,
    )
