"""The store's record of a worker's pool, as the worker's `LeaseKeeper` knows it.

The store's record lags the worker's by at most one sync; this copy of it is exact whenever no
sync is in flight. A sync carries the difference: a request whose table no longer extends what the
store records is released and re-assigned whole, otherwise only its new blocks are assigned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llmserve.plan import Holding, LeaseSync, PoolDeclaration, SyncReply, TraceContext
from llmserve.types import ServiceClass

# What the store records of one request once a sync is applied (None: nothing).
LeaseRecord = tuple[ServiceClass, tuple[int, ...]]


@dataclass(slots=True)
class Held:
    """The blocks one request holds on the worker."""

    service_class: ServiceClass
    blocks: list[int]
    trace_context: TraceContext = ()


@dataclass(frozen=True, slots=True)
class Changes:
    """What a sync tells the store of the requests that changed, and the record it leaves."""

    releases: tuple[str, ...]
    assignments: tuple[Holding, ...]
    snapshot: dict[str, LeaseRecord | None]  # request -> its record once applied


@dataclass(slots=True)
class StoreRecord:
    """request -> (class, blocks) leased at the store, and the store's record of the reserve."""

    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    reserve: set[int] = field(default_factory=set)

    def changes(self, request_ids: Iterable[str], held: dict[str, Held]) -> Changes:
        """The difference between `held` and this record, for the requests named."""
        releases: list[str] = []
        assignments: list[Holding] = []
        snapshot: dict[str, LeaseRecord | None] = {}
        for rid in request_ids:
            now = held.get(rid)
            known = self.leases.get(rid)
            start = 0
            if known is not None:
                if now is None or now.service_class is not known[0] or tuple(now.blocks[:len(known[1])]) != known[1]:
                    releases.append(rid)
                else:
                    start = len(known[1])
            if now is not None and len(now.blocks) > start:
                assignments.append(Holding(rid, now.service_class, tuple(now.blocks[start:]), now.trace_context))
            snapshot[rid] = (now.service_class, tuple(now.blocks)) if now is not None else None
        return Changes(tuple(releases), tuple(assignments), snapshot)

    def applied(self, sync: LeaseSync, reply: SyncReply, snapshot: dict[str, LeaseRecord | None]) -> None:
        """The store applied `sync`: its record is now the snapshot sent, plus the new reserve."""
        view, reserve = self.leases, self.reserve
        for rid in sync.release_request_ids:
            reserve.update(view.pop(rid)[1])
        for holding in sync.assignments:
            reserve.difference_update(holding.block_ids)
        reserve.difference_update(sync.unreserve_block_ids)
        reserve.update(reply.reserved_low)
        reserve.update(reply.reserved_high)
        for rid, record in snapshot.items():
            if record is None:
                view.pop(rid, None)
            else:
                view[rid] = record

    @classmethod
    def of_declaration(cls, declaration: PoolDeclaration) -> StoreRecord:
        """A new store's record after it took the worker's declaration."""
        return cls({h.request_id: (h.service_class, h.block_ids) for h in declaration.held},
                   {*declaration.reserved_low, *declaration.reserved_high})
