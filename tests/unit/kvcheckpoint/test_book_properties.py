"""Property tests of the scheduler's checkpoint bookkeeping: random workloads with real-time
arrivals taking best-effort blocks, preemption by checkpoint and by recompute, a host tier that
refuses or evicts checkpoints, failed steps, aborts, 1 or 2 plans in flight, and (second test) a
worker that dies so its requests move to another core sharing the book and the tier.

Invariants: no request is lost or finished twice, each ends with exactly the tokens of an
uninterrupted run, the worker never sees an inconsistent plan (restores included: a restore
always gets the checkpoint of the right tokens, or the worker falls back to recompute), the
ledger mirrors the worker's blocks, and at the end nothing is left: no blocks, no book entries,
no checkpoints in the tier.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_svc.core import FinishReason, ManualClock, PreemptionMode, Request, Scheduler, ServiceClass
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.policy.fcfs import FcfsPolicy
from scheduler_svc.core.policy.bros import BrosPolicy
from tests.factories import EOS, Driver, default_token, make_config, make_request
from tests.unit.kvcheckpoint.fake_tier import CheckpointingWorker, FakeHostTier


class MixedPolicy(FcfsPolicy):
    """FCFS whose victims are checkpointed or recomputed by a fixed coin per request."""

    name = "mixed"

    def preemption_mode(self, victim: Request) -> PreemptionMode:
        return PreemptionMode.CHECKPOINT if sum(map(ord, victim.request_id)) % 3 else PreemptionMode.RECOMPUTE


def _policy(name: str):
    if name == "bros":
        return BrosPolicy(aging_s=0.2)
    return MixedPolicy()


@st.composite
def scenarios(draw):
    block_size = draw(st.sampled_from([2, 4]))
    num_blocks = draw(st.integers(6, 30))
    requests = []
    for i in range(draw(st.integers(2, 12))):
        cls = draw(st.sampled_from([ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT, ServiceClass.BEST_EFFORT,
                                    ServiceClass.DEADLINE]))
        max_kv = num_blocks * block_size
        prompt = draw(st.integers(1, min(20, max_kv - 1)))
        max_tokens = draw(st.integers(1, min(12, max_kv - prompt)))
        requests.append(dict(
            request_id=f"q{i}", prompt_len=prompt, max_tokens=max_tokens, service_class=cls,
            at_round=draw(st.integers(0, 30)), eos_at=draw(st.one_of(st.none(), st.integers(0, max_tokens))),
            abort_at=draw(st.one_of(st.none(), st.integers(0, 60))),
            ttft_ms=draw(st.sampled_from([20.0, 2000.0])), tpot_ms=50.0, deadline_ms=500.0,
        ))
    ids = [r["request_id"] for r in requests]
    return dict(
        policy=draw(st.sampled_from(["bros", "mixed"])),
        block_size=block_size, num_blocks=num_blocks,
        budget=draw(st.integers(2, 40)), max_num_seqs=draw(st.integers(1, 8)),
        max_inflight=draw(st.sampled_from([1, 2])),
        fail_steps=draw(st.sets(st.integers(0, 60), max_size=2)),
        refuse=draw(st.sets(st.sampled_from(ids), max_size=3)),
        evict_rounds=draw(st.sets(st.integers(0, 80), max_size=4)),
        kill_round=draw(st.one_of(st.none(), st.integers(5, 60))),
        requests=requests,
    )


def _expected(r: dict) -> list[int]:
    rid = r["request_id"]
    tokens = [EOS if r["eos_at"] == i else default_token(rid, i) for i in range(r["max_tokens"])]
    if r["eos_at"] is not None and r["eos_at"] < r["max_tokens"]:
        tokens = tokens[: r["eos_at"] + 1]
    return tokens


def _check_outcome(sc: dict, drivers: list[Driver], aborted: set[str]) -> None:
    for r in sc["requests"]:
        rid = r["request_id"]
        outs = [o for d in drivers for o in d.outputs[rid]]
        finals = [o for o in outs if o.finish_reason is not None]
        assert len(finals) == 1, f"{rid} finished {len(finals)} times"
        tokens = [t for o in outs for t in o.new_token_ids]
        expected = _expected(r)
        if rid in aborted:
            assert finals[0].finish_reason is FinishReason.CANCELLED
            assert tokens == expected[: len(tokens)]
        else:
            assert tokens == expected, rid


def _make(sc: dict, book: CheckpointBook, tier: FakeHostTier) -> Driver:
    config = make_config(num_blocks=sc["num_blocks"], block_size=sc["block_size"],
                         max_num_batched_tokens=sc["budget"], max_num_seqs=sc["max_num_seqs"])
    sched = Scheduler(config, _policy(sc["policy"]), ManualClock(1.0), checkpoints=book)
    eos_at = {r["request_id"]: r["eos_at"] for r in sc["requests"] if r["eos_at"] is not None}
    worker = CheckpointingWorker(config, eos_at=eos_at, fail_steps=set(sc["fail_steps"]), tier=tier)
    driver = Driver(sched, worker)
    driver.max_inflight = sc["max_inflight"]
    return driver


def _mirror_check(driver: Driver):
    sched, worker = driver.scheduler, driver.worker
    failures: list[int] = []

    def check(plan):
        failures.extend(s for s in worker.fail_steps if s == plan.step_id)
        sched.ledger.check()
        worker.check_invariants()
        assert not worker.violations, worker.violations
        for rid, state in worker.requests.items():
            assert len(state.block_table) <= sched.ledger.held(rid)
            if not failures:
                assert len(state.block_table) == sched.ledger.held(rid)
        assert set(plan.checkpoint_request_ids) <= set(plan.preempted_request_ids)

    return check


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_checkpoint_preemption_loses_and_duplicates_nothing(sc):
    book, tier = CheckpointBook(), FakeHostTier(refuse=set(sc["refuse"]))
    driver = _make(sc, book, tier)
    sched, worker = driver.scheduler, driver.worker
    driver.on_plan = _mirror_check(driver)
    aborted: set[str] = set()
    for rnd in range(3000):
        for r in sc["requests"]:
            if r["at_round"] == rnd:
                kwargs = {k: v for k, v in r.items() if k not in ("at_round", "eos_at", "abort_at")}
                sched.add_request(make_request(arrival_s=sched.clock.now(), ignore_eos=False, **kwargs))
            if r["abort_at"] == rnd and sched.abort_request(r["request_id"]):
                aborted.add(r["request_id"])
        if rnd in sc["evict_rounds"] and tier.checkpoints:
            tier.checkpoints.pop(min(tier.checkpoints))  # the tier evicts behind the scheduler's back
        busy = driver.step()
        if not busy and rnd > 65 and not sched.has_unfinished_requests():
            break
    else:
        raise AssertionError(f"no progress: {sched.stats()}")
    driver.collect(sched.take_outputs())
    _check_outcome(sc, [driver], aborted)
    assert not worker.violations, worker.violations
    assert sched.ledger.num_used == 0 and worker.num_used_blocks == 0 and not worker.requests
    worker.settle()  # what the worker's background syncs do within its sync interval
    worker.check_invariants()
    assert worker.num_leases == 0 and worker.num_store_blocks_used == 0 and not worker.book.unreleased
    assert len(book) == 0, "book entries outlived their requests"
    assert not tier.checkpoints, f"checkpoints left in the tier: {sorted(tier.checkpoints)}"
    stats = book.stats
    # Every restore the core planned either happened, was reported as a recompute, or was in a
    # step that failed before its KV Apply (then it was never attempted).
    assert stats.num_restores == tier.num_restores + len(worker.restore_failures) + worker.num_unattempted_restores
    assert stats.num_failed_restores == len(worker.restore_failures)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_worker_death_moves_requests_to_another_core_without_loss(sc):
    book, tier = CheckpointBook(), FakeHostTier(refuse=set(sc["refuse"]))
    first, second = _make(sc, book, tier), _make(sc, book, tier)
    for d in (first, second):
        d.on_plan = _mirror_check(d)
    kill_round = sc["kill_round"] if sc["kill_round"] is not None else 10
    alive = [first, second]
    aborted: set[str] = set()
    home: dict[str, Driver] = {}
    undropped: set[str] = set()
    for rnd in range(3000):
        for i, r in enumerate(sc["requests"]):
            if r["at_round"] == rnd:
                kwargs = {k: v for k, v in r.items() if k not in ("at_round", "eos_at", "abort_at")}
                target = alive[i % len(alive)]
                target.scheduler.add_request(make_request(arrival_s=target.scheduler.clock.now(), **kwargs))
                home[r["request_id"]] = target
            if r["abort_at"] == rnd and r["request_id"] in home and home[r["request_id"]].scheduler.abort_request(r["request_id"]):
                aborted.add(r["request_id"])
        if rnd == kill_round and first in alive:
            # The first worker dies: results in flight are lost, its requests move (the service's
            # WorkerLink does exactly this: evict_all, then add_request on another core).
            undropped = set(first.scheduler.pending_checkpoint_drops())  # finished there, drop never sent
            first.inflight.clear()
            first.worker.drop_all()
            first.collect(first.scheduler.take_outputs())
            alive.remove(first)
            for req in first.scheduler.evict_all():
                second.scheduler.add_request(req)
                home[req.request_id] = second
        busy = [d.step() for d in alive]
        if not any(busy) and rnd > 65 and not any(d.scheduler.has_unfinished_requests() for d in alive):
            break
    else:
        raise AssertionError("no progress")
    for d in alive:
        d.collect(d.scheduler.take_outputs())
    _check_outcome(sc, [first, second], aborted)
    assert not second.worker.violations, second.worker.violations
    assert second.scheduler.ledger.num_used == 0 and not second.worker.requests
    assert len(book) == 0
    # Only drops the dead worker never received may leave checkpoints behind (complete ones, which
    # the tier's LRU evicts).
    assert set(tier.checkpoints) <= undropped, (sorted(tier.checkpoints), sorted(undropped))
