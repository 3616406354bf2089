"""Requests whose bytes do not decode (garbage, invalid UTF-8 in a string field, another message
type) end INVALID_ARGUMENT with a message saying so, on every service, and cost one rate-limited
warning line, not an error traceback per request.

Left alone, grpc.aio calls the generated deserializer before the handler, logs its DecodeError
with a traceback at error level and answers UNKNOWN with the exception's text. Here the
deserializer of every handler is wrapped so that a failure yields an `Undecodable` marker instead,
and the handler refuses the marker by raising `InvalidRequestError`, which the error interceptor
turns into the status (the one path from an error to its status). A request stream is checked
message by message as the handler reads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from llmserve.errors import InvalidRequestError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Undecodable:
    """What the wrapped deserializer returns for bytes it cannot decode."""

    type_name: str  # the message type the method takes
    reason: str  # the decoder's own words


class RateLimitedWarning:
    """At most one warning line per `interval_s`; the next line counts those held back."""

    def __init__(self, log: logging.Logger, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held_back = 0

    def warn(self, message: str, *args: object) -> bool:
        """Logs `message % args` unless a line went out less than `interval_s` ago; True if logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._held_back += 1
            return False
        if self._held_back:
            message += f" (and {self._held_back} more since the last such line)"
        self._log.warning(message, *args)
        self._last, self._held_back = now, 0
        return True


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    # Generated handlers pass `Message.FromString`, a classmethod bound to the message class.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "the request message")


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    type_name = _type_name(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the bytes are the caller's fault
            reason = str(err) or type(err).__name__
            # "Error parsing message with type 'X': String field had bad UTF-8": the type is said once.
            return Undecodable(type_name, reason.partition("': ")[2] or reason)

    return deserialize


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Refuses undecodable requests with INVALID_ARGUMENT. Install it inside (after)
    `errors.ErrorStatusInterceptor`, which maps the `InvalidRequestError` it raises and awaits
    whatever the handler returns: `start_server` does both."""

    def __init__(self, warning: RateLimitedWarning | None = None) -> None:
        self._warning = warning or RateLimitedWarning(logger)
        # method -> (its handler, the checked one): built once per method, not once per call.
        self._checked: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        known = self._checked.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        checked = self._check(handler, method)
        self._checked[method] = (handler, checked)
        return checked

    def _refuse(self, request: Undecodable, method: str, context: grpc.aio.ServicerContext) -> InvalidRequestError:
        self._warning.warn("undecodable request to %s from %s: %s", method, context.peer(), request.reason)
        return InvalidRequestError(
            f"the request to {method} does not decode as {request.type_name} ({request.reason}): send a serialized "
            f"{request.type_name}, with valid UTF-8 in every string field"
        )

    def _check(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        def check_one(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    raise self._refuse(request, method, context)
                return behavior(request, context)

            return checked

        def check_each(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                async def decoded() -> AsyncIterator[Any]:
                    async for request in requests:
                        if isinstance(request, Undecodable):
                            raise self._refuse(request, method, context)
                        yield request

                return behavior(decoded(), context)

            return checked

        codec = {"request_deserializer": _tolerant(handler.request_deserializer),
                 "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(check_each(handler.stream_stream), **codec)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(check_each(handler.stream_unary), **codec)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(check_one(handler.unary_stream), **codec)
        return grpc.unary_unary_rpc_method_handler(check_one(handler.unary_unary), **codec)
