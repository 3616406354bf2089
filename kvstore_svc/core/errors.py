"""Errors of the KV store core.

Each subclasses `KvStoreError` (so a caller of the core can catch them all) and the shared error of
`llmserve.errors` whose status it gets, so `llmserve.runtime.errors`' one table maps it with no
second mapping. Every message says what the caller should do.
"""

from __future__ import annotations

from llmserve.errors import (
    CapacityError,
    ConflictError,
    InvalidRequestError,
    LlmServeError,
    NotFoundError,
    PreconditionError,
)


class KvStoreError(LlmServeError):
    """Base of the errors the KV store core raises."""


class InvalidSpecError(KvStoreError, InvalidRequestError):
    """A malformed argument (negative count, unknown dtype, inconsistent chunk): fix it. INVALID_ARGUMENT."""


class CheckpointMismatchError(InvalidSpecError):
    """A checkpoint's dtype or shape differs from what the restoring worker expects. INVALID_ARGUMENT."""


class UnknownWorkerError(KvStoreError, NotFoundError):
    """The worker has no live pool (never registered, or its leases expired): re-register. NOT_FOUND."""


class UnknownCheckpointError(KvStoreError, NotFoundError):
    """No complete checkpoint is held for the request (never stored, dropped, evicted or unfinished). NOT_FOUND."""


class GeometryConflictError(KvStoreError, ConflictError):
    """A live worker re-registered with another pool geometry. ALREADY_EXISTS."""


class PoolLiveError(KvStoreError, PreconditionError):
    """A worker declared held blocks while the store holds a live pool for it (declarations only
    rebuild a pool the store lost). FAILED_PRECONDITION."""


class SyncOrderError(KvStoreError, PreconditionError):
    """A sync's sequence number is neither the next one nor a retry of the last one: the worker and
    the store disagree about the pool; the worker must re-register. FAILED_PRECONDITION."""


class OutOfBlocksError(KvStoreError, CapacityError):
    """Fewer free blocks than asked for; nothing changed. RESOURCE_EXHAUSTED."""

    def __init__(self, message: str, *, requested: int, free: int) -> None:
        super().__init__(message)
        self.requested = requested
        self.free = free


class HostTierFullError(KvStoreError, CapacityError):
    """The host tier cannot hold the checkpoint even after evicting; recompute instead. RESOURCE_EXHAUSTED."""
