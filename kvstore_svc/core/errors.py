"""Errors of the KV store core.

The core imports no grpc, so it has its own small hierarchy; `kvstore_svc.convert` maps each class
to the shared `llmserve.runtime.errors` table (and so to a gRPC status). Every message says what
the caller should do.
"""

from __future__ import annotations


class KvStoreError(Exception):
    """Base of the errors the KV store core raises."""


class InvalidSpecError(KvStoreError):
    """A malformed argument (negative count, unknown dtype, inconsistent chunk): fix it. INVALID_ARGUMENT."""


class CheckpointMismatchError(InvalidSpecError):
    """A checkpoint's dtype or shape differs from what the restoring worker expects. INVALID_ARGUMENT."""


class UnknownWorkerError(KvStoreError):
    """The worker has no live pool (never registered, or its leases expired): re-register. NOT_FOUND."""


class UnknownCheckpointError(KvStoreError):
    """No complete checkpoint is held for the request (never stored, dropped, evicted or unfinished). NOT_FOUND."""


class GeometryConflictError(KvStoreError):
    """A live worker re-registered with another pool geometry. ALREADY_EXISTS."""


class OutOfBlocksError(KvStoreError):
    """Fewer free blocks than asked for; nothing changed. RESOURCE_EXHAUSTED."""

    def __init__(self, message: str, *, requested: int, free: int) -> None:
        super().__init__(message)
        self.requested = requested
        self.free = free


class HostTierFullError(KvStoreError):
    """The host tier cannot hold the checkpoint even after evicting; recompute instead. RESOURCE_EXHAUSTED."""
