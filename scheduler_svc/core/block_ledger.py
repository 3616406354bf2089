"""The scheduler's local mirror of one worker's KV pool: how many blocks each request holds.

It counts, it never names block ids (the KV store owns those). It is exact because the scheduler
is the only planner for its worker and the worker applies plans in order, releasing before
leasing: the core frees a request's blocks in the ledger when it lists the request as finished or
preempted in a plan, and allocates when it schedules tokens that need new blocks:

    tokens:   |<-- num_computed -->|<- num_tokens ->|
    blocks:   |  b0  |  b1  |  b2  |  b3  |              block_size = 4, held = 3
    need = ceil((num_computed + num_tokens) / block_size) - held

BROS two-ended pool, as counts: real-time requests grow from the low end, best-effort and
deadline requests from the high end; any free block can serve either end, so one free count is
enough to decide, and the per-end counts are reported (and checked) for metrics.
"""

from __future__ import annotations

from scheduler_svc.core.request import ServiceClass


class BlockLedger:
    """Blocks held per request and per class, out of `num_blocks`."""

    __slots__ = ("_num_blocks", "_held", "_class_of", "_used_by_class", "_num_used")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1 (got {num_blocks})")
        self._num_blocks = num_blocks
        self._held: dict[str, int] = {}
        self._class_of: dict[str, ServiceClass] = {}
        self._used_by_class: dict[ServiceClass, int] = {c: 0 for c in ServiceClass}
        self._num_used = 0

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def num_free(self) -> int:
        return self._num_blocks - self._num_used

    @property
    def num_used(self) -> int:
        return self._num_used

    def held(self, request_id: str) -> int:
        """Blocks the request holds (0 when it holds none)."""
        return self._held.get(request_id, 0)

    def used_by_class(self) -> dict[ServiceClass, int]:
        return dict(self._used_by_class)

    def used_low_end(self) -> int:
        """Blocks taken from the low end (real-time)."""
        return self._used_by_class[ServiceClass.REAL_TIME]

    def used_high_end(self) -> int:
        """Blocks taken from the high end (deadline and best-effort)."""
        return self._num_used - self._used_by_class[ServiceClass.REAL_TIME]

    def can_allocate(self, num_blocks: int, reserve: int = 0) -> bool:
        """Whether `num_blocks` more fit while leaving `reserve` blocks free."""
        return num_blocks + reserve <= self._num_blocks - self._num_used

    def allocate(self, request_id: str, service_class: ServiceClass, num_blocks: int) -> None:
        """Adds `num_blocks` to the request's count. Raises ValueError when they do not fit (the
        caller checks `can_allocate` first; a failure here is a scheduler bug)."""
        if num_blocks < 0:
            raise ValueError(f"cannot allocate {num_blocks} blocks")
        if num_blocks > self.num_free:
            raise ValueError(f"{request_id}: {num_blocks} blocks asked, {self.num_free} free")
        if num_blocks == 0:
            return
        known = self._class_of.setdefault(request_id, service_class)
        if known is not service_class:
            raise ValueError(f"{request_id}: holds {known.name} blocks, asked for {service_class.name}")
        self._held[request_id] = self._held.get(request_id, 0) + num_blocks
        self._used_by_class[service_class] += num_blocks
        self._num_used += num_blocks

    def free(self, request_id: str) -> int:
        """Frees every block of the request; returns how many (0 when it held none)."""
        count = self._held.pop(request_id, 0)
        if count:
            self._used_by_class[self._class_of.pop(request_id)] -= count
            self._num_used -= count
        else:
            self._class_of.pop(request_id, None)
        return count

    def check(self) -> None:
        """Asserts the ledger's internal invariants (tests)."""
        assert self._num_used == sum(self._held.values()), "used count != sum of held blocks"
        assert 0 <= self._num_used <= self._num_blocks, "more blocks used than exist"
        for cls in ServiceClass:
            total = sum(n for rid, n in self._held.items() if self._class_of[rid] is cls)
            assert total == self._used_by_class[cls], f"{cls.name} count drifted"
        assert all(n > 0 for n in self._held.values()), "an empty holding was kept"
