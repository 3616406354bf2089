"""Running requests by id: admission (the concurrency limit, duplicate ids) and lookup for Cancel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from llmserve.errors import CapacityError, ConflictError

H = TypeVar("H")


@dataclass(slots=True)
class RequestRegistry(Generic[H]):
    """Maps each running request id to the shell's handle for it (whatever lets it be cancelled)."""

    max_running: int
    running: dict[str, H] = field(default_factory=dict)

    def admit(self, request_id: str, handle: H) -> None:
        """Registers a request, or raises ConflictError (id already running) / CapacityError (full)."""
        if request_id in self.running:
            raise ConflictError(f"request_id {request_id!r} is already running: use a unique id or leave it empty")
        self.ensure_room()
        self.running[request_id] = handle

    def ensure_room(self) -> None:
        """Raises CapacityError when full: a cheap check before the work of preparing a request."""
        if len(self.running) >= self.max_running:
            raise CapacityError(
                f"the gateway is at its limit of {self.max_running} concurrent requests: retry later"
            )

    def release(self, request_id: str) -> None:
        """Forgets a finished request (no-op when unknown)."""
        self.running.pop(request_id, None)

    def get(self, request_id: str) -> H | None:
        return self.running.get(request_id)

    def __len__(self) -> int:
        return len(self.running)
