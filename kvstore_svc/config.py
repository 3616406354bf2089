"""Configuration of the KV store service: each field a setting (flag `--x-y`, variable LLMSERVE_X_Y)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.runtime.server import MAX_MESSAGE_BYTES
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import redefault, setting

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True, kw_only=True)
class KvStoreConfig(ServiceSettings):
    """How the KV store runs."""

    address: str = redefault(ServiceSettings, "address", "127.0.0.1:50071")
    lease_ttl_s: float = setting(10.0, help="a worker silent (no RegisterPool, Apply or Heartbeat) this long loses "
                                            "its leases, seconds")
    host_tier_bytes: int = setting(2 * GIB, flag="--host-tier-gb", unit=GIB,
                                   help="host memory for checkpointed best-effort KV, all workers together, GiB")
    # Stays well under gRPC's message limit.
    max_chunk_bytes: int = setting(4 * MIB, flag="--max-chunk-mb", unit=MIB, help="largest KvChunk.data that "
                                                                                  "Restore sends, MiB")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lease_ttl_s > 0:
            raise ValueError(f"--lease-ttl-s must be > 0, got {self.lease_ttl_s}")
        if self.host_tier_bytes <= 0:
            raise ValueError(f"--host-tier-gb must be > 0, got {self.host_tier_bytes} bytes")
        # Leave room for the chunk's other fields under the message limit.
        if not 0 < self.max_chunk_bytes <= MAX_MESSAGE_BYTES - 64 * 1024:
            raise ValueError(
                f"--max-chunk-mb must be in (0, {(MAX_MESSAGE_BYTES - 64 * 1024) / MIB}], "
                f"got {self.max_chunk_bytes / MIB}"
            )
