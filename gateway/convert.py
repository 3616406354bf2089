"""The only module that sees both protobuf messages and gateway domain types."""

from __future__ import annotations

from collections.abc import Sequence

from llmserve.v1 import common_pb2, gateway_pb2, scheduler_pb2, worker_pb2

from gateway.core.types import (
    Delta,
    SchedulerSnapshot,
    Slo,
    FinishReason,
    GenerateInput,
    ModelLimits,
    PreparedRequest,
    SamplingInput,
    SloInput,
    Usage,
    Workflow,
)

# The full name of the service, for health and reflection.
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


def _optional(msg: object, name: str) -> float | int | None:
    return getattr(msg, name) if msg.HasField(name) else None  # type: ignore[attr-defined]


def generate_input_from_pb(req: gateway_pb2.GenerateRequest) -> GenerateInput:
    """Unset optional fields become None; the service class stays a raw int (unknown values are
    the validator's to report)."""
    prompt = req.WhichOneof("prompt")
    s, slo = req.sampling, req.slo
    workflow = None
    if req.HasField("workflow"):
        w = req.workflow
        workflow = Workflow(
            workflow_id=w.workflow_id,
            application=w.application,
            stage=w.stage,
            depends_on=tuple(w.depends_on),
            workflow_deadline_ms=_optional(w, "workflow_deadline_ms"),  # type: ignore[arg-type]
            workflow_start_unix_s=_optional(w, "workflow_start_unix_s"),  # type: ignore[arg-type]
        )
    return GenerateInput(
        request_id=req.request_id,
        text=req.text if prompt == "text" else None,
        token_ids=tuple(req.token_ids.ids) if prompt == "token_ids" else None,
        sampling=SamplingInput(
            max_tokens=s.max_tokens,
            temperature=_optional(s, "temperature"),  # type: ignore[arg-type]
            top_p=_optional(s, "top_p"),  # type: ignore[arg-type]
            top_k=s.top_k,
            seed=_optional(s, "seed"),  # type: ignore[arg-type]
            stop=tuple(s.stop),
            stop_token_ids=tuple(s.stop_token_ids),
            ignore_eos=s.ignore_eos,
        ),
        slo=SloInput(
            service_class=int(slo.service_class),
            ttft_ms=_optional(slo, "ttft_ms"),  # type: ignore[arg-type]
            tpot_ms=_optional(slo, "tpot_ms"),  # type: ignore[arg-type]
            deadline_ms=_optional(slo, "deadline_ms"),  # type: ignore[arg-type]
            priority=slo.priority,
        ),
        tenant=req.tenant,
        workflow=workflow,
        apply_chat_template=req.apply_chat_template,
    )


def submit_to_pb(req: PreparedRequest, output_token_ids: Sequence[int] = ()) -> scheduler_pb2.SubmitRequest:
    """Every sampling default is explicit on the wire; stop strings stay at the gateway.
    `output_token_ids`: the tokens the request already produced, when it is resubmitted."""
    s = req.sampling
    msg = scheduler_pb2.SubmitRequest(
        request_id=req.request_id,
        prompt_token_ids=req.prompt_token_ids,
        output_token_ids=output_token_ids,
        sampling=common_pb2.SamplingParams(
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed,
            stop_token_ids=s.stop_token_ids,
            ignore_eos=s.ignore_eos,
        ),
        slo=slo_to_pb(req.slo),
        tenant=req.tenant,
        arrival_unix_s=req.arrival_unix_s,
    )
    if req.workflow is not None:
        w = req.workflow
        msg.workflow.workflow_id = w.workflow_id
        msg.workflow.application = w.application
        msg.workflow.stage = w.stage
        msg.workflow.depends_on.extend(w.depends_on)
        if w.workflow_deadline_ms is not None:
            msg.workflow.workflow_deadline_ms = w.workflow_deadline_ms
        if w.workflow_start_unix_s is not None:
            msg.workflow.workflow_start_unix_s = w.workflow_start_unix_s
    return msg


def finish_reason_from_pb(value: int) -> FinishReason:
    """A finish reason this gateway does not know is treated as an error."""
    try:
        return FinishReason(value)
    except ValueError:
        return FinishReason.ERROR


def usage_to_pb(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        ttft_ms=usage.ttft_ms,
        mean_tpot_ms=usage.mean_tpot_ms,
        slo_attained=usage.slo_attained,
        cached_prompt_tokens=usage.cached_prompt_tokens,
    )


def slo_to_pb(slo: Slo) -> common_pb2.Slo:
    msg = common_pb2.Slo(service_class=int(slo.service_class), priority=slo.priority)
    for name in ("ttft_ms", "tpot_ms", "deadline_ms"):
        value = getattr(slo, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def response_to_pb(request_id: str, delta: Delta, slo: Slo | None = None) -> gateway_pb2.GenerateResponse:
    """One chunk; the last (finished) one carries usage and the SLO the request ran under."""
    msg = gateway_pb2.GenerateResponse(
        request_id=request_id, text=delta.text, token_ids=delta.token_ids, finish_reason=int(delta.finish_reason)
    )
    if delta.usage is not None:
        msg.usage.CopyFrom(usage_to_pb(delta.usage))
    if delta.finished and slo is not None:
        msg.slo.CopyFrom(slo_to_pb(slo))
    return msg


def limits_from_worker_info(info: worker_pb2.WorkerInfo) -> ModelLimits:
    return ModelLimits(model_name=info.model_name, max_context_length=info.max_model_len, vocab_size=info.vocab_size)


def model_info_to_pb(
    stats: scheduler_pb2.SchedulerStats, has_chat_template: bool, served: worker_pb2.WorkerInfo
) -> gateway_pb2.ModelInfo:
    """The scheduler's stats; with no worker right now, `served` (the model served so far) describes the model."""
    m = stats.model if stats.model.vocab_size else served
    return gateway_pb2.ModelInfo(
        model_name=m.model_name,
        max_context_length=m.max_model_len,
        vocab_size=m.vocab_size,
        eos_token_ids=m.eos_token_ids,
        has_chat_template=has_chat_template,
        num_workers=stats.num_workers,
        kv_block_size=m.block_size,
        scheduling_policy=stats.policy,
    )


def token_event_from_pb(event: scheduler_pb2.TokenEvent) -> tuple[Sequence[int], FinishReason, str]:
    """A scheduler token event: its new token ids, its finish reason and its error message."""
    return event.token_ids, finish_reason_from_pb(event.finish_reason), event.error_message


def cached_tokens_from_pb(event: scheduler_pb2.TokenEvent) -> int:
    """Prompt tokens the prefix cache served (on the last event; 0 on the others)."""
    return event.num_cached_tokens


def described_model_from_pb(stats: scheduler_pb2.SchedulerStats) -> worker_pb2.WorkerInfo | None:
    """The model the scheduler's workers described, or None while none has (no vocabulary or context)."""
    return stats.model if stats.model.vocab_size and stats.model.max_model_len else None


def snapshot_from_pb(stats: scheduler_pb2.SchedulerStats, taken_s: float) -> SchedulerSnapshot:
    """The figures /metrics exports as vllm:* gauges, summed over the scheduler's workers."""
    return SchedulerSnapshot(
        num_waiting=stats.num_waiting,
        num_running=stats.num_running,
        kv_blocks_used=stats.num_kv_blocks_used,
        kv_blocks_total=stats.num_kv_blocks_total,
        block_size=stats.model.block_size,
        num_workers=stats.num_workers,
        taken_s=taken_s,
    )


def get_stats_request_to_pb() -> scheduler_pb2.GetStatsRequest:
    return scheduler_pb2.GetStatsRequest()


def cancel_id_from_pb(request: gateway_pb2.CancelRequest) -> str:
    return request.request_id


def cancel_response_to_pb(cancelled: bool) -> gateway_pb2.CancelResponse:
    return gateway_pb2.CancelResponse(cancelled=cancelled)


def abort_request_to_pb(request_id: str) -> scheduler_pb2.AbortRequest:
    return scheduler_pb2.AbortRequest(request_id=request_id)
