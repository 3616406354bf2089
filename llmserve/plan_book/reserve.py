"""The blocks a worker holds ahead of need, in two parts (llmserve/plan_book/leases.py).

The low part is taken from the real-time end of the pool, the high part from the best-effort
end; both are kept ascending, so the high end of the pool is the high part's tail. Real-time
leases take the lowest ids (the low part first, then the high part), deadline and best-effort
leases the highest (the high part first, then the low part): any class takes any reserve block.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmserve.plan import LeaseSpec
from llmserve.types import ServiceClass, cdiv

# A block leaving the reserve: (taken from the low part, block id); it goes back there if refused.
Unreserved = tuple[bool, int]


def auto_reserve_blocks(max_num_batched_tokens: int, block_size: int, num_blocks: int) -> int:
    """The default blocks held ahead per part: one step of new tokens' worth (a prefill-heavy
    step then rarely waits for the store), at most a quarter of the pool, at least 1."""
    return max(1, min(cdiv(max_num_batched_tokens, block_size), num_blocks // 4))


@dataclass(slots=True)
class Reserve:
    """The two parts; `target` (`reserve_blocks`) is what each part aims at."""

    target: int
    low: list[int] = field(default_factory=list)  # ascending
    high: list[int] = field(default_factory=list)  # ascending; the high end is its tail

    @property
    def size(self) -> int:
        return len(self.low) + len(self.high)

    def put_back(self, service_class: ServiceClass, blocks: Iterable[int]) -> None:
        """A released request's blocks join the part of its class."""
        part = self.low if service_class is ServiceClass.REAL_TIME else self.high
        for block in blocks:
            bisect.insort(part, block)

    def shortfall(self, leases: Sequence[LeaseSpec]) -> tuple[int, int]:
        """Blocks the reserve lacks for `leases`: (from the low end, from the high end)."""
        low, high = len(self.low), len(self.high)
        short_low = short_high = 0
        for lease in leases:
            need = lease.num_blocks
            if lease.service_class is ServiceClass.REAL_TIME:
                own = min(need, low)
                other = min(need - own, high)
                low, high = low - own, high - other
                short_low += need - own - other
            else:
                own = min(need, high)
                other = min(need - own, low)
                high, low = high - own, low - other
                short_high += need - own - other
        return short_low, short_high

    def take(self, service_class: ServiceClass, need: int) -> list[int]:
        """`need` blocks for one lease (the caller checked `shortfall`)."""
        low, high = self.low, self.high
        if service_class is ServiceClass.REAL_TIME:  # lowest ids first
            own = min(need, len(low))
            blocks = low[:own] + high[:need - own]
            del low[:own], high[:need - own]
            return blocks
        own = min(need, len(high))  # highest ids first
        other = need - own
        blocks = high[len(high) - own:][::-1] + (low[len(low) - other:][::-1] if other else [])
        del high[len(high) - own:]
        if other:
            del low[len(low) - other:]
        return blocks

    def give_all_back(self) -> list[Unreserved]:
        """Empties both parts (an idle worker holds no block)."""
        unreserved = [(True, b) for b in self.low] + [(False, b) for b in self.high]
        self.low, self.high = [], []
        return unreserved

    def trim(self) -> list[Unreserved]:
        """A part above twice the target goes back to the target, from its inner edge."""
        unreserved: list[Unreserved] = []
        target = self.target
        if len(self.low) > 2 * target:
            unreserved += [(True, b) for b in self.low[target:]]
            del self.low[target:]
        if len(self.high) > 2 * target:
            cut = len(self.high) - target
            unreserved += [(False, b) for b in self.high[:cut]]
            del self.high[:cut]
        return unreserved

    def refill(self) -> tuple[int, int]:
        """Blocks to ask for each part below half the target (back to the target)."""
        target = self.target
        top_low = target - len(self.low) if 2 * len(self.low) < target else 0
        top_high = target - len(self.high) if 2 * len(self.high) < target else 0
        return top_low, top_high

    def out_of_shape(self, can_grow: bool) -> bool:
        """A part above twice the target, or (when the store has free blocks) below half of it."""
        target, low, high = self.target, len(self.low), len(self.high)
        if low > 2 * target or high > 2 * target:
            return True
        return (2 * low < target or 2 * high < target) and can_grow

    def add(self, low: Sequence[int], high: Sequence[int]) -> None:
        """New blocks from the store join their parts."""
        if low:
            self.low = sorted([*self.low, *low])
        if high:
            self.high = sorted([*self.high, *high])

    def restore(self, unreserved: Iterable[Unreserved]) -> None:
        """Blocks a refused sync gave back return to their parts."""
        for from_low, block in unreserved:
            bisect.insort(self.low if from_low else self.high, block)
