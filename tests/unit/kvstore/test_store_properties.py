"""Stateful property test of the KV store core against a plain model.

Any sequence of register, apply (lease/release), heartbeat, clock advance + expiry, checkpoint,
restore and drop keeps: no block leased twice, no block leaked, real-time grants are exactly the
lowest free ids and best-effort/deadline grants exactly the highest, a refused apply changes
nothing, expiry drops exactly the silent workers' leases, and the host tier's bytes add up,
only complete checkpoints are evicted, and restores are byte-exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kvstore_svc.core import (
    GeometryConflictError,
    HostTierFullError,
    InvalidSpecError,
    KvChunk,
    KvStore,
    LeaseSpec,
    OutOfBlocksError,
    PoolEnd,
    ServiceClass,
    pool_end,
    UnknownCheckpointError,
    UnknownWorkerError,
)

TTL = 10.0
WORKERS = ("w0", "w1")
REQUESTS = ("r0", "r1", "r2", "r3", "r4")
CLASSES = [c for c in ServiceClass if c is not ServiceClass.UNSPECIFIED]
SHAPE = (1, 2, 2, 1, 2)  # float16: 16 bytes a block
BLOCK = 16
TIER_BLOCKS = 8


@dataclass
class ModelWorker:
    num_blocks: int
    last_seen: float
    live: bool = True
    leases: dict[str, tuple[ServiceClass, list[int]]] = field(default_factory=dict)

    def free_ids(self) -> list[int]:
        used = {b for _, blocks in self.leases.values() for b in blocks}
        return [b for b in range(self.num_blocks) if b not in used]


@dataclass
class ModelCheckpoint:
    blocks: dict[int, bytes] = field(default_factory=dict)
    complete: bool = False
    num_tokens: int = 0


specs_strategy = st.lists(
    st.tuples(st.sampled_from(REQUESTS), st.sampled_from(CLASSES), st.integers(0, 3)), max_size=3
) | st.lists(  # mostly distinct requests; repeats (refused) now and then
    st.tuples(st.sampled_from(REQUESTS), st.sampled_from(CLASSES), st.integers(0, 3)),
    max_size=3,
    unique_by=lambda spec: spec[0],
)


class KvStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = KvStore(TTL, TIER_BLOCKS * BLOCK, clock=lambda: self.now)
        self.workers: dict[str, ModelWorker] = {}
        self.checkpoints: dict[str, ModelCheckpoint] = {}
        self.writes = 0

    # --- pools and leases ---------------------------------------------------------------------

    @initialize(sizes=st.tuples(st.integers(1, 8), st.integers(1, 8)))
    def register_all(self, sizes: tuple[int, int]) -> None:
        for worker, num_blocks in zip(WORKERS, sizes, strict=True):
            self.register(worker, num_blocks)

    @rule(worker=st.sampled_from(WORKERS), num_blocks=st.integers(1, 8))
    def register(self, worker: str, num_blocks: int) -> None:
        old = self.workers.get(worker)
        if old is not None and old.live and old.num_blocks != num_blocks:
            try:
                self.store.register_pool(worker, num_blocks, 16, 1024)
                raise AssertionError("a live worker changed geometry")
            except GeometryConflictError:
                return
        self.store.register_pool(worker, num_blocks, 16, 1024)
        self.workers[worker] = ModelWorker(num_blocks, self.now)

    @rule(
        worker=st.sampled_from(WORKERS),
        releases=st.lists(st.sampled_from((*REQUESTS, "ghost")), max_size=2),
        raw_specs=specs_strategy,
    )
    def apply(self, worker: str, releases: list[str], raw_specs: list[tuple[str, ServiceClass, int]]) -> None:
        self._apply(worker, releases, [LeaseSpec(r, c, n) for r, c, n in raw_specs])

    @rule(
        worker=st.sampled_from(WORKERS),
        release=st.sampled_from(REQUESTS),
        request=st.sampled_from(REQUESTS),
        service_class=st.sampled_from(CLASSES),
    )
    def release_then_take_all_free(self, worker: str, release: str, request: str, service_class: ServiceClass) -> None:
        """Fills the pool to the brim when releases left holes, so an end reaches past the other's blocks."""
        model = self.workers.get(worker)
        if model is None or not model.live or not model.leases:
            return
        free_after = len(model.free_ids()) + len(model.leases.get(release, (None, []))[1])
        self._apply(worker, [release], [LeaseSpec(request, service_class, free_after)])

    def _apply(self, worker: str, releases: list[str], specs: list[LeaseSpec]) -> None:
        model = self.workers.get(worker)
        before = self._snapshot()
        expected_error = self._expected_apply_error(model, releases, specs)
        try:
            result = self.store.apply(worker, releases, specs)
        except (UnknownWorkerError, InvalidSpecError, OutOfBlocksError) as err:
            assert type(err) is expected_error, f"got {type(err).__name__}, expected {expected_error}"
            assert self._snapshot() == before, "a refused apply changed state"
            return
        assert expected_error is None, f"expected {expected_error.__name__}"
        assert model is not None
        # Model: releases first, then each spec from its end of the sorted free ids.
        num_released = 0
        for request in dict.fromkeys(releases):
            if request in model.leases:
                num_released += len(model.leases.pop(request)[1])
        assert result.num_released == num_released
        for spec, grant in zip(specs, result.grants, strict=True):
            free = model.free_ids()
            want = free[: spec.num_blocks] if pool_end(spec.service_class) is PoolEnd.LOW else free[::-1][: spec.num_blocks]
            assert list(grant.block_ids) == want, f"{spec} got {grant.block_ids}, want {want}"
            if want:
                model.leases.setdefault(spec.request_id, (spec.service_class, []))[1].extend(want)
        model.last_seen = self.now

    def _snapshot(self) -> dict[str, object]:
        snap: dict[str, object] = {}
        for worker in self.store.leases.worker_ids():
            record = self.store.leases.worker(worker)
            leases = {r: (lease.service_class, tuple(lease.block_ids)) for r, lease in record.leases.items()}
            ends = tuple(record.pool.end_of(b) for b in range(record.pool.num_blocks))
            snap[worker] = (record.live, record.last_seen, leases, ends)
        return snap

    def _expected_apply_error(self, model: ModelWorker | None, releases: list[str], specs: list[LeaseSpec]) -> type | None:
        if model is None or not model.live:
            return UnknownWorkerError
        released = {r for r in releases if r in model.leases}
        names = [s.request_id for s in specs]
        if len(set(names)) != len(names):
            return InvalidSpecError
        for spec in specs:
            held = model.leases.get(spec.request_id)
            if held is not None and spec.request_id not in released and held[0] is not spec.service_class:
                return InvalidSpecError
        free_after = len(model.free_ids()) + sum(len(model.leases[r][1]) for r in released)
        if sum(s.num_blocks for s in specs) > free_after:
            return OutOfBlocksError
        return None

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        result = self.store.heartbeat(worker)
        model = self.workers.get(worker)
        known = model is not None and model.live
        assert result.known == known
        if known:
            assert model is not None
            assert result.num_leases == len(model.leases)
            model.last_seen = self.now

    @rule(dt=st.sampled_from((0.5, 2.5, TTL / 2, TTL)))
    def advance_and_expire(self, dt: float) -> None:
        self.now += dt
        expired_before = self.store.leases.num_expired_leases
        expired = self.store.expire()
        want = [w for w, m in self.workers.items() if m.live and self.now - m.last_seen >= TTL]
        assert sorted(expired) == sorted(want)
        dropped = 0
        for worker in want:
            dropped += len(self.workers[worker].leases)
            self.workers[worker].leases.clear()
            self.workers[worker].live = False
        assert self.store.leases.num_expired_leases - expired_before == dropped

    # --- host tier ----------------------------------------------------------------------------

    @rule(
        request=st.sampled_from(REQUESTS),
        indices=st.lists(st.integers(0, 4), min_size=1, max_size=3),
        final=st.booleans(),
        split=st.booleans(),
    )
    def checkpoint(self, request: str, indices: list[int], final: bool, split: bool) -> None:
        self.writes += 1
        chunks = []
        for position, index in enumerate(indices):
            data = bytes((self.writes * 31 + index * 7 + i) & 0xFF for i in range(BLOCK))
            is_final = final and position == len(indices) - 1
            pieces = [(0, data[:5]), (5, data[5:])] if split else [(0, data)]
            for piece_no, (offset, piece) in enumerate(pieces):
                last_piece = piece_no == len(pieces) - 1
                chunks.append(
                    KvChunk(request, index, piece, offset, BLOCK, "float16", SHAPE,
                            num_tokens=3 * (index + 1) if is_final and last_piece else 0,
                            final=is_final and last_piece)
                )
        held_before = {r for r in REQUESTS if self.store.host_tier.num_blocks(r)}
        evictions_before = self.store.host_tier.num_evictions
        # Model of a successful call.
        model = self.checkpoints.get(request, ModelCheckpoint())
        expected_invalid = False
        new = ModelCheckpoint(dict(model.blocks), model.complete, model.num_tokens)
        for c in chunks:
            if c.offset == 0:
                new.complete = False
                new.blocks[c.block_index] = b""
            new.blocks[c.block_index] += c.data
            if c.final:
                if sorted(new.blocks) != list(range(len(new.blocks))):
                    expected_invalid = True
                    break
                new.complete, new.num_tokens = True, c.num_tokens
        writer = self.store.open_checkpoint()
        try:
            for c in chunks:
                writer.write(c)
            writer.finish()
        except HostTierFullError:
            writer.abort()
            self.checkpoints.pop(request, None)
        except InvalidSpecError:
            assert expected_invalid
            writer.abort()
            self.checkpoints.pop(request, None)
        else:
            assert not expected_invalid
            self.checkpoints[request] = new
        # Whatever vanished besides this request was evicted, and must have been complete.
        vanished = {r for r in held_before if r != request and not self.store.host_tier.num_blocks(r)}
        for victim in vanished:
            assert self.checkpoints.pop(victim).complete, f"incomplete checkpoint {victim} evicted"
        assert self.store.host_tier.num_evictions - evictions_before == len(vanished)

    @rule(request=st.sampled_from(REQUESTS))
    def restore(self, request: str) -> None:
        model = self.checkpoints.get(request)
        try:
            data = self.store.restore(request, "float16", SHAPE)
        except UnknownCheckpointError:
            assert model is None or not model.complete
            return
        assert model is not None and model.complete
        assert data.blocks == tuple(model.blocks[i] for i in range(len(model.blocks)))
        assert data.num_tokens == model.num_tokens

    @rule(request=st.sampled_from(REQUESTS))
    def drop(self, request: str) -> None:
        assert self.store.drop_checkpoint(request) == (self.checkpoints.pop(request, None) is not None)

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def blocks_are_leased_once_and_never_leaked(self) -> None:
        for worker, model in self.workers.items():
            record = self.store.leases.worker(worker)
            assert record.live == model.live
            leased = [b for lease in record.leases.values() for b in lease.block_ids]
            assert len(leased) == len(set(leased)), "a block is leased twice"
            assert record.pool.num_free == record.pool.num_blocks - len(leased), "a block leaked"
            for lease in record.leases.values():
                assert all(record.pool.end_of(b) is pool_end(lease.service_class) for b in lease.block_ids)
            got = {r: (lease.service_class, list(lease.block_ids)) for r, lease in record.leases.items()}
            assert got == model.leases
            stats = self.store.pool_stats(worker)
            real_time = sum(len(b) for c, b in model.leases.values() if c is ServiceClass.REAL_TIME)
            assert (stats.num_real_time, stats.num_best_effort) == (real_time, len(leased) - real_time)

    @invariant()
    def host_tier_bytes_add_up(self) -> None:
        tier = self.store.host_tier
        held = sum(len(m.blocks) for m in self.checkpoints.values())
        assert tier.bytes_used == held * BLOCK <= tier.capacity_bytes
        assert tier.num_checkpoints == len(self.checkpoints)


KvStoreMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestKvStoreMachine = KvStoreMachine.TestCase
