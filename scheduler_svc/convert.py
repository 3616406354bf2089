"""The only module of the scheduler service that sees both protobuf messages and core types.

Submit is internal: the gateway validated the client's input and filled in every default. This
module checks that contract (`_check_submit`: a violation is a gateway bug or a client that
bypassed it, answered INVALID_ARGUMENT naming the contract), not user input; the core checks its
capacity (context length, KV capacity, queue length).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmserve.convert import sampling_from_proto, sampling_to_proto, timing_from_proto
from llmserve.errors import InvalidRequestError
from llmserve.plan import BatchPlan, StepErrorCode, StepResult
from llmserve.types import SamplingParams, ServiceClass, service_class_of
from llmserve.v1 import common_pb2, scheduler_pb2, worker_pb2
from scheduler_svc.core.clock import Clock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.cost_model import LinearCostModel
from scheduler_svc.core.plan import RequestOutput
from scheduler_svc.core.request import Request, Slo, WorkflowRef
from scheduler_svc.core.scheduler import SchedulerStats

# The full name of the service, for health and reflection.
SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name


def core_config_from_worker(info: worker_pb2.WorkerInfo, max_num_waiting: int,
                            rt_admission_control: bool = False) -> SchedulerConfig:
    """The core plans with exactly the worker's pool geometry and step budgets."""
    return SchedulerConfig(
        num_blocks=info.num_blocks,
        block_size=info.block_size,
        max_num_batched_tokens=info.max_num_batched_tokens,
        max_num_seqs=info.max_num_seqs,
        max_model_len=info.max_model_len,
        eos_token_ids=tuple(info.eos_token_ids),
        vocab_size=info.vocab_size,
        max_num_waiting=max_num_waiting,
        rt_admission_control=rt_admission_control,
    )


def slo_from_proto(slo: common_pb2.Slo) -> Slo:
    service_class = service_class_of(slo.service_class)
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


def _check_submit(sampling: SamplingParams, slo: Slo) -> None:
    """The gateway's promises that the core relies on (scheduler.proto SubmitRequest)."""
    def broken(what: str) -> InvalidRequestError:
        return InvalidRequestError(f"the Submit contract needs {what}: the gateway validates and fills it in")

    if sampling.max_tokens < 1:
        raise broken(f"sampling.max_tokens >= 1 (got {sampling.max_tokens})")
    if slo.service_class is ServiceClass.REAL_TIME:
        for name in ("ttft_ms", "tpot_ms"):
            value = getattr(slo, name)
            if value is None or not value > 0:
                raise broken(f"slo.{name} > 0 for a real-time request (got {value})")
    if slo.service_class is ServiceClass.DEADLINE and not (slo.deadline_ms is not None and slo.deadline_ms > 0):
        raise broken(f"slo.deadline_ms > 0 for a deadline request (got {slo.deadline_ms})")


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
    """A core Request from Submit; raises InvalidRequestError naming the bad field or the broken
    contract. A resubmitted request (`output_token_ids` set) comes with its known outputs, as a
    request moved from another core does: it continues after them."""
    if not message.request_id:
        raise InvalidRequestError("request_id is empty: the gateway must assign one")
    sampling, slo = sampling_from_proto(message.sampling), slo_from_proto(message.slo)
    _check_submit(sampling, slo)
    return Request(
        request_id=message.request_id,
        prompt_token_ids=tuple(message.prompt_token_ids),
        sampling=sampling,
        slo=slo,
        tenant=message.tenant,
        workflow=workflow_from_proto(message.workflow) if message.HasField("workflow") and message.workflow.workflow_id else None,
        arrival_s=message.arrival_unix_s if message.arrival_unix_s > 0 else clock.now(),
        output_token_ids=list(message.output_token_ids),
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
            service_class=int(new.service_class),
            num_output_tokens=new.num_output_tokens,
            trace_context=dict(new.trace_context) or contexts.get(new.request_id, {}),
            restore_from_checkpoint=new.num_computed_tokens > new.num_cached_tokens,
            num_computed_tokens=new.num_computed_tokens,
            num_cached_tokens=new.num_cached_tokens,
            prefix_salt=new.prefix_salt,
        ))
    for work in plan.scheduled:
        message.scheduled.append(worker_pb2.ScheduledRequest(
            request_id=work.request_id, num_tokens=work.num_tokens,
            num_computed_tokens=work.num_computed_tokens, sample=work.sample,
        ))
    return message


def result_from_proto(message: worker_pb2.StepResult) -> StepResult:
    error_code = StepErrorCode.NONE
    if message.error:
        try:
            error_code = StepErrorCode(message.error_code)
        except ValueError:  # a newer worker's code: still a failed step
            error_code = StepErrorCode.STEP_FAILED
        if error_code is StepErrorCode.NONE:  # a worker that predates the codes
            error_code = StepErrorCode.STEP_FAILED
    return StepResult(
        step_id=message.step_id,
        sampled=tuple((s.request_id, s.token_id) for s in message.sampled),
        timing=timing_from_proto(message.timing) if message.HasField("timing") else None,
        error=message.error,
        restore_failed_request_ids=tuple(message.restore_failed_request_ids),
        checkpoint_failed_request_ids=tuple(message.checkpoint_failed_request_ids),
        error_code=error_code,
        cached_block_hashes=tuple(message.cached_block_hashes),
        evicted_block_hashes=tuple(message.evicted_block_hashes),
        demoted_block_hashes=tuple(message.demoted_block_hashes),
        rejected_request_id=message.rejected_request_id,
    )


def output_to_event(output: RequestOutput) -> scheduler_pb2.TokenEvent:
    event = scheduler_pb2.TokenEvent(request_id=output.request_id, token_ids=output.new_token_ids)
    if output.finish_reason is not None:
        event.finish_reason = int(output.finish_reason)
        event.num_prompt_tokens = output.num_prompt_tokens
        event.num_preemptions = output.num_preemptions
        event.error_message = output.error_message
        event.num_cached_tokens = output.num_cached_tokens
    return event


def describe_request_to_pb() -> worker_pb2.DescribeRequest:
    return worker_pb2.DescribeRequest()


def step_cost_from_info(info: worker_pb2.WorkerInfo) -> LinearCostModel | None:
    """The step-time model the worker fitted at start, or None when it reported none."""
    if not info.HasField("step_cost"):
        return None
    c = info.step_cost
    return LinearCostModel(c.a_s, c.b_s_per_prefill_token, c.c_s_per_decode_seq, c.d_s_per_kv_token)


def block_bytes_from_info(info: worker_pb2.WorkerInfo) -> int:
    """Bytes of one KV block of the worker's pool (all layers, K and V); 0 if it did not say."""
    return int(info.bytes_per_block)


def worker_id_from_info(info: worker_pb2.WorkerInfo) -> str:
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
    model: worker_pb2.WorkerInfo | None,
) -> scheduler_pb2.SchedulerStats:
    """`GetStats`: queue counts summed over the cores; `model` is a worker's description (None
    while no worker has described itself)."""
    stats = scheduler_pb2.SchedulerStats(policy=policy, num_workers=num_workers, num_steps=num_steps)
    for core in core_stats:
        stats.num_waiting += core.num_waiting
        stats.num_running += core.num_running
        stats.num_preemptions += core.num_preemptions
        used = sum(core.kv_blocks_by_class.values())
        stats.num_kv_blocks_used += used
        stats.num_kv_blocks_total += used + core.num_free_blocks
    if model is not None:
        stats.model.CopyFrom(model)
    return stats
