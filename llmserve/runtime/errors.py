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
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

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
    "status_code_for", "error_for_status", "RETRY_AFTER_KEY", "retry_after_header", "DecodeFailures",
    "UndecodableRequest",
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


@dataclass(frozen=True)
class UndecodableRequest:
    """What a request message that does not parse (garbage bytes, invalid UTF-8 in a string field)
    becomes instead of an exception inside grpc, which would answer UNKNOWN with the parser's text
    and log a traceback per call: the guarded handler answers INVALID_ARGUMENT instead."""

    reason: str


class DecodeFailures:
    """Logs undecodable requests as one warning line per `interval_s` at most (with how many were
    not logged), so a client sending garbage cannot flood the log."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last_s: float | None = None
        self._suppressed = 0

    def record(self, method: str, reason: str) -> None:
        now = self.clock()
        if self._last_s is not None and now - self._last_s < self.interval_s:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        logger.warning("undecodable request to %s answered INVALID_ARGUMENT: %s%s", method, reason, more)
        self._last_s, self._suppressed = now, 0


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as err:
            return UndecodableRequest(str(err) or "the message does not parse")

    return deserialize


def _decoded(request: Any, method: str, failures: DecodeFailures) -> Any:
    if isinstance(request, UndecodableRequest):
        failures.record(method, request.reason)
        raise InvalidRequestError(f"the request is not a valid message for {method}: {request.reason}")
    return request


async def _decoded_stream(requests: AsyncIterator[Any], method: str, failures: DecodeFailures) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request, method, failures)


def _ends_unary(behavior: Behavior, method: str, failures: DecodeFailures,
                streaming_request: bool) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = (_decoded_stream(request, method, failures) if streaming_request
                       else _decoded(request, method, failures))
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:  # the handler ended the RPC itself
            raise
        except Exception as err:  # noqa: BLE001 - every error ends the RPC through the one table
            await abort_with(context, err)

    return guarded


def _ends_stream(behavior: Behavior, method: str, failures: DecodeFailures,
                 streaming_request: bool) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            request = (_decoded_stream(request, method, failures) if streaming_request
                       else _decoded(request, method, failures))
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
        self.decode_failures = DecodeFailures()

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
        guarded = _guard(handler, handler_call_details.method, self.decode_failures)
        self._guarded[handler_call_details.method] = (handler, guarded)
        return guarded


def _guard(handler: grpc.RpcMethodHandler, method: str, failures: DecodeFailures) -> grpc.RpcMethodHandler:
    """`handler` with its behavior wrapped so that whatever it raises ends the RPC via `abort_with`,
    and its request parsing so that an undecodable message is INVALID_ARGUMENT."""
    codec = {"request_deserializer": _tolerant(handler.request_deserializer),
             "response_serializer": handler.response_serializer}
    streaming = handler.request_streaming
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_ends_stream(handler.stream_stream, method, failures, streaming),
                                                     **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_ends_unary(handler.stream_unary, method, failures, streaming),
                                                    **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_ends_stream(handler.unary_stream, method, failures, streaming),
                                                    **codec)
    return grpc.unary_unary_rpc_method_handler(_ends_unary(handler.unary_unary, method, failures, streaming), **codec)
