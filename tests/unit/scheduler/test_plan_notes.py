"""The plan notes (core/plan_notes.py): what happened between plans reaches the next plan once, in
order; and the core's use of them (a victim drained between plans is listed in the next one)."""

from __future__ import annotations

from scheduler_svc.core import RequestOutput, StepResult
from scheduler_svc.core.plan_notes import PlanNotes
from scheduler_svc.core.ticket import Ticket
from tests.factories import make_request, make_scheduler


def _ticket(rid: str) -> Ticket:
    return Ticket(make_request(rid), seq=0, now=0.0)


def test_ids_reach_one_plan_in_the_order_noted():
    notes = PlanNotes()
    assert not notes.has_ids_for_plan()
    notes.note_preempted("a", checkpoint=False)
    notes.note_preempted("b", checkpoint=True)
    notes.note_drop("c")
    notes.note_preempted("d", checkpoint=True)
    assert notes.has_ids_for_plan() and notes.pending_drops == ("c",)
    assert notes.take_ids_for_plan() == (("a", "b", "d"), ("b", "d"), ("c",))
    assert not notes.has_ids_for_plan()
    assert notes.take_ids_for_plan() == ((), (), ())


def test_a_drop_alone_needs_a_plan_but_a_finish_is_taken_separately():
    notes = PlanNotes()
    notes.note_finished(_ticket("f"))
    assert not notes.has_ids_for_plan()  # the planner lists finished ids itself (after freeing their blocks)
    assert notes.is_finish_pending("f")
    assert list(notes.take_finished()) == ["f"]
    assert not notes.is_finish_pending("f") and notes.take_finished() == {}
    notes.note_drop("x")
    assert notes.has_ids_for_plan()


def test_outputs_are_delivered_once():
    notes = PlanNotes()
    first, second = RequestOutput("a"), RequestOutput("b")
    notes.note_output(first)
    notes.note_output(second)
    assert notes.take_outputs() == [first, second]
    assert notes.take_outputs() == []


def test_a_lost_worker_forgets_finishes_and_preemptions_but_not_drops_or_outputs():
    notes = PlanNotes()
    notes.note_finished(_ticket("f"))
    notes.note_preempted("p", checkpoint=False)
    notes.note_preempted("c", checkpoint=True)
    notes.note_drop("d")
    out = RequestOutput("x")
    notes.note_output(out)
    assert notes.on_worker_lost() == ["c"]  # never sent: the book must hear it failed
    assert notes.take_finished() == {}
    assert notes.take_ids_for_plan() == ((), (), ("d",))
    assert notes.take_outputs() == [out]


def test_a_victim_drained_between_plans_is_listed_in_the_next_plan():
    sched = make_scheduler(num_blocks=4, block_size=4, max_num_batched_tokens=64)
    for rid, arrival in (("a", 0.1), ("b", 0.2)):
        sched.add_request(make_request(rid, prompt_len=8, max_tokens=8, arrival_s=arrival))
    p0 = sched.schedule()  # both prefills fill the pool exactly
    assert sched.ledger.num_free == 0
    assert sched.schedule().is_empty()  # a needs a block: b (in flight) is drained, not preempted
    assert sched.ticket("b").preempt_when_drained
    sched.update(StepResult(p0.step_id, (("a", 50), ("b", 51))))  # b drains: preempted between plans
    assert sched.get_request("b").status.name == "PREEMPTED"
    p1 = sched.schedule()
    assert p1.preempted_request_ids == ("b",)
    assert [s.request_id for s in p1.scheduled] == ["a"]
    assert sched.schedule().preempted_request_ids == ()  # listed once
