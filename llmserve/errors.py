"""Domain errors a client can act on. Pure (no grpc): cores raise these, and
`llmserve.runtime.errors` maps them to gRPC status codes through one explicit table."""

from __future__ import annotations


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
