"""Requests waiting for admission, ordered by their scheduling key, plus the aging clock.

Peeking the best request and admitting it cost O(log n); promotion of starved requests costs
O(log n) per promoted request; nothing per step is O(waiting) except `rekey` (for policies whose
waiting keys change with time, called every `waiting_key_ttl` steps).

Entries are removed lazily: each carries the request's `queue_gen` at push time, and every queue
change bumps it, so an entry whose generation differs is stale and skipped.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

from scheduler_svc.core.request import Request, RequestStatus

_QUEUED = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


class WaitingQueue:
    __slots__ = ("_heap", "_starve", "_promoted", "_members", "_track_starvation")

    def __init__(self, track_starvation: bool = True) -> None:
        # Without aging nobody reads the starvation heap: do not grow it.
        self._track_starvation = track_starvation
        self._heap: list[tuple[tuple, int, Request]] = []  # (sched_key, gen, request)
        self._starve: list[tuple[float, int, int, Request]] = []  # (last_progress_s, seq, gen, request)
        self._promoted: deque[tuple[int, Request]] = deque()  # promotion order
        self._members: dict[str, Request] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._members

    def __iter__(self) -> Iterator[Request]:
        return iter(self._members.values())

    def push(self, req: Request) -> None:
        """Queues `req` with its current `sched_key` (band 0 when it is promoted)."""
        req.queue_gen += 1
        self._members[req.request_id] = req
        if req.promoted_at is not None:
            self._promoted.append((req.queue_gen, req))
        else:
            heapq.heappush(self._heap, (req.sched_key, req.queue_gen, req))
            if self._track_starvation:
                heapq.heappush(self._starve, (req.last_progress_s, req.seq, req.queue_gen, req))

    def remove(self, req: Request) -> None:
        """Takes `req` out (admitted, aborted, evicted); a no-op when it is not queued."""
        if self._members.pop(req.request_id, None) is not None:
            req.queue_gen += 1

    def peek(self, refresh: Callable[[Request], tuple | None] | None = None) -> Request | None:
        """The best queued request (promoted ones first), without removing it.

        `refresh(req)` (for keys that only get worse with time) returns the request's current key,
        or None when its stored key is current. The stored keys are then optimistic bounds, so a
        top whose fresh key is still no worse than its stored key is truly the best: a worse one
        is pushed down with its fresh key and the next top is examined (lazy re-keying, O(log n)
        per re-keyed request instead of O(n) per step)."""
        promoted = self._promoted
        while promoted and (promoted[0][0] != promoted[0][1].queue_gen or promoted[0][1].status not in _QUEUED):
            promoted.popleft()
        if promoted:
            return promoted[0][1]
        heap = self._heap
        while heap:
            key, gen, req = heap[0]
            if gen == req.queue_gen and req.promoted_at is None and req.status in _QUEUED:
                fresh = refresh(req) if refresh is not None else None
                if fresh is None or not fresh > key:
                    return req
                heapq.heapreplace(heap, (fresh, gen, req))
                continue
            heapq.heappop(heap)
        return None

    def promote_starved(self, now: float, aging_s: float, make_key: Callable[[Request, float], tuple]) -> int:
        """Promotes every queued request last scheduled (or queued) `aging_s` or more ago."""
        starve = self._starve
        count = 0
        while starve and starve[0][0] <= now - aging_s:
            _, _, gen, req = heapq.heappop(starve)
            if gen != req.queue_gen or req.status not in _QUEUED or req.promoted_at is not None:
                continue
            req.promoted_at = now
            req.sched_key = make_key(req, now)
            self._promoted.append((gen, req))
            count += 1
        return count

    def rekey(self, make_key: Callable[[Request, float], tuple], now: float) -> None:
        """Recomputes every non-promoted key and rebuilds the heap (policies with time-varying keys)."""
        entries = []
        for req in self._members.values():
            if req.promoted_at is None:
                req.sched_key = make_key(req, now)
                entries.append((req.sched_key, req.queue_gen, req))
        heapq.heapify(entries)
        self._heap = entries
