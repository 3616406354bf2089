"""The core's private per-request state (core/ticket.py): it is the core's alone, stays on its
core when the request moves, and reaches policies only through the read-only TicketView."""

from __future__ import annotations

from types import SimpleNamespace

from scheduler_svc.core import Request, ServiceClass
from scheduler_svc.core.policy.pacing import OtherWork
from scheduler_svc.core.ticket import Ticket
from tests.factories import make_driver, make_request, make_scheduler


def test_request_carries_no_scheduler_bookkeeping():
    private = {"seq", "sched_key", "key_step", "queue_gen", "last_progress_s", "promoted_at",
               "preempt_when_drained", "discard_inflight", "num_inflight_steps", "last_scheduled_step"}
    assert private.isdisjoint(Request.__slots__)


def test_reset_for_queue_forgets_what_the_worker_held():
    req = make_request("a", prompt_len=4)
    t = Ticket(req, seq=3, now=5.0)
    req.num_computed_tokens, req.num_output_placeholders = 4, 1
    t.num_inflight_steps, t.preempt_when_drained, t.discard_inflight = 2, True, True
    t.promoted_at = 6.0
    t.reset_for_queue()
    assert (req.num_computed_tokens, req.num_output_placeholders) == (0, 0)
    assert (t.num_inflight_steps, t.preempt_when_drained, t.discard_inflight) == (0, False, False)
    assert t.promoted_at == 6.0 and t.seq == 3  # promotion is sticky until the request leaves the core


def test_a_moved_request_starts_afresh_on_its_new_core():
    first = make_scheduler("priority", policy_options={"aging_s": 0.5})
    first.add_request(make_request("old", prompt_len=4, max_tokens=50, ignore_eos=True))
    driver = make_driver(first)
    driver.step()
    first.clock.advance(1.0)  # starved past aging_s while running: promoted at the next plan
    first.schedule()
    assert first.ticket("old").promoted_at is not None
    second = make_scheduler("priority", policy_options={"aging_s": 0.5})
    second.add_request(make_request("native", prompt_len=4))
    moved = first.evict_all()
    assert first.ticket("old") is None
    second.add_request(moved[0])
    t = second.ticket("old")
    assert t is not None and t.promoted_at is None and t.num_inflight_steps == 0
    assert t.seq > second.ticket("native").seq  # its order on the new core is its arrival there


def test_pacing_counts_other_work_only_while_it_will_run_again():
    be = make_request("be", prompt_len=4, service_class=ServiceClass.BEST_EFFORT)
    be.status = be.status.RUNNING
    view = SimpleNamespace(promoted_at=None, preempt_when_drained=False)
    other = OtherWork()
    other.on_scheduled(be, view)  # type: ignore[arg-type]
    other.begin_step()
    assert other.may_yield
    other.on_scheduled(be, SimpleNamespace(promoted_at=None, preempt_when_drained=True))  # type: ignore[arg-type]
    other.begin_step()
    assert not other.may_yield  # a drained victim is not scheduled again: a yield could empty the plan
