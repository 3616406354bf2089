"""The only module that sees both protobuf and the worker's domain types (the shared plan
messages of `llmserve.plan`). Plans are checked against the contract here only as far as the
protobuf cannot carry a domain value (an unknown class); the plan book checks the rest, and
sampling values are the gateway's to validate."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from llmserve.convert import sampling_from_proto, timing_to_proto
from llmserve.plan import (
    BatchPlan,
    Holding,
    LeaseSync,
    NewRequest,
    PoolDeclaration,
    ScheduledRequest,
    StepErrorCode,
    StepResult,
    SyncReply,
)
from llmserve.plan_book import PlanError
from llmserve.types import service_class_of
from llmserve.v1 import kvstore_pb2, worker_pb2

from worker_svc.core.checkpoint import BlockFormat, CheckpointWrite, RestoredKv
from worker_svc.core.types import WorkerDescription

# The full name of the service, for health and reflection.
SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name


def step_id_from_proto(plan: worker_pb2.BatchPlan) -> int:
    """The step a plan asks for, readable even when the rest of the plan is not (its error result names it)."""
    return plan.step_id


def plan_from_proto(plan: worker_pb2.BatchPlan) -> BatchPlan:
    """Raises PlanError naming the field when a value has no domain meaning."""
    return BatchPlan(
        step_id=plan.step_id,
        new_requests=tuple(_new_request(n) for n in plan.new_requests),
        scheduled=tuple(
            ScheduledRequest(s.request_id, s.num_tokens, s.num_computed_tokens, s.sample) for s in plan.scheduled
        ),
        finished_request_ids=tuple(plan.finished_request_ids),
        preempted_request_ids=tuple(plan.preempted_request_ids),
        checkpoint_request_ids=tuple(plan.checkpoint_request_ids),
        drop_checkpoint_request_ids=tuple(plan.drop_checkpoint_request_ids),
    )


def _new_request(new: worker_pb2.NewRequest) -> NewRequest:
    rid = new.request_id
    service_class = service_class_of(new.service_class)
    if service_class is None:
        raise PlanError(f"new request {rid}: unknown service_class {new.service_class}", rid)
    return NewRequest(
        request_id=rid,
        token_ids=tuple(new.token_ids),
        num_prompt_tokens=new.num_prompt_tokens,
        sampling=sampling_from_proto(new.sampling),
        service_class=service_class,
        num_output_tokens=new.num_output_tokens,
        num_computed_tokens=new.num_computed_tokens if new.restore_from_checkpoint else new.num_cached_tokens,
        trace_context=tuple(sorted(new.trace_context.items())),
        num_cached_tokens=new.num_cached_tokens,
        prefix_salt=new.prefix_salt,
    )


def step_result(result: StepResult, checkpoint_failed: Sequence[str] = ()) -> worker_pb2.StepResult:
    """The runner's result, without its timing yet (`set_timing`), and the checkpoints the store
    refused since the previous result."""
    return worker_pb2.StepResult(
        step_id=result.step_id,
        restore_failed_request_ids=list(result.restore_failed_request_ids),
        checkpoint_failed_request_ids=list(checkpoint_failed),
        sampled=[worker_pb2.SampledToken(request_id=rid, token_id=token) for rid, token in result.sampled],
    )


def set_prefix_report(message: worker_pb2.StepResult, report: Sequence[Sequence[int]]) -> None:
    """Adds the prefix cache's report (hashes cached, evicted, demoted to the host tier) to any result."""
    cached, evicted, *demoted = report
    message.cached_block_hashes.extend(cached)
    message.evicted_block_hashes.extend(evicted)
    if demoted:
        message.demoted_block_hashes.extend(demoted[0])


def set_timing(message: worker_pb2.StepResult, result: StepResult, **shell: int) -> None:
    """Sets the result's timing: the runner's plus what the shell measured (`kv_ns`, `total_ns`,
    `plan_decode_ns`, `encode_ns`, `kv_rpcs`, and `restore_fetch_ns`, added to `restore_ns`)."""
    t = result.timing
    assert t is not None, "a successful step has a timing"
    fetch_ns = shell.pop("restore_fetch_ns", 0)
    message.timing.CopyFrom(timing_to_proto(dataclasses.replace(t, restore_ns=t.restore_ns + fetch_ns, **shell)))


def error_result(step_id: int, code: StepErrorCode, message: str, kv_ns: int = 0,
                 total_ns: int = 0, rejected_request_id: str = "") -> worker_pb2.StepResult:
    """A failed step: its code, the message saying what went wrong, the request at fault when
    the plan's checks named one, and the times it took."""
    return worker_pb2.StepResult(step_id=step_id, error=message, error_code=int(code),
                                 timing=worker_pb2.StepTiming(kv_ns=kv_ns, total_ns=total_ns),
                                 rejected_request_id=rejected_request_id)


def worker_info(d: WorkerDescription) -> worker_pb2.WorkerInfo:
    info = worker_pb2.WorkerInfo(
        worker_id=d.worker_id,
        model_name=d.model_name,
        vocab_size=d.vocab_size,
        max_model_len=d.max_model_len,
        eos_token_ids=list(d.eos_token_ids),
        block_size=d.block_size,
        num_blocks=d.num_blocks,
        bytes_per_block=d.bytes_per_block,
        dtype=d.dtype,
        device=d.device,
        max_num_batched_tokens=d.max_num_batched_tokens,
        max_num_seqs=d.max_num_seqs,
    )
    if d.step_cost is not None:
        fit, cost = d.step_cost.fit, d.step_cost.fit.cost
        info.step_cost.CopyFrom(worker_pb2.StepCostModel(
            a_s=cost.a_s, b_s_per_prefill_token=cost.b_s_per_prefill_token, c_s_per_decode_seq=cost.c_s_per_decode_seq,
            d_s_per_kv_token=cost.d_s_per_kv_token, num_samples=fit.num_samples, r2=fit.r2,
            median_rel_error=fit.median_rel_error, calibration_s=d.step_cost.seconds))
    return info


def register_pool_request(d: WorkerDescription,
                          declaration: PoolDeclaration | None = None) -> kvstore_pb2.RegisterPoolRequest:
    """The worker's pool; with a `declaration`, everything it holds (a store that lost the pool)."""
    message = kvstore_pb2.RegisterPoolRequest(
        worker_id=d.worker_id, num_blocks=d.num_blocks, block_size=d.block_size, bytes_per_block=d.bytes_per_block
    )
    if declaration is not None:
        message.held.extend(_holding(h) for h in declaration.held)
        message.reserved_low_block_ids.extend(declaration.reserved_low)
        message.reserved_high_block_ids.extend(declaration.reserved_high)
    return message


def lease_ttl_s(reply: kvstore_pb2.RegisterPoolResponse) -> float:
    return reply.lease_ttl_ms / 1000.0


def store_incarnation(reply: kvstore_pb2.RegisterPoolResponse) -> str:
    return reply.store_incarnation


def _holding(h: Holding) -> kvstore_pb2.Holding:
    return kvstore_pb2.Holding(request_id=h.request_id, service_class=int(h.service_class), block_ids=h.block_ids,
                               trace_context=dict(h.trace_context))


def sync_request(worker_id: str, sync: LeaseSync) -> kvstore_pb2.SyncRequest:
    return kvstore_pb2.SyncRequest(
        worker_id=worker_id, sequence=sync.sequence, release_request_ids=sync.release_request_ids,
        assignments=[_holding(h) for h in sync.assignments], unreserve_block_ids=sync.unreserve_block_ids,
        reserve_low=sync.reserve_low, reserve_high=sync.reserve_high,
    )


def sync_reply_from_proto(reply: kvstore_pb2.SyncResponse) -> SyncReply:
    return SyncReply(reply.sequence, tuple(reply.reserved_low_block_ids), tuple(reply.reserved_high_block_ids),
                     reply.num_released)


def heartbeat_request(worker_id: str) -> kvstore_pb2.HeartbeatRequest:
    return kvstore_pb2.HeartbeatRequest(worker_id=worker_id)


def heartbeat_known(reply: kvstore_pb2.HeartbeatResponse) -> bool:
    """False when the store no longer knows the worker's pool (it restarted, or the leases expired)."""
    return reply.known


def checkpoint_chunks(write: CheckpointWrite, fmt: BlockFormat, max_chunk_bytes: int) -> Iterator[kvstore_pb2.KvChunk]:
    """One Checkpoint call's chunks: each block split under `max_chunk_bytes`; the last chunk
    sets `final` (and `num_tokens`) when the write is final (a data-less chunk if it has no block)."""
    shape = list(fmt.shape)
    last = len(write.blocks) - 1
    for i, block in enumerate(write.blocks):
        view = memoryview(block)
        for offset in range(0, len(block), max_chunk_bytes):
            end = min(offset + max_chunk_bytes, len(block))
            final = write.final and i == last and end == len(block)
            yield kvstore_pb2.KvChunk(request_id=write.request_id, block_index=write.first_block_index + i,
                                      data=bytes(view[offset:end]), offset=offset, block_bytes=fmt.nbytes,
                                      dtype=fmt.dtype, shape=shape, num_tokens=write.num_tokens if final else 0,
                                      final=final)
    if write.final and not write.blocks:
        yield kvstore_pb2.KvChunk(request_id=write.request_id, block_index=max(0, write.first_block_index - 1),
                                  block_bytes=fmt.nbytes, dtype=fmt.dtype, shape=shape,
                                  num_tokens=write.num_tokens, final=True)


def restore_request(request_id: str, fmt: BlockFormat, first_block: int = 0) -> kvstore_pb2.RestoreRequest:
    """Asks for a checkpoint in this worker's cache format (the store refuses another), from
    block `first_block` on (those before it are the request's prefix hit)."""
    return kvstore_pb2.RestoreRequest(request_id=request_id, dtype=fmt.dtype, shape=list(fmt.shape),
                                      first_block_index=first_block)


def restored_from_chunks(chunks: Sequence[kvstore_pb2.KvChunk], first_block: int = 0) -> RestoredKv:
    """Reassembles a Restore stream asked from block `first_block` (blocks in order, each in
    offset order). Raises ValueError for a stream that is empty, out of order or unfinished."""
    if not chunks:
        raise ValueError("the Restore stream carried no chunk")
    blocks: list[bytearray] = []
    for chunk in chunks:
        if chunk.block_index == first_block + len(blocks) and chunk.offset == 0:
            blocks.append(bytearray())
        if chunk.block_index != first_block + len(blocks) - 1 or chunk.offset != len(blocks[-1]):
            raise ValueError(f"Restore chunk of block {chunk.block_index} at offset {chunk.offset} is out of order")
        blocks[-1] += chunk.data
    last = chunks[-1]
    if not last.final:
        raise ValueError("the Restore stream ended without its final chunk")
    return RestoredKv(last.dtype, tuple(last.shape), last.num_tokens, tuple(bytes(b) for b in blocks), first_block)
