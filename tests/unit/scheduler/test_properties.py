"""Property tests: random workloads, aborts and step failures, with 1 or 2 plans in flight, for
every policy, the real scheduler core driving the real worker's plan book (tests/fake_worker.py
FakeWorker) leasing ahead (random reserve sizes and sync intervals) against the kvstore core's
lease table. Invariants: no block is held twice and the book's tables are exactly the worker's
leases, the store's record is exactly what the worker told it, the core's ledger mirrors what the
worker's requests hold (no leak, no double allocation), the worker never sees an inconsistent
plan, every request ends exactly once with exactly the tokens an uninterrupted run would produce,
and at the end every lease is released and the reserve given back. With a checkpoint book (and so
bros's and tempo's seat-taking) or without one; the roster's RT count equals a recount."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_svc.core import POLICY_NAMES, FinishReason, ServiceClass
from scheduler_svc.core.checkpoints import CheckpointBook
from tests.factories import EOS, default_token, make_driver, make_request, make_scheduler

_CLASSES = [c for c in ServiceClass if c is not ServiceClass.UNSPECIFIED]
RT = ServiceClass.REAL_TIME


def _options(policy: str, aging_s: float = 0.2) -> dict[str, object]:
    """Short aging by default; bros and tempo take seats (opt-in) with no victim hold, so that
    seats are taken within a short run."""
    extra = {"victim_hold_s": 0.0, "take_seats": True} if policy in ("bros", "tempo") else {}
    return {"aging_s": aging_s, **extra}
_POLICIES = list(POLICY_NAMES)


@st.composite
def scenarios(draw, policies=tuple(_POLICIES), max_seqs=8, tier=st.one_of(st.none(), st.integers(0, 40))):
    block_size = draw(st.sampled_from([2, 4, 8]))
    num_blocks = draw(st.integers(6, 40))
    requests = []
    for i in range(draw(st.integers(1, 14))):
        cls = draw(st.sampled_from(_CLASSES))
        max_kv = num_blocks * block_size
        prompt = draw(st.integers(1, min(24, max_kv - 1)))
        max_tokens = draw(st.integers(1, min(12, max_kv - prompt)))
        requests.append(dict(
            request_id=f"q{i}", prompt_len=prompt, max_tokens=max_tokens, service_class=cls,
            priority=draw(st.integers(0, 3)), at_round=draw(st.integers(0, 30)),
            eos_at=draw(st.one_of(st.none(), st.integers(0, max_tokens))),
            abort_at=draw(st.one_of(st.none(), st.integers(0, 40))),
            ttft_ms=draw(st.sampled_from([20.0, 200.0, 2000.0])), tpot_ms=draw(st.sampled_from([5.0, 50.0])),
            deadline_ms=draw(st.sampled_from([50.0, 500.0, 5000.0])),
        ))
    return dict(
        policy=draw(st.sampled_from(policies)),
        block_size=block_size,
        num_blocks=num_blocks,
        budget=draw(st.integers(1, 40)),
        max_num_seqs=draw(st.integers(1, max_seqs)),
        max_inflight=draw(st.sampled_from([1, 2])),
        fail_steps=draw(st.sets(st.integers(0, 60), max_size=3)),
        reserve_blocks=draw(st.integers(0, 4)),
        # The checkpoint book's host tier, in blocks (None: no book, preemption recomputes); the
        # fake worker has no tier, so every checkpoint fails and its request is recomputed.
        tier_blocks=draw(tier),
        sync_interval_s=draw(st.sampled_from([0.0, 0.05, 1.0])),
        requests=requests,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_interleavings_keep_every_invariant(sc):
    _run(sc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(policies=("bros", "tempo"), max_seqs=3, tier=st.integers(0, 40)))
def test_seats_taken_for_rt_keep_every_invariant(sc):
    # Few seats and a checkpoint book: bros's and tempo's seat-taking (step_builder._take_seat)
    # preempts and drains victims at max_num_seqs, and every invariant above still holds (aging
    # long enough that best-effort work is not exempt from it).
    _run(sc, aging_s=30.0)


def _run(sc, aging_s: float = 0.2):
    book = None
    if sc["tier_blocks"] is not None:
        book = CheckpointBook()
        book.set_capacity(sc["tier_blocks"] * 64, 64, sc["block_size"])
    sched = make_scheduler(sc["policy"], num_blocks=sc["num_blocks"], block_size=sc["block_size"],
                           max_num_batched_tokens=sc["budget"], max_num_seqs=sc["max_num_seqs"],
                           policy_options=_options(sc["policy"], aging_s), checkpoints=book)
    roster = sched._roster
    eos_at = {r["request_id"]: r["eos_at"] for r in sc["requests"] if r["eos_at"] is not None}
    driver = make_driver(sched, eos_at=eos_at, fail_steps=set(sc["fail_steps"]), reserve_blocks=sc["reserve_blocks"],
                         sync_interval_s=sc["sync_interval_s"])
    driver.max_inflight = sc["max_inflight"]
    worker = driver.worker
    failures_seen = []

    def check_mirror(plan):
        failures_seen.extend(s for s in worker.fail_steps if s == plan.step_id)
        sched.ledger.check()
        # The RT count the seat rule reads (roster.py) equals a recount.
        assert roster.num_rt == sum(t.req.service_class is RT and not t.req.is_finished
                                    for t in roster.requests.values())
        worker.check_invariants()
        assert not worker.violations, worker.violations
        for rid, state in worker.requests.items():
            held, blocks = sched.ledger.held(rid), len(state.block_table)
            assert blocks <= held, (rid, blocks, held)
            if not failures_seen:
                assert blocks == held, (rid, blocks, held)
        if not failures_seen:
            assert worker.num_used_blocks == sched.ledger.num_used

    driver.on_plan = check_mirror
    aborted: set[str] = set()
    for rnd in range(2000):
        for r in sc["requests"]:
            if r["at_round"] == rnd:
                kwargs = {k: v for k, v in r.items() if k not in ("at_round", "eos_at", "abort_at")}
                sched.add_request(make_request(arrival_s=sched.clock.now(), **kwargs))
            if r["abort_at"] == rnd and sched.abort_request(r["request_id"]):
                aborted.add(r["request_id"])
        busy = driver.step()
        if not busy and rnd > 45 and not sched.has_unfinished_requests():
            break
    else:
        raise AssertionError(f"no progress: {sched.stats()}")
    driver.collect(sched.take_outputs())

    for r in sc["requests"]:
        rid = r["request_id"]
        final = driver.finish_of(rid)
        assert final is not None, f"{rid} never finished"
        tokens = driver.tokens_of(rid)
        expected = [EOS if r["eos_at"] == i else default_token(rid, i) for i in range(r["max_tokens"])]
        if r["eos_at"] is not None and r["eos_at"] < r["max_tokens"]:
            expected = expected[: r["eos_at"] + 1]
        if rid in aborted:
            assert final.finish_reason is FinishReason.CANCELLED
            assert tokens == expected[: len(tokens)]
        else:
            assert tokens == expected
            stop = r["eos_at"] is not None and r["eos_at"] < r["max_tokens"]
            assert final.finish_reason is (FinishReason.STOP if stop else FinishReason.LENGTH)
    assert sched.ledger.num_used == 0
    worker.check_invariants()
    assert worker.num_used_blocks == 0 and not worker.requests and not worker.book.unreleased
    worker.settle()  # what the worker's background syncs do within its sync interval
    worker.check_invariants()
    assert worker.num_leases == 0 and worker.num_store_blocks_used == 0
    assert sched.stats().num_running == 0 and sched.stats().num_waiting == 0
    assert roster.num_rt == 0
