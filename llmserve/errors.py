"""Domain errors a client can act on. Pure (no grpc): cores raise these, and
`llmserve.runtime.errors` maps them to gRPC status codes through one explicit table.

A service's own errors subclass the one of these whose status they get (the KV store's
`OutOfBlocksError` is a `CapacityError`), so the table needs no second mapping.
"""

from __future__ import annotations


class LlmServeError(Exception):
    """Base of the errors a client can act on. The message says what to fix.

    Raised as such (no subclass), it reports a failure with no more specific status (INTERNAL),
    whose message is still safe to show: a request that failed on a worker, a peer's error."""


class InvalidRequestError(LlmServeError):
    """The request is malformed: fix the named field."""


class CapacityError(LlmServeError):
    """The server is at a limit (queue, KV blocks, host tier, a tenant's quota): retry later or send
    less. `retry_after_s`, when known, says when a retry can succeed (sent to clients as retry info)."""

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFoundError(LlmServeError):
    """The named request, worker pool or checkpoint does not exist."""


class UnavailableError(LlmServeError):
    """The service is starting, draining or lost a peer: retry."""


class UnauthenticatedError(LlmServeError):
    """The call carries no valid credentials (a missing or unknown API key)."""


class PermissionDeniedError(LlmServeError):
    """The caller is known but may not do this (act for another tenant)."""


class ConflictError(LlmServeError):
    """The request conflicts with existing state (a duplicate id, another pool geometry)."""


class PreconditionError(LlmServeError):
    """The service is not in the state the call needs (a worker already serves another Execute
    stream): retrying the same call fails until that state changes."""
