"""A request resumed from its host-tier checkpoint re-acquires the prefix its worker still caches
(issue 13): the admission claims the hit (`num_cached_tokens`) and restores only the rest
(`num_computed_tokens` stays the checkpoint's); a checkpoint no longer than the hit is not
restored at all (the hit covers it)."""

from __future__ import annotations

import pytest

from scheduler_svc.core import ServiceClass
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.request import Request
from tests.factories import make_request, make_scheduler


class FixedPrefix:
    """A prefix cache that holds the first `tokens` tokens of every prompt (whole blocks)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.claims: list[str] = []

    def cached_tokens(self, req: Request) -> int:
        return min(self.tokens, (req.num_prompt_tokens - 1) // 4 * 4)

    def claim(self, req: Request) -> int:
        self.claims.append(req.request_id)
        return self.cached_tokens(req)


@pytest.mark.parametrize("policy", ["fcfs", "bros", "tempo"])
@pytest.mark.parametrize(("cached", "checkpoint", "computed", "restores"), [
    (8, 12, 12, 1),  # restore blocks 2.. past the 2-block hit
    (16, 12, 16, 0),  # the hit covers more than the checkpoint: no restore
    (0, 12, 12, 1),  # nothing cached: the whole checkpoint
])
def test_a_resume_claims_the_cached_prefix_and_restores_the_rest(policy, cached, checkpoint, computed, restores):
    book, prefix = CheckpointBook(), FixedPrefix(cached)
    sched = make_scheduler(policy, checkpoints=book, prefix=prefix)
    book.on_checkpoint("be", checkpoint)  # as a checkpoint preemption leaves it
    sched.add_request(make_request("be", prompt_len=18, max_tokens=8, service_class=ServiceClass.BEST_EFFORT,
                                   arrival_s=sched.clock.now()))
    plan = sched.schedule()
    [new] = plan.new_requests
    assert (new.num_computed_tokens, new.num_cached_tokens) == (computed, cached)
    assert plan.scheduled[0].num_computed_tokens == computed
    assert book.stats.num_restores == restores
    assert prefix.claims == (["be"] if cached else [])
