"""A wake-up signal for capacity watchers: handlers call `notify()` after changing the store."""

from __future__ import annotations

import asyncio


class ChangeSignal:
    """A generation counter that waiters can block on. Single event loop only."""

    __slots__ = ("generation", "_event")

    def __init__(self) -> None:
        self.generation = 0
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Marks a change and wakes every waiter."""
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait_past(self, generation: int) -> None:
        """Returns once a change after `generation` was notified (at once if one already was)."""
        while self.generation == generation:
            await self._event.wait()
