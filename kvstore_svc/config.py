"""Configuration of the KV store service (frozen; from flags or LLMSERVE_* variables)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llmserve.runtime.flags import add_flag
from llmserve.runtime.metrics import add_metrics_flag
from llmserve.runtime.server import MAX_MESSAGE_BYTES

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class KvStoreConfig:
    """How the KV store runs."""

    # A worker silent (no RegisterPool, Apply or Heartbeat) this long loses its leases.
    lease_ttl_s: float = 10.0
    # Host memory for checkpointed best-effort KV, all workers together.
    host_tier_bytes: int = 2 * GIB
    # Largest `data` of one KvChunk that Restore sends; stays well under gRPC's message limit.
    max_chunk_bytes: int = 4 * MIB
    # Time in-flight RPCs get to finish on a graceful stop.
    drain_grace_s: float = 5.0
    # Port of Prometheus /metrics; 0 serves none.
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if not self.lease_ttl_s > 0:
            raise ValueError(f"--lease-ttl-s must be > 0, got {self.lease_ttl_s}")
        if self.host_tier_bytes <= 0:
            raise ValueError(f"--host-tier-gb must be > 0, got {self.host_tier_bytes} bytes")
        # Leave room for the chunk's other fields under the message limit.
        if not 0 < self.max_chunk_bytes <= MAX_MESSAGE_BYTES - 64 * 1024:
            raise ValueError(
                f"max_chunk_bytes must be in (0, {MAX_MESSAGE_BYTES - 64 * 1024}], got {self.max_chunk_bytes}"
            )
        if self.drain_grace_s < 0:
            raise ValueError(f"--drain-grace-s must be >= 0, got {self.drain_grace_s}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kvstore_svc", description="llmserve KV store service")
    add_flag(parser, "--address", default="127.0.0.1:50071", help="host:port to serve on")
    add_flag(parser, "--lease-ttl-s", default=10.0, type=float, help="lease time to live, seconds")
    add_flag(parser, "--host-tier-gb", default=2.0, type=float, help="host tier capacity, GiB")
    add_flag(parser, "--max-chunk-mb", default=4.0, type=float, help="largest Restore chunk, MiB")
    add_flag(parser, "--drain-grace-s", default=5.0, type=float, help="grace for in-flight RPCs on stop")
    add_metrics_flag(parser)
    add_flag(parser, "--log-level", default="INFO", help="DEBUG | INFO | WARNING | ERROR")
    add_flag(parser, "--log-format", default="json", help="json | text")
    return parser


def config_from_args(args: argparse.Namespace) -> KvStoreConfig:
    """Raises ValueError with the flag to fix."""
    return KvStoreConfig(
        lease_ttl_s=args.lease_ttl_s,
        host_tier_bytes=int(args.host_tier_gb * GIB),
        max_chunk_bytes=int(args.max_chunk_mb * MIB),
        drain_grace_s=args.drain_grace_s,
        metrics_port=args.metrics_port,
    )
