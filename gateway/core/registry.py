"""Running requests by (scope, id): admission (the concurrency limit, duplicate ids) and lookup
for Cancel. The scope is the caller's tenant with API keys on (`Caller.scope`), so one tenant can
neither collide with nor cancel another's request ids; without keys every caller shares one scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from llmserve.errors import CapacityError, ConflictError

H = TypeVar("H")

# The registry's key: (scope, request id).
Key = tuple[str, str]


@dataclass(slots=True)
class RequestRegistry(Generic[H]):
    """Maps each running request to the shell's handle for it (whatever lets it be cancelled)."""

    max_running: int
    running: dict[Key, H] = field(default_factory=dict)

    def admit(self, key: Key, handle: H) -> None:
        """Registers a request, or raises ConflictError (id already running in that scope) /
        CapacityError (full)."""
        if key in self.running:
            raise ConflictError(f"request_id {key[1]!r} is already running: use a unique id or leave it empty")
        self.ensure_room()
        self.running[key] = handle

    def ensure_room(self) -> None:
        """Raises CapacityError when full: a cheap check before the work of preparing a request."""
        if len(self.running) >= self.max_running:
            raise CapacityError(
                f"the gateway is at its limit of {self.max_running} concurrent requests: retry later",
                retry_after_s=1.0,
            )

    def release(self, key: Key) -> None:
        """Forgets a finished request (no-op when unknown)."""
        self.running.pop(key, None)

    def get(self, key: Key) -> H | None:
        return self.running.get(key)

    def __len__(self) -> int:
        return len(self.running)
