"""A request the worker keeps refusing cannot take other requests down with it: the scheduler
refuses token ids outside the model's vocabulary at add_request (INVALID_ARGUMENT at Submit), and
a request the worker names in an invalid plan again after it was planned afresh (a fault the core
did not foresee) ends with an error and the worker's reason, while the requests that shared its
steps complete with their exact tokens."""

from __future__ import annotations

import dataclasses

import pytest

from llmserve.errors import InvalidRequestError
from llmserve.plan_book import PlanBook, PlanLimits
from scheduler_svc.core import FinishReason, ServiceClass
from tests.factories import make_driver, make_request, make_scheduler
from tests.fake_worker import default_token

VOCAB = 2000  # above every token the fake model samples (default_token: 100-1099)


def test_a_token_outside_the_vocabulary_is_refused_at_add_request() -> None:
    sched = make_scheduler("bros", vocab_size=VOCAB)
    with pytest.raises(InvalidRequestError, match=r"prompt_token_ids holds token id 2000, outside the model's "
                                                   r"vocabulary \[0, 2000\)"):
        sched.add_request(dataclasses.replace(make_request("bad", prompt_len=4), prompt_token_ids=(1, 2, VOCAB)))
    late = make_request("late", prompt_len=4)
    late.output_token_ids = [5, -1]
    with pytest.raises(InvalidRequestError, match="output_token_ids holds token id -1"):
        sched.add_request(late)
    sched.add_request(make_request("ok", prompt_len=4))  # nothing else refused
    assert make_scheduler("bros").config.vocab_size == 0  # unknown: not checked (a simulated model)


@pytest.mark.parametrize("policy", ["fcfs", "bros", "tempo"])
def test_a_request_the_worker_refuses_twice_ends_with_its_reason_and_others_finish(policy: str) -> None:
    sched = make_scheduler(policy)  # no vocabulary known to the core: only the worker checks it
    driver = make_driver(sched)
    worker = driver.worker
    c = sched.config
    worker.book = PlanBook(c.block_size, PlanLimits(c.max_num_batched_tokens, c.max_num_seqs, c.max_model_len,
                                                   vocab_size=VOCAB))
    for i in range(3):
        sched.add_request(make_request(f"ok{i}", prompt_len=6, max_tokens=5, service_class=ServiceClass.BEST_EFFORT))
    sched.add_request(dataclasses.replace(make_request("bad", prompt_len=6, max_tokens=5),
                                          prompt_token_ids=(1, 2, 3, VOCAB + 7)))
    driver.run(max_rounds=200)
    final = driver.finish_of("bad")
    assert final is not None and final.finish_reason is FinishReason.ERROR
    assert "refused 2 plans because of this request" in final.error_message and "vocab size" in final.error_message
    for i in range(3):
        assert driver.finish_of(f"ok{i}").finish_reason is FinishReason.LENGTH
        assert driver.tokens_of(f"ok{i}") == [default_token(f"ok{i}", k) for k in range(5)]
    assert len([v for v in worker.violations if "vocab" in v]) == 2  # two refusals, then never planned again
    assert not sched.has_unfinished_requests()
