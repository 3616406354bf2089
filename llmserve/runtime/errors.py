"""Domain errors and the one explicit table that maps them to gRPC status codes.

Cores raise these (they import no grpc); servicers turn them into statuses with `abort_with`.
"""

from __future__ import annotations

import grpc


class LlmServeError(Exception):
    """Base of the errors a client can act on. The message says what to fix."""


class InvalidRequestError(LlmServeError):
    """The request is malformed: fix the named field."""


class CapacityError(LlmServeError):
    """The server is at a limit (queue, KV blocks, host tier): retry later or send less."""


class NotFoundError(LlmServeError):
    """The named request, lease or checkpoint does not exist."""


class UnavailableError(LlmServeError):
    """The service is starting, draining or lost a peer: retry."""


class ConflictError(LlmServeError):
    """The request conflicts with existing state (a duplicate id, an expired lease)."""


STATUS_OF_ERROR: dict[type[LlmServeError], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    ConflictError: grpc.StatusCode.ALREADY_EXISTS,
}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The status code of a domain error (its class or nearest base in the table); INTERNAL otherwise."""
    for cls in type(error).__mro__:
        code = STATUS_OF_ERROR.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def error_for_status(code: grpc.StatusCode, message: str) -> LlmServeError:
    """The inverse mapping, for clients that re-raise a peer's status as a domain error."""
    for cls, status in STATUS_OF_ERROR.items():
        if status == code:
            return cls(message)
    return LlmServeError(message)


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    """Ends an RPC with the status that the error maps to. Never returns."""
    await context.abort(status_code_for(error), str(error) or type(error).__name__)
