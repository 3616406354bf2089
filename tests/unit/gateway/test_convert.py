"""convert.py: unset proto fields stay None (so defaults and errors are the validator's), prepared
requests reach the scheduler with every default explicit, deltas become responses."""

from __future__ import annotations

from gateway import convert
from gateway.client import build_request
from gateway.core.types import Delta, FinishReason, PreparedRequest, Sampling, ServiceClass, Slo, Usage, Workflow
from llmserve.v1 import common_pb2, gateway_pb2, scheduler_pb2, worker_pb2


def test_unset_fields_are_none_and_unknown_class_is_kept() -> None:
    req = gateway_pb2.GenerateRequest(text="hi", slo=common_pb2.Slo(service_class=9))  # type: ignore[arg-type]
    inp = convert.generate_input_from_pb(req)
    assert inp.text == "hi" and inp.token_ids is None
    s = inp.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.seed) == (0, None, None, None)
    assert (inp.slo.service_class, inp.slo.ttft_ms, inp.slo.deadline_ms) == (9, None, None)
    assert inp.workflow is None


def test_explicit_zero_is_not_unset() -> None:
    req = build_request([1, 2], temperature=0.0, top_p=0.5, seed=0, service_class="real_time", ttft_ms=0.0, tpot_ms=20.0)
    inp = convert.generate_input_from_pb(req)
    assert inp.token_ids == (1, 2) and inp.text is None
    assert (inp.sampling.temperature, inp.sampling.top_p, inp.sampling.seed) == (0.0, 0.5, 0)
    assert (inp.slo.service_class, inp.slo.ttft_ms, inp.slo.tpot_ms) == (1, 0.0, 20.0)


def test_workflow_round_trip_to_submit() -> None:
    req = gateway_pb2.GenerateRequest(text="x")
    req.workflow.workflow_id = "wf"
    req.workflow.stage = 2
    req.workflow.depends_on.extend(["a", "b"])
    req.workflow.workflow_deadline_ms = 9000.0
    wf = convert.generate_input_from_pb(req).workflow
    assert wf == Workflow("wf", "", 2, ("a", "b"), 9000.0, None)
    prepared = PreparedRequest(
        "r", (3, 4), Sampling(16, 0.7, 0.9, 5, 2**62, ("###",), (2,), True),
        Slo(ServiceClass.DEADLINE, deadline_ms=5000.0, priority=-1), "t", wf, 1700000000.5,
    )
    msg = convert.submit_to_pb(prepared)
    assert list(msg.prompt_token_ids) == [3, 4] and msg.arrival_unix_s == 1700000000.5
    assert msg.sampling.seed == 2**62 and msg.sampling.max_tokens == 16 and msg.sampling.ignore_eos
    assert abs(msg.sampling.temperature - 0.7) < 1e-6 and list(msg.sampling.stop) == []  # stop strings stay here
    assert msg.slo.HasField("deadline_ms") and not msg.slo.HasField("ttft_ms") and msg.slo.priority == -1
    assert msg.workflow.HasField("workflow_deadline_ms") and not msg.workflow.HasField("workflow_start_unix_s")
    assert list(msg.workflow.depends_on) == ["a", "b"]


def test_delta_to_response_and_finish_reasons() -> None:
    d = Delta("hi", (5,), FinishReason.STOP, Usage(3, 1, 12.5, 0.0, True))
    msg = convert.response_to_pb("r1", d)
    assert (msg.request_id, msg.text, list(msg.token_ids)) == ("r1", "hi", [5])
    assert msg.finish_reason == common_pb2.FINISH_REASON_STOP and msg.usage.ttft_ms == 12.5 and msg.usage.slo_attained
    assert not convert.response_to_pb("r1", Delta("a", ())).HasField("usage")
    assert convert.finish_reason_from_pb(common_pb2.FINISH_REASON_LENGTH) is FinishReason.LENGTH
    assert convert.finish_reason_from_pb(42) is FinishReason.ERROR


def test_model_info_from_stats() -> None:
    stats = scheduler_pb2.SchedulerStats(policy="bros", num_workers=2)
    stats.model.model_name, stats.model.max_model_len, stats.model.vocab_size = "m", 2048, 49152
    stats.model.eos_token_ids.append(2)
    stats.model.block_size = 16
    served = worker_pb2.WorkerInfo(model_name="served", max_model_len=1024, vocab_size=100, block_size=8)
    info = convert.model_info_to_pb(stats, has_chat_template=True, served=served)
    assert (info.model_name, info.max_context_length, info.vocab_size, list(info.eos_token_ids)) == ("m", 2048, 49152, [2])
    assert (info.num_workers, info.kv_block_size, info.scheduling_policy, info.has_chat_template) == (2, 16, "bros", True)
    assert convert.limits_from_worker_info(stats.model).max_context_length == 2048
    assert convert.described_model_from_pb(stats) == stats.model
    # No worker right now: the model served so far describes the model.
    no_worker = scheduler_pb2.SchedulerStats(policy="bros", num_workers=0)
    assert convert.described_model_from_pb(no_worker) is None
    info = convert.model_info_to_pb(no_worker, has_chat_template=False, served=served)
    assert (info.model_name, info.max_context_length, info.kv_block_size, info.num_workers) == ("served", 1024, 8, 0)


def test_token_event_from_pb() -> None:
    event = scheduler_pb2.TokenEvent(request_id="r", token_ids=[5, 6], finish_reason=common_pb2.FINISH_REASON_ERROR,
                                     error_message="worker lost")
    token_ids, reason, message = convert.token_event_from_pb(event)
    assert (list(token_ids), reason, message) == ([5, 6], FinishReason.ERROR, "worker lost")
