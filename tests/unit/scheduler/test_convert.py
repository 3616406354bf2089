"""scheduler_svc/convert.py: the Submit contract (what the gateway promises, checked here; client
input itself is the gateway's), the plan sent to workers (every field of the shared BatchPlan),
and step results with their error codes."""

from __future__ import annotations

import pytest

from llmserve.errors import InvalidRequestError
from llmserve.plan import BatchPlan, NewRequest, ScheduledRequest, StepErrorCode
from llmserve.types import SamplingParams, ServiceClass
from llmserve.v1 import common_pb2, scheduler_pb2, worker_pb2
from scheduler_svc import convert
from scheduler_svc.core.clock import ManualClock


def submit(max_tokens: int = 4, service_class: int = common_pb2.SERVICE_CLASS_BEST_EFFORT,
           **slo: float) -> scheduler_pb2.SubmitRequest:
    return scheduler_pb2.SubmitRequest(
        request_id="r1", prompt_token_ids=[1, 2, 3],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.5, seed=9),
        slo=common_pb2.Slo(service_class=service_class, **slo), arrival_unix_s=12.5)


def test_a_submit_that_keeps_the_contract_becomes_a_core_request() -> None:
    req = convert.request_from_proto(submit(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=100.0,
                                            tpot_ms=20.0), ManualClock(1.0))
    assert (req.request_id, req.prompt_token_ids, req.arrival_s) == ("r1", (1, 2, 3), 12.5)
    assert (req.sampling.max_tokens, req.sampling.temperature, req.sampling.seed) == (4, 0.5, 9)
    assert req.service_class is ServiceClass.REAL_TIME and (req.slo.ttft_ms, req.slo.tpot_ms) == (100.0, 20.0)


@pytest.mark.parametrize(
    "message, expected",
    [
        (submit(max_tokens=0), "the Submit contract needs sampling.max_tokens >= 1 (got 0)"),
        (submit(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=100.0),
         "the Submit contract needs slo.tpot_ms > 0 for a real-time request (got None)"),
        (submit(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=0.0, tpot_ms=5.0),
         "the Submit contract needs slo.ttft_ms > 0 for a real-time request (got 0.0)"),
        (submit(service_class=common_pb2.SERVICE_CLASS_DEADLINE), "the Submit contract needs slo.deadline_ms > 0"),
        (submit(service_class=common_pb2.SERVICE_CLASS_UNSPECIFIED), "slo.service_class 0 is not a known class"),
        (submit(service_class=7), "slo.service_class 7 is not a known class"),
    ],
)
def test_a_submit_that_breaks_the_gateways_contract_is_invalid(message, expected: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        convert.request_from_proto(message, ManualClock(1.0))
    assert expected in str(err.value)


def test_a_resubmitted_request_continues_after_the_outputs_it_brings() -> None:
    """The gateway resubmits after a scheduler restart with the tokens its client has: the core
    re-admits the request with them (its worker samples output i with draw index i)."""
    from tests.factories import make_scheduler

    message = submit(max_tokens=4)
    message.output_token_ids.extend([70, 71])
    req = convert.request_from_proto(message, ManualClock(1.0))
    assert req.output_token_ids == [70, 71] and req.num_tokens == 5
    core = make_scheduler()
    core.add_request(req)
    (new,) = core.schedule().new_requests
    assert new.token_ids == (1, 2, 3, 70, 71) and new.num_prompt_tokens == 3 and new.num_output_tokens == 2
    full = submit(max_tokens=2)
    full.request_id = "r2"
    full.output_token_ids.extend([70, 71])
    with pytest.raises(InvalidRequestError, match="already has max_tokens output tokens"):
        core.add_request(convert.request_from_proto(full, ManualClock(1.0)))


def test_an_unset_seed_stays_unset_for_the_worker_to_derive() -> None:
    message = submit()
    message.sampling.ClearField("seed")
    assert convert.request_from_proto(message, ManualClock(1.0)).sampling.seed is None


def test_the_plan_reaches_the_worker_with_every_field() -> None:
    """scheduler plan -> worker.proto -> the worker's plan: the same object (the in-process
    engine skips the protobuf and hands the object itself)."""
    from worker_svc import convert as worker_convert  # the worker's side (imports torch)

    new = NewRequest("n", (1, 2, 3, 4), 3, SamplingParams(max_tokens=5, temperature=0.5, top_p=0.25, top_k=3, seed=11,
                                                             stop_token_ids=(2,), ignore_eos=True),
                     ServiceClass.DEADLINE, num_output_tokens=1, num_computed_tokens=2)
    plan = BatchPlan(7, (new,), (ScheduledRequest("n", 2, 2, True), ScheduledRequest("old", 1, 9, False)),
                     finished_request_ids=("f",), preempted_request_ids=("p", "q"), checkpoint_request_ids=("q",),
                     drop_checkpoint_request_ids=("gone",))
    message = convert.plan_to_proto(plan, {"n": {"traceparent": "00-t"}})
    got = worker_convert.plan_from_proto(worker_pb2.BatchPlan.FromString(message.SerializeToString()))
    assert got == BatchPlan(7, (NewRequest("n", new.token_ids, 3, new.sampling, ServiceClass.DEADLINE, 1, 2,
                                           (("traceparent", "00-t"),)),), plan.scheduled, ("f",), ("p", "q"), ("q",),
                            ("gone",))


@pytest.mark.parametrize(
    "code, error, expected",
    [
        (worker_pb2.STEP_ERROR_CODE_UNSPECIFIED, "", StepErrorCode.NONE),
        (worker_pb2.STEP_ERROR_CODE_KV_UNAVAILABLE, "store down", StepErrorCode.KV_UNAVAILABLE),
        (worker_pb2.STEP_ERROR_CODE_INVALID_PLAN, "bad plan", StepErrorCode.INVALID_PLAN),
        (worker_pb2.STEP_ERROR_CODE_UNSPECIFIED, "a worker without codes", StepErrorCode.STEP_FAILED),
        (99, "a code from a newer worker", StepErrorCode.STEP_FAILED),
    ],
)
def test_step_results_carry_the_error_code(code: int, error: str, expected: StepErrorCode) -> None:
    message = worker_pb2.StepResult(step_id=3, error=error, error_code=code)  # type: ignore[arg-type]
    if not error:
        message.sampled.append(worker_pb2.SampledToken(request_id="a", token_id=5))
        message.timing.forward_ns = 10
    result = convert.result_from_proto(message)
    assert (result.step_id, result.error, result.error_code) == (3, error, expected)
    if not error:
        assert result.sampled == (("a", 5),) and result.timing is not None and result.timing.forward_ns == 10


def test_step_timing_has_every_field_of_the_proto_and_round_trips() -> None:
    from dataclasses import fields

    from llmserve.convert import timing_from_proto, timing_to_proto
    from llmserve.types import StepTiming

    names = [f.name for f in fields(StepTiming)]
    assert set(names) == set(worker_pb2.StepTiming.DESCRIPTOR.fields_by_name)
    timing = StepTiming(**{name: i + 1 for i, name in enumerate(names)})
    assert timing_from_proto(worker_pb2.StepTiming.FromString(timing_to_proto(timing).SerializeToString())) == timing
