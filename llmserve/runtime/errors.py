"""The one explicit table that maps domain errors (`llmserve.errors`) to gRPC status codes.

Cores raise the errors (they import no grpc); servicers turn them into statuses with `abort_with`.
"""

from __future__ import annotations

import grpc


from llmserve.errors import (  # re-exported: servicers import everything from here
    CapacityError,
    ConflictError,
    InvalidRequestError,
    LlmServeError,
    NotFoundError,
    UnavailableError,
)

__all__ = [
    "CapacityError", "ConflictError", "InvalidRequestError", "LlmServeError", "NotFoundError",
    "UnavailableError", "STATUS_OF_ERROR", "status_code_for", "error_for_status", "abort_with",
]

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
