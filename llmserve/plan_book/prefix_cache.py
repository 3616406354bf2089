"""The worker's prefix cache (issue 13): which of the blocks it holds leased are full prompt
blocks named by their hash chain (llmserve.prefix), who references them, the host tier behind
them, and what it tells the scheduler. Pure; the plan book and the `LeaseKeeper` call it, and each
keeps its own accounting. The live worker and the simulated one run this same code.

    admit (plan book)   a new request with `num_cached_tokens` starts its block table with the
                        cached device blocks of its chain (`acquire`: referenced by the request),
                        then takes the next blocks of its chain that the host tier holds out of it
                        (a promotion: those are leased fresh and copied in at `grant`); what
                        neither holds of the claim is recomputed in the step
    grant (plan book)   the step's demotions are copied out (before any block is written), then
                        its promotions copied into their fresh blocks
    commit (plan book)  each full prompt block just computed (or promoted) is named (`insert`,
                        referenced by its request); a hash cached meanwhile stays private
    release (keeper)    a request gone drops its references; the blocks it leased that are cached
                        move to the cache's own lease (`CACHE_HOLDER`) instead of the reserve
    reclaim (keeper)    a step short of blocks beyond what the store has free evicts
                        unreferenced cached blocks (LRU) into the reserve: with a host tier each
                        evicted block is demoted (its KV copied to host memory at `grant`, before
                        the block is reused); a cached prefix never delays anyone

Where the blocks are: every block is free (the store's), in the keeper's reserve, leased by one
request, or leased by `CACHE_HOLDER` (cached, and no longer in the lease of the request that
computed it). A referenced block is never evicted (the index's rule), so never handed out again
while a request reads it. A hash is in at most one tier (device index or host tier). The scheduler
mirrors both from `take_report`: each hash's state (on the device, in the host tier, gone) as of
the report, for the hashes whose state changed since the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from llmserve.plan import NewRequest
from llmserve.plan_book.state import RequestState
from llmserve.prefix import PrefixIndex, chain_from_tokens
from llmserve.prefix.host_tier import HostPrefixTier

# The lease that holds cached blocks no request leases any more ('#' is in no request id: the
# gateway's ids are letters, digits and . _ : -).
CACHE_HOLDER = "#prefix-cache"

_DEVICE, _HOST, _GONE = 0, 1, 2


class KvMover(Protocol):
    """Copies blocks' KV between the device pool and host memory (the live worker's: torch)."""

    def copy_out(self, block_ids: Sequence[int]) -> list[Any]:
        """The KV of each block, as host payloads."""
        ...

    def copy_in(self, block_ids: Sequence[int], payloads: Sequence[Any]) -> None:
        """Writes the payloads into the blocks."""
        ...


class CountingMover:
    """A mover without KV (the simulator, the tests): counts the blocks copied each way."""

    def __init__(self) -> None:
        self.blocks_out = 0
        self.blocks_in = 0

    def copy_out(self, block_ids: Sequence[int]) -> list[Any]:
        self.blocks_out += len(block_ids)
        return [None] * len(block_ids)

    def copy_in(self, block_ids: Sequence[int], payloads: Sequence[Any]) -> None:
        self.blocks_in += len(block_ids)


class PrefixReport(NamedTuple):
    """Hashes whose state changed since the last report, by their state now (disjoint)."""

    cached: tuple[int, ...]  # on the device
    evicted: tuple[int, ...]  # in neither tier
    demoted: tuple[int, ...] = ()  # in the host tier


@dataclass(slots=True)
class PrefixCacheStats:
    """Counters since start (the worker exports them)."""

    hit_blocks: int = 0  # blocks served to admissions (device and host)
    host_hit_blocks: int = 0  # of those, promoted from the host tier
    missed_blocks: int = 0  # claimed by a plan but gone (evicted meanwhile): recomputed
    inserted_blocks: int = 0
    evicted_blocks: int = 0  # left the device pool (demoted or dropped)
    demoted_blocks: int = 0  # of those, copied to the host tier
    host_dropped_blocks: int = 0  # pushed out of the host tier (its LRU)


class WorkerPrefixCache:
    """One worker's index of cached blocks, its host tier and its report (module docstring).

    `host_tier` (None or capacity 0: none) needs a `mover`. `chain_of`: a new request's chain
    (default: its prompt's tokens under its salt; the simulator gives the traces' hash ids)."""

    def __init__(self, block_size: int, host_tier: HostPrefixTier | None = None, mover: KvMover | None = None,
                 chain_of: Callable[[NewRequest], tuple[int, ...]] | None = None) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if host_tier is not None and host_tier.capacity_blocks == 0:
            host_tier = None
        if host_tier is not None and mover is None:
            raise ValueError("a host tier needs a mover to copy the blocks")
        self.block_size = block_size
        self.index = PrefixIndex()
        self.host_tier = host_tier
        self.mover = mover
        self.stats = PrefixCacheStats()
        self._chain_of = chain_of
        # Called with (new request, chain, device blocks, host blocks) at each admission (the simulator's counters).
        self.on_admit: Callable[[NewRequest, tuple[int, ...], int, int], None] | None = None
        # A request's references are held by its admission (the request id; a re-admission whose
        # previous admission's release is still queued gets (id, serial)), so that releasing the
        # previous admission, in the same step, does not drop the new one's references.
        self._owner: dict[str, object] = {}  # request -> its current admission
        self._stale: dict[str, list[object]] = {}  # request -> earlier admissions, their release queued
        self._serial = 0
        self._chains: dict[str, tuple[int, ...]] = {}  # request -> its prompt's chain
        self._named: dict[str, int] = {}  # request -> leading blocks of its chain hit or named
        self._report: dict[int, int] = {}  # hash -> its state now, for the next result
        self._demotions: list[tuple[int, int]] = []  # (hash, block id) evicted, not copied out yet
        self._promotions: list[tuple[str, int, list[Any]]] = []  # (request, first block, payloads)

    # ---- the plan book -----------------------------------------------------------------------
    def chain(self, new: NewRequest) -> tuple[int, ...]:
        """The new request's prompt chain (() when it is not to be cached)."""
        if self._chain_of is not None:
            return self._chain_of(new)
        if not new.prefix_salt:
            return ()
        return chain_from_tokens(new.token_ids[:new.num_prompt_tokens], self.block_size, new.prefix_salt)

    def available(self, chain: tuple[int, ...], num_cached_tokens: int) -> tuple[int, int]:
        """Blocks of a claimed hit of `num_cached_tokens` held now: (on the device, then in the
        host tier along the same chain)."""
        limit = num_cached_tokens // self.block_size
        device = self.index.match(chain, limit)
        tier = self.host_tier
        host = tier.match(chain, device, limit - device) if tier is not None and device < limit else 0
        return device, host

    def begin_step(self) -> None:
        """A step opens (before any block of it is written): the copies of an earlier step that
        never got to `grant` (it failed) are made now or dropped."""
        self._flush_demotions()
        self._promotions.clear()

    def admit(self, request_id: str, chain: tuple[int, ...], num_device: int, num_host: int,
              claimed_blocks: int) -> tuple[list[int], int]:
        """References the first `num_device` blocks of `chain` for the request and takes the next
        `num_host` out of the host tier (copied into its fresh blocks at `after_grant`), both from
        `available` in the same step; returns the device blocks' ids (its block table's start)
        and the host blocks taken: fewer than `num_host` when another request of the same plan
        took them first (that one promotes them; this one computes them)."""
        owner: object = request_id
        previous = self._owner.get(request_id)
        if previous is not None:  # re-admitted before the previous admission's release
            self._stale.setdefault(request_id, []).append(previous)
            self._serial += 1
            owner = (request_id, self._serial)
        self._owner[request_id] = owner
        ids = self.index.acquire(owner, chain, num_device) if num_device else []
        if num_host:
            num_host = self.host_tier.match(chain, len(ids), num_host)  # type: ignore[union-attr]
        if num_host:
            hashes = chain[len(ids):len(ids) + num_host]
            payloads = self.host_tier.take(hashes)  # type: ignore[union-attr]
            for block_hash in hashes:
                self._report[block_hash] = _GONE  # on the device again once named (commit)
            self._promotions.append((request_id, len(ids), payloads))
            self.stats.host_hit_blocks += num_host
        if chain:
            self._chains[request_id] = chain
            self._named[request_id] = len(ids)
        self.stats.hit_blocks += len(ids) + num_host
        self.stats.missed_blocks += claimed_blocks - len(ids) - num_host
        return ids, num_host

    def after_grant(self, states: Mapping[str, RequestState]) -> int:
        """The step's block tables are complete, nothing written yet: copies the step's demotions
        out (their blocks may have just been granted), then its promotions in; returns the blocks
        copied both ways."""
        moved = self._flush_demotions()
        if self._promotions:
            mover = self.mover
            for request_id, first, payloads in self._promotions:
                table = states[request_id].block_table
                mover.copy_in(table[first:first + len(payloads)], payloads)  # type: ignore[union-attr]
                moved += len(payloads)
            self._promotions.clear()
        return moved

    def name_computed(self, state: RequestState) -> None:
        """Names the full prompt blocks of `state` computed (or promoted) so far (after a step's commit)."""
        rid = state.request_id
        chain = self._chains.get(rid)
        if not chain:
            return
        full = min(state.num_computed // self.block_size, len(chain))
        start = self._named[rid]
        if full <= start:
            return
        index, table, tier, report = self.index, state.block_table, self.host_tier, self._report
        for k in range(start, full):
            block_hash = chain[k]
            if index.insert(self._owner.get(rid, rid), block_hash, table[k]):
                self.stats.inserted_blocks += 1
                report[block_hash] = _DEVICE
                if tier is not None and tier.discard(block_hash):  # computed again (a stale claim, a restore)
                    self.stats.host_dropped_blocks += 1
        self._named[rid] = full

    # ---- the lease keeper --------------------------------------------------------------------
    def release(self, request_id: str) -> None:
        """The request is gone: its references go (its blocks stay cached, unreferenced). When it
        was admitted again meanwhile, only the earlier admissions' go."""
        stale = self._stale.pop(request_id, None)
        if stale is not None:
            self.index.release_owners(stale)
            return
        self.index.release(self._owner.pop(request_id, request_id))
        self._chains.pop(request_id, None)
        self._named.pop(request_id, None)

    def is_cached_block(self, block_id: int) -> bool:
        return self.index.is_cached_block(block_id)

    @property
    def num_reclaimable(self) -> int:
        return self.index.num_reclaimable

    def evict(self, num_blocks: int) -> list[int]:
        """Forgets up to `num_blocks` unreferenced blocks (LRU), demoting each to the host tier
        (copied out at the step's `after_grant`, before anything is written); returns their ids."""
        out = []
        tier, report = self.host_tier, self._report
        for block_hash, block_id in self.index.evict_entries(num_blocks):
            out.append(block_id)
            if tier is None:
                report[block_hash] = _GONE
                continue
            report[block_hash] = _HOST
            self._demotions.append((block_hash, block_id))
            for dropped in tier.put(block_hash, None):
                report[dropped] = _GONE
                self.stats.host_dropped_blocks += 1
        self.stats.evicted_blocks += len(out)
        return out

    def _flush_demotions(self) -> int:
        if not self._demotions:
            return 0
        tier = self.host_tier
        pending = [(h, b) for h, b in self._demotions if h in tier]  # type: ignore[operator]
        self._demotions.clear()
        if pending:
            payloads = self.mover.copy_out([b for _, b in pending])  # type: ignore[union-attr]
            for (block_hash, _), payload in zip(pending, payloads):
                tier.set_payload(block_hash, payload)  # type: ignore[union-attr]
            self.stats.demoted_blocks += len(pending)
        return len(pending)

    def clear(self) -> list[int]:
        """Drops every reference and evicts everything, the host tier included (the Execute
        stream closed: the next scheduler starts from an empty mirror); returns the ids evicted."""
        self.index.release_owners(self.index.owners())
        self._owner.clear()
        self._stale.clear()
        self._chains.clear()
        self._named.clear()
        tier, self.host_tier = self.host_tier, None  # evicted without demoting
        try:
            ids = self.evict(self.index.num_cached)
        finally:
            self.host_tier = tier
        if tier is not None:
            self.stats.host_dropped_blocks += len(tier.clear())
        self._demotions.clear()
        self._promotions.clear()
        self._report.clear()
        return ids

    # ---- the scheduler's mirror ----------------------------------------------------------------
    def take_report(self) -> PrefixReport:
        """The hashes whose state changed since the last call, by state, for the next step result."""
        report = self._report
        if not report:
            return PrefixReport((), ())
        cached = tuple(h for h, s in report.items() if s == _DEVICE)
        evicted = tuple(h for h, s in report.items() if s == _GONE)
        demoted = tuple(h for h, s in report.items() if s == _HOST)
        report.clear()
        return PrefixReport(cached, evicted, demoted)

    def check(self) -> None:
        """The index's counts, and: no hash in both tiers, the host tier within its capacity."""
        self.index.check()
        tier = self.host_tier
        if tier is not None:
            assert len(tier) <= tier.capacity_blocks, "the host tier is over its capacity"
            assert not any(self.index.match((h,)) for h in tier.hashes()), "a hash in both tiers"
