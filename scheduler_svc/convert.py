"""The only module of the scheduler service that sees both protobuf messages and core types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmserve.errors import InvalidRequestError
from llmserve.v1 import common_pb2, scheduler_pb2, worker_pb2
from scheduler_svc.core.clock import Clock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import BatchPlan, RequestOutput, StepResult, StepTiming
from scheduler_svc.core.request import FinishReason, Request, SamplingParams, ServiceClass, Slo, WorkflowRef
from scheduler_svc.core.scheduler import SchedulerStats

# The full name of the service, for health and reflection.
SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name

_CLASS_FROM_PROTO = {
    common_pb2.SERVICE_CLASS_REAL_TIME: ServiceClass.REAL_TIME,
    common_pb2.SERVICE_CLASS_DEADLINE: ServiceClass.DEADLINE,
    common_pb2.SERVICE_CLASS_BEST_EFFORT: ServiceClass.BEST_EFFORT,
}
_CLASS_TO_PROTO = {v: k for k, v in _CLASS_FROM_PROTO.items()}
_FINISH_TO_PROTO = {
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: common_pb2.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: common_pb2.FINISH_REASON_ERROR,
}
DEFAULT_MAX_TOKENS = 16


def core_config_from_worker(info: scheduler_pb2.WorkerInfo, max_num_waiting: int) -> SchedulerConfig:
    """The core plans with exactly the worker's pool geometry and step budgets."""
    return SchedulerConfig(
        num_blocks=info.num_blocks,
        block_size=info.block_size,
        max_num_batched_tokens=info.max_num_batched_tokens,
        max_num_seqs=info.max_num_seqs,
        max_model_len=info.max_model_len,
        eos_token_ids=tuple(info.eos_token_ids),
        max_num_waiting=max_num_waiting,
    )


def sampling_from_proto(sampling: common_pb2.SamplingParams) -> SamplingParams:
    return SamplingParams(
        max_tokens=sampling.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=sampling.temperature if sampling.HasField("temperature") else 1.0,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        top_k=sampling.top_k,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop_token_ids=tuple(sampling.stop_token_ids),
        ignore_eos=sampling.ignore_eos,
    )


def sampling_to_proto(sampling: SamplingParams) -> common_pb2.SamplingParams:
    message = common_pb2.SamplingParams(
        max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k, stop_token_ids=sampling.stop_token_ids, ignore_eos=sampling.ignore_eos,
    )
    if sampling.seed is not None:
        message.seed = sampling.seed
    return message


def slo_from_proto(slo: common_pb2.Slo) -> Slo:
    service_class = _CLASS_FROM_PROTO.get(slo.service_class)
    if service_class is None:
        raise InvalidRequestError(
            f"slo.service_class {slo.service_class} is not a known class: use SERVICE_CLASS_REAL_TIME, "
            "SERVICE_CLASS_DEADLINE or SERVICE_CLASS_BEST_EFFORT")
    return Slo(
        service_class=service_class,
        ttft_ms=slo.ttft_ms if slo.HasField("ttft_ms") else None,
        tpot_ms=slo.tpot_ms if slo.HasField("tpot_ms") else None,
        deadline_ms=slo.deadline_ms if slo.HasField("deadline_ms") else None,
        priority=slo.priority,
    )


def workflow_from_proto(workflow: common_pb2.WorkflowRef) -> WorkflowRef:
    return WorkflowRef(
        workflow_id=workflow.workflow_id,
        application=workflow.application,
        stage=workflow.stage,
        depends_on=tuple(workflow.depends_on),
        workflow_deadline_ms=workflow.workflow_deadline_ms if workflow.HasField("workflow_deadline_ms") else None,
        workflow_start_s=workflow.workflow_start_unix_s if workflow.HasField("workflow_start_unix_s") else None,
    )


def request_from_proto(message: scheduler_pb2.SubmitRequest, clock: Clock) -> Request:
    """A core Request from Submit; raises InvalidRequestError naming the bad field."""
    if not message.request_id:
        raise InvalidRequestError("request_id is empty: the gateway must assign one")
    return Request(
        request_id=message.request_id,
        prompt_token_ids=tuple(message.prompt_token_ids),
        sampling=sampling_from_proto(message.sampling),
        slo=slo_from_proto(message.slo),
        tenant=message.tenant,
        workflow=workflow_from_proto(message.workflow) if message.HasField("workflow") and message.workflow.workflow_id else None,
        arrival_s=message.arrival_unix_s if message.arrival_unix_s > 0 else clock.now(),
    )


def plan_to_proto(plan: BatchPlan, trace_contexts: Mapping[str, Mapping[str, str]] | None = None) -> worker_pb2.BatchPlan:
    """`trace_contexts`: request_id -> W3C carrier of its Submit span; a new request listed there
    carries it to the worker (`NewRequest.trace_context`), whose spans then join its trace."""
    contexts = trace_contexts or {}
    message = worker_pb2.BatchPlan(
        step_id=plan.step_id,
        finished_request_ids=plan.finished_request_ids,
        preempted_request_ids=plan.preempted_request_ids,
        checkpoint_request_ids=plan.checkpoint_request_ids,
        drop_checkpoint_request_ids=plan.drop_checkpoint_request_ids,
    )
    for new in plan.new_requests:
        message.new_requests.append(worker_pb2.NewRequest(
            request_id=new.request_id,
            token_ids=new.token_ids,
            num_prompt_tokens=new.num_prompt_tokens,
            sampling=sampling_to_proto(new.sampling),
            service_class=_CLASS_TO_PROTO[new.service_class],
            num_output_tokens=new.num_output_tokens,
            trace_context=contexts.get(new.request_id, {}),
            restore_from_checkpoint=new.num_computed_tokens > 0,
            num_computed_tokens=new.num_computed_tokens,
        ))
    for work in plan.scheduled:
        message.scheduled.append(worker_pb2.ScheduledRequest(
            request_id=work.request_id, num_tokens=work.num_tokens,
            num_computed_tokens=work.num_computed_tokens, sample=work.sample,
        ))
    return message


def timing_from_proto(timing: worker_pb2.StepTiming) -> StepTiming:
    return StepTiming(
        forward_ns=timing.forward_ns, sample_ns=timing.sample_ns, kv_ns=timing.kv_ns, total_ns=timing.total_ns,
        num_prefill_tokens=timing.num_prefill_tokens, num_decode_seqs=timing.num_decode_seqs,
        num_kv_tokens_read=timing.num_kv_tokens_read, checkpoint_bytes=timing.checkpoint_bytes,
        restore_bytes=timing.restore_bytes, checkpoint_ns=timing.checkpoint_ns, restore_ns=timing.restore_ns,
        num_recomputed_tokens=timing.num_recomputed_tokens,
    )


def result_from_proto(message: worker_pb2.StepResult) -> StepResult:
    return StepResult(
        step_id=message.step_id,
        sampled=tuple((s.request_id, s.token_id) for s in message.sampled),
        timing=timing_from_proto(message.timing) if message.HasField("timing") else None,
        error=message.error,
        restore_failed_request_ids=tuple(message.restore_failed_request_ids),
        checkpoint_failed_request_ids=tuple(message.checkpoint_failed_request_ids),
    )


def output_to_event(output: RequestOutput) -> scheduler_pb2.TokenEvent:
    event = scheduler_pb2.TokenEvent(request_id=output.request_id, token_ids=output.new_token_ids)
    if output.finish_reason is not None:
        event.finish_reason = _FINISH_TO_PROTO[output.finish_reason]
        event.num_prompt_tokens = output.num_prompt_tokens
        event.num_preemptions = output.num_preemptions
        event.error_message = output.error_message
    return event


def describe_request_to_pb() -> worker_pb2.DescribeRequest:
    return worker_pb2.DescribeRequest()


def worker_id_from_info(info: scheduler_pb2.WorkerInfo) -> str:
    """The id a worker described itself with (empty when it gave none)."""
    return info.worker_id


def abort_id_from_pb(request: scheduler_pb2.AbortRequest) -> str:
    return request.request_id


def abort_response_to_pb(aborted: bool) -> scheduler_pb2.AbortResponse:
    return scheduler_pb2.AbortResponse(aborted=aborted)


def stats_to_pb(
    policy: str,
    num_workers: int,
    num_steps: int,
    core_stats: Iterable[SchedulerStats],
    model: scheduler_pb2.WorkerInfo | None,
) -> scheduler_pb2.SchedulerStats:
    """`GetStats`: queue counts summed over the cores; `model` is a worker's description (None
    while no worker has described itself)."""
    stats = scheduler_pb2.SchedulerStats(policy=policy, num_workers=num_workers, num_steps=num_steps)
    for core in core_stats:
        stats.num_waiting += core.num_waiting
        stats.num_running += core.num_running
        stats.num_preemptions += core.num_preemptions
    if model is not None:
        stats.model.CopyFrom(model)
    return stats
