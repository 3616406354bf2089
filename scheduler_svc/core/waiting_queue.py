"""Requests waiting for admission, ordered by their scheduling key, plus the aging clock.

The queue holds the core's tickets (core/ticket.py), whose `sched_key`, `promoted_at`,
`last_progress_s` and `queue_gen` it reads. Peeking the best ticket and admitting it cost
O(log n); promotion of starved requests costs O(log n) per promoted request; nothing per step is
O(waiting) except `rekey` (for policies whose waiting keys change with time, called every
`waiting_key_ttl` steps).

Entries are removed lazily: each carries the ticket's `queue_gen` at push time, and every queue
change bumps it, so an entry whose generation differs is stale and skipped.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

from scheduler_svc.core.request import RequestStatus
from scheduler_svc.core.ticket import Ticket

_QUEUED = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


class WaitingQueue:
    __slots__ = ("_heap", "_starve", "_promoted", "_members", "_track_starvation")

    def __init__(self, track_starvation: bool = True) -> None:
        # Without aging nobody reads the starvation heap: do not grow it.
        self._track_starvation = track_starvation
        self._heap: list[tuple[tuple, int, Ticket]] = []  # (sched_key, gen, ticket)
        self._starve: list[tuple[float, int, int, Ticket]] = []  # (last_progress_s, seq, gen, ticket)
        self._promoted: deque[tuple[int, Ticket]] = deque()  # promotion order
        self._members: dict[str, Ticket] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._members

    def __iter__(self) -> Iterator[Ticket]:
        return iter(self._members.values())

    def push(self, t: Ticket) -> None:
        """Queues `t` with its current `sched_key` (band 0 when it is promoted)."""
        t.queue_gen += 1
        self._members[t.req.request_id] = t
        if t.promoted_at is not None:
            self._promoted.append((t.queue_gen, t))
        else:
            heapq.heappush(self._heap, (t.sched_key, t.queue_gen, t))
            if self._track_starvation:
                heapq.heappush(self._starve, (t.last_progress_s, t.seq, t.queue_gen, t))

    def remove(self, t: Ticket) -> None:
        """Takes `t` out (admitted, aborted, evicted); a no-op when it is not queued."""
        if self._members.pop(t.req.request_id, None) is not None:
            t.queue_gen += 1

    def peek(self, refresh: Callable[[Ticket], tuple | None] | None = None) -> Ticket | None:
        """The best queued ticket (promoted ones first), without removing it.

        `refresh(t)` (for keys that only get worse with time) returns the ticket's current key,
        or None when its stored key is current. The stored keys are then optimistic bounds, so a
        top whose fresh key is still no worse than its stored key is truly the best: a worse one
        is pushed down with its fresh key and the next top is examined (lazy re-keying, O(log n)
        per re-keyed request instead of O(n) per step)."""
        promoted = self._promoted
        while promoted and (promoted[0][0] != promoted[0][1].queue_gen
                            or promoted[0][1].req.status not in _QUEUED):
            promoted.popleft()
        if promoted:
            return promoted[0][1]
        heap = self._heap
        while heap:
            key, gen, t = heap[0]
            if gen == t.queue_gen and t.promoted_at is None and t.req.status in _QUEUED:
                fresh = refresh(t) if refresh is not None else None
                if fresh is None or not fresh > key:
                    return t
                heapq.heapreplace(heap, (fresh, gen, t))
                continue
            heapq.heappop(heap)
        return None

    def promote_starved(self, now: float, aging_s: float, make_key: Callable[[Ticket, float], tuple]) -> int:
        """Promotes every queued request last scheduled (or queued) `aging_s` or more ago."""
        starve = self._starve
        count = 0
        while starve and starve[0][0] <= now - aging_s:
            _, _, gen, t = heapq.heappop(starve)
            if gen != t.queue_gen or t.req.status not in _QUEUED or t.promoted_at is not None:
                continue
            t.promoted_at = now
            t.sched_key = make_key(t, now)
            self._promoted.append((gen, t))
            count += 1
        return count

    def rekey(self, make_key: Callable[[Ticket, float], tuple], now: float) -> None:
        """Recomputes every non-promoted key and rebuilds the heap (policies with time-varying keys)."""
        entries = []
        for t in self._members.values():
            if t.promoted_at is None:
                t.sched_key = make_key(t, now)
                entries.append((t.sched_key, t.queue_gen, t))
        heapq.heapify(entries)
        self._heap = entries
