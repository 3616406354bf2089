"""A request resubmitted after a scheduler restart may have a checkpoint in the host tier that the
new scheduler's book never saw (written before the restart): nothing resumes from it, and when the
request leaves, its plan lists the drop, so no stale checkpoint outlives it."""

from __future__ import annotations

from scheduler_svc.core import ManualClock, Scheduler
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.policy import make_policy
from tests.factories import default_token, make_config, make_driver, make_request


def _core(book: CheckpointBook) -> Scheduler:
    return Scheduler(make_config(), make_policy("fcfs"), ManualClock(1.0), checkpoints=book)


def test_a_resubmitted_request_drops_the_checkpoint_no_book_knew() -> None:
    book = CheckpointBook()
    core = _core(book)
    req = make_request("back", prompt_len=6, max_tokens=8)
    req.output_token_ids = [default_token("back", i) for i in range(3)]
    core.add_request(req)
    book.on_resubmitted("back")
    assert book.tokens("back") == 0 and book.resume_point("back", req.num_tokens) == 0  # its size is unknown
    driver = make_driver(core)
    driver.run()
    assert req.output_token_ids == [default_token("back", i) for i in range(8)]
    assert any("back" in plan.drop_checkpoint_request_ids for plan in driver.plans)
    assert len(book) == 0


def test_a_new_request_lists_no_drop() -> None:
    book = CheckpointBook()
    core = _core(book)
    core.add_request(make_request("new", prompt_len=6, max_tokens=4))
    driver = make_driver(core)
    driver.run()
    assert not any(plan.drop_checkpoint_request_ids for plan in driver.plans)
    assert len(book) == 0
