"""Service classes as the KV store sees them: which end of a pool a request's blocks come from.
The class itself is the shared `llmserve.types.ServiceClass`."""

from __future__ import annotations

import enum

from llmserve.types import ServiceClass

__all__ = ["PoolEnd", "ServiceClass", "pool_end"]


class PoolEnd(enum.Enum):
    """The end of a block pool an allocation takes from (BROS bidirectional KV)."""

    LOW = "low"  # lowest free block ids first: real-time
    HIGH = "high"  # highest free block ids first: best-effort and deadline


def pool_end(service_class: ServiceClass) -> PoolEnd:
    """Real-time grows from the low end; everything else from the high end, toward it."""
    return PoolEnd.LOW if service_class is ServiceClass.REAL_TIME else PoolEnd.HIGH
