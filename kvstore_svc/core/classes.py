"""Service classes as the KV store sees them: which end of a pool a request's blocks come from."""

from __future__ import annotations

import enum


class PoolEnd(enum.Enum):
    """The end of a block pool an allocation takes from (BROS bidirectional KV)."""

    LOW = "low"  # lowest free block ids first: real-time
    HIGH = "high"  # highest free block ids first: best-effort and deadline


class ServiceClass(enum.Enum):
    """The class of the request that owns a lease."""

    REAL_TIME = "real_time"
    DEADLINE = "deadline"
    BEST_EFFORT = "best_effort"

    @property
    def end(self) -> PoolEnd:
        """Real-time grows from the low end; everything else from the high end, toward it."""
        return PoolEnd.LOW if self is ServiceClass.REAL_TIME else PoolEnd.HIGH
