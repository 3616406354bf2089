"""The one path from an error to its gRPC status, and back.

Cores raise the domain errors of `llmserve.errors` (a service's own errors subclass them) and
servicers let them propagate: `ErrorStatusInterceptor`, which `start_server` installs on every
server, ends the RPC with `abort_with`, which looks the status up in `STATUS_OF_ERROR`. Anything
else that escapes a handler is a bug: INTERNAL with a generic message, its traceback logged once.
Clients turn a peer's status back into a domain error with `error_for_status`.
"""

from __future__ import annotations

import inspect
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from llmserve.errors import (  # re-exported: servicers import everything from here
    CapacityError,
    ConflictError,
    InvalidRequestError,
    LlmServeError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "CapacityError", "ConflictError", "InvalidRequestError", "LlmServeError", "NotFoundError",
    "PermissionDeniedError", "PreconditionError", "UnauthenticatedError", "UnavailableError", "STATUS_OF_ERROR",
    "status_code_for", "error_for_status", "error_for_rpc_error", "RETRY_AFTER_KEY", "retry_after_header",
    "abort_with", "ErrorStatusInterceptor",
]

logger = logging.getLogger(__name__)

STATUS_OF_ERROR: dict[type[LlmServeError], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    ConflictError: grpc.StatusCode.ALREADY_EXISTS,
    PreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    LlmServeError: grpc.StatusCode.INTERNAL,
}

# A peer's CANCELLED or DEADLINE_EXCEEDED, seen by a caller that cancelled nothing itself (grpc.aio
# raises CancelledError, not a status, for one's own cancel), means the peer stopped or did not
# answer: the caller can retry, as for UNAVAILABLE.
_PEER_GONE = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})
_ERROR_OF_STATUS: dict[grpc.StatusCode, type[LlmServeError]] = {code: cls for cls, code in STATUS_OF_ERROR.items()}


def status_code_for(error: LlmServeError) -> grpc.StatusCode:
    """The status code of a domain error: that of its class or nearest base in the table."""
    for cls in type(error).__mro__:
        code = STATUS_OF_ERROR.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    raise TypeError(f"{type(error).__name__} is not an LlmServeError")  # unreachable for an LlmServeError


# Trailing metadata of a RESOURCE_EXHAUSTED answer whose error knows when to retry: whole seconds,
# as HTTP's Retry-After (clients of either front read the same number).
RETRY_AFTER_KEY = "retry-after"


def retry_after_header(retry_after_s: float) -> str:
    """Whole seconds, rounded up, at least 1 (a 0 would invite an immediate retry storm)."""
    return str(max(1, math.ceil(retry_after_s)))


def error_for_status(code: grpc.StatusCode, message: str) -> LlmServeError:
    """The inverse mapping, for clients that re-raise a peer's status as a domain error. A code
    the table does not name (UNKNOWN, UNIMPLEMENTED, ...) becomes a plain LlmServeError (INTERNAL
    when relayed)."""
    if code in _PEER_GONE:
        return UnavailableError(message)
    return _ERROR_OF_STATUS.get(code, LlmServeError)(message)


def error_for_rpc_error(err: grpc.aio.AioRpcError, message: str | None = None) -> LlmServeError:
    """`error_for_status` of a peer's answer (its details, or `message`), keeping the retry-after
    seconds the peer sent in its trailing metadata on an error that carries them."""
    error = error_for_status(err.code(), message if message is not None else err.details() or err.code().name)
    retry_after = dict(err.trailing_metadata() or ()).get(RETRY_AFTER_KEY)
    if retry_after is not None and hasattr(error, "retry_after_s"):
        try:
            error.retry_after_s = float(retry_after)
        except ValueError:
            pass
    return error


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    """Ends the RPC with the status of `error` (it raises grpc's AbortError, never returns).

    A domain error sends its table code and its own message. Anything else is a bug: INTERNAL
    with a message that names only an incident id; the traceback goes to the log, with that id.
    """
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(error, LlmServeError):
        code, message = status_code_for(error), str(error) or type(error).__name__
        retry_after_s = getattr(error, "retry_after_s", None)
        if retry_after_s is not None:
            trailing = ((RETRY_AFTER_KEY, retry_after_header(retry_after_s)),)
    else:
        incident = uuid.uuid4().hex[:12]
        logger.error("internal error %s: %s", incident, type(error).__name__, exc_info=error)
        code, message = grpc.StatusCode.INTERNAL, f"internal error {incident}: the server logged the details"
    await context.abort(code, message, trailing_metadata=trailing)


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


def _ends_unary(behavior: Behavior) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:  # the handler ended the RPC itself
            raise
        except Exception as err:  # noqa: BLE001 - every error ends the RPC through the one table
            await abort_with(context, err)

    return guarded


def _ends_stream(behavior: Behavior) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            elif inspect.isawaitable(result):  # a handler that writes with context.write()
                await result
            elif result is not None:
                for response in result:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # noqa: BLE001
            await abort_with(context, err)

    return guarded


class ErrorStatusInterceptor(grpc.aio.ServerInterceptor):
    """Ends every RPC whose handler raised through `abort_with`, so a handler just raises its
    domain error and a bug never reaches the client as UNKNOWN with its exception text. Install it
    innermost (last), so that tracing interceptors see the status it sets."""

    def __init__(self) -> None:
        # method -> (its handler, the guarded one): built once per method, not once per call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        known = self._guarded.get(handler_call_details.method)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = _guard(handler)
        self._guarded[handler_call_details.method] = (handler, guarded)
        return guarded


def _guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` with its behavior wrapped so that whatever it raises ends the RPC via `abort_with`."""
    codec = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_ends_stream(handler.stream_stream), **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_ends_unary(handler.stream_unary), **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_ends_stream(handler.unary_stream), **codec)
    return grpc.unary_unary_rpc_method_handler(_ends_unary(handler.unary_unary), **codec)
