"""convert.py (proto ↔ domain, with field-naming errors) and WorkerConfig / flag parsing."""

from __future__ import annotations

import argparse

import pytest

from llmserve.settings import add_settings, config_from_args
from llmserve.v1 import common_pb2, kvstore_pb2, worker_pb2
from worker_svc import convert
from worker_svc.config import WorkerConfig
from worker_svc.core.types import WorkerDescription
from llmserve.plan import Holding, LeaseSync, PoolDeclaration, StepErrorCode, StepResult, SyncReply
from llmserve.plan_book import PlanError
from llmserve.types import ServiceClass, StepTiming


def test_plan_from_proto_defaults_and_fields() -> None:
    plan = worker_pb2.BatchPlan(
        step_id=5,
        new_requests=[worker_pb2.NewRequest(request_id="r", token_ids=[1, 2, 3], num_prompt_tokens=2,
                                            service_class=common_pb2.SERVICE_CLASS_REAL_TIME, num_output_tokens=1,
                                            sampling=common_pb2.SamplingParams(top_k=4, seed=9),
                                            trace_context={"traceparent": "00-abc"})],
        scheduled=[worker_pb2.ScheduledRequest(request_id="r", num_tokens=3, num_computed_tokens=0, sample=True)],
        finished_request_ids=["x"], preempted_request_ids=["y"],
    )
    got = convert.plan_from_proto(plan)
    new = got.new_requests[0]
    assert (got.step_id, got.finished_request_ids, got.preempted_request_ids) == (5, ("x",), ("y",))
    assert (new.token_ids, new.num_prompt_tokens, new.service_class, new.num_output_tokens) == ((1, 2, 3), 2, ServiceClass.REAL_TIME, 1)
    # Unset temperature and top_p mean 1.0 (the proto's documented defaults), not 0.
    assert (new.sampling.temperature, new.sampling.top_p, new.sampling.top_k, new.sampling.seed) == (1.0, 1.0, 4, 9)
    assert new.trace_context == (("traceparent", "00-abc"),)
    assert got.scheduled[0].sample and got.scheduled[0].num_tokens == 3


def test_a_missing_seed_stays_unset_for_the_plan_book_to_derive() -> None:
    # The book seeds such a request from its id (llmserve.types.derive_seed, tests/unit/plan_book/test_book.py).
    assert convert.sampling_from_proto(common_pb2.SamplingParams(max_tokens=3)).seed is None
    assert convert.sampling_from_proto(common_pb2.SamplingParams(max_tokens=3, seed=0)).seed == 0


def test_sampling_values_pass_through_unchecked() -> None:
    """Client input is the gateway's to validate; the worker takes the scheduler's plan as given."""
    s = convert.sampling_from_proto(common_pb2.SamplingParams(max_tokens=5, temperature=0.5, top_p=0.25, top_k=7,
                                                              stop_token_ids=[9], ignore_eos=True))
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.stop_token_ids, s.ignore_eos) == (5, 0.5, 0.25, 7, (9,), True)


def test_unknown_service_class_is_a_plan_error() -> None:
    plan = worker_pb2.BatchPlan(new_requests=[worker_pb2.NewRequest(request_id="r", token_ids=[1], num_prompt_tokens=1,
                                                                    service_class=42)])
    with pytest.raises(PlanError, match="service_class 42"):
        convert.plan_from_proto(plan)
    plan.new_requests[0].service_class = common_pb2.SERVICE_CLASS_UNSPECIFIED
    with pytest.raises(PlanError, match="service_class 0"):
        convert.plan_from_proto(plan)


def test_a_resume_past_a_hit_keeps_both_counts_and_its_restore_stream_starts_at_the_hit() -> None:
    new = worker_pb2.NewRequest(request_id="r", token_ids=list(range(1, 22)), num_prompt_tokens=18,
                                service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT, restore_from_checkpoint=True,
                                num_computed_tokens=20, num_cached_tokens=16)
    [domain] = convert.plan_from_proto(worker_pb2.BatchPlan(new_requests=[new])).new_requests
    assert (domain.num_computed_tokens, domain.num_cached_tokens) == (20, 16)
    chunks = [kvstore_pb2.KvChunk(block_index=4, data=b"ab", offset=0, dtype="float32", shape=[1]),
              kvstore_pb2.KvChunk(block_index=5, data=b"cd", offset=0, final=True, num_tokens=20, dtype="float32",
                                  shape=[1])]
    restored = convert.restored_from_chunks(chunks, first_block=4)
    assert (restored.first_block, restored.blocks, restored.num_tokens) == (4, (b"ab", b"cd"), 20)
    with pytest.raises(ValueError, match="out of order"):
        convert.restored_from_chunks(chunks)  # asked from block 0, the stream starts at 4


def test_sync_register_and_step_result() -> None:
    sync = LeaseSync(4, ("old",), (Holding("r", ServiceClass.BEST_EFFORT, (9, 4), (("traceparent", "t"),)),),
                     (3,), reserve_low=2, reserve_high=1)
    req = convert.sync_request("w0", sync)
    assert (req.worker_id, req.sequence, list(req.release_request_ids), list(req.unreserve_block_ids)) == (
        "w0", 4, ["old"], [3])
    assert (req.reserve_low, req.reserve_high) == (2, 1)
    held = req.assignments[0]
    assert (held.service_class, list(held.block_ids), dict(held.trace_context)) == (
        common_pb2.SERVICE_CLASS_BEST_EFFORT, [9, 4], {"traceparent": "t"})
    reply = convert.sync_reply_from_proto(kvstore_pb2.SyncResponse(sequence=4, reserved_low_block_ids=[0, 1],
                                                                   reserved_high_block_ids=[15], num_released=2))
    assert reply == SyncReply(4, (0, 1), (15,), 2)
    description = WorkerDescription("w0", "m", 96, 256, (2,), 4, 16, 64, "float32", "cpu", 64, 8)
    declared = convert.register_pool_request(description, PoolDeclaration(
        (Holding("a", ServiceClass.REAL_TIME, (0, 1)),), (2,), (15, 14)))
    assert (declared.num_blocks, declared.held[0].request_id, list(declared.held[0].block_ids)) == (16, "a", [0, 1])
    assert (list(declared.reserved_low_block_ids), list(declared.reserved_high_block_ids)) == ([2], [15, 14])
    assert not convert.register_pool_request(description).held
    out = StepResult(3, (("r", 11),), StepTiming(forward_ns=10, sample_ns=2, num_prefill_tokens=4,
                                                 num_decode_seqs=1, num_kv_tokens_read=20, restore_ns=1))
    result = convert.step_result(out)
    convert.set_timing(result, out, kv_ns=5, total_ns=30, plan_decode_ns=3, encode_ns=2, kv_rpcs=1, restore_fetch_ns=4)
    t = result.timing
    assert (result.step_id, result.sampled[0].token_id, t.kv_ns, t.total_ns, t.restore_ns) == (3, 11, 5, 30, 5)
    assert (t.forward_ns, t.num_kv_tokens_read, t.plan_decode_ns, t.encode_ns, t.kv_rpcs, result.error) == (
        10, 20, 3, 2, 1, "")
    assert result.error_code == worker_pb2.STEP_ERROR_CODE_UNSPECIFIED
    failed = convert.error_result(4, StepErrorCode.KV_UNAVAILABLE, "store down", kv_ns=7)
    assert (failed.error, failed.error_code, failed.timing.kv_ns) == ("store down", worker_pb2.STEP_ERROR_CODE_KV_UNAVAILABLE, 7)


def test_flags_and_env_fallbacks(monkeypatch) -> None:
    monkeypatch.setenv("LLMSERVE_NUM_KV_BLOCKS", "77")
    parser = argparse.ArgumentParser()
    add_settings(parser, WorkerConfig)
    args = parser.parse_args(["--worker-id", "w3", "--load-format", "dummy", "--block-size", "32", "--no-warmup"])
    config = config_from_args(WorkerConfig, args)
    assert (config.worker_id, config.load_format, config.block_size, config.num_kv_blocks, config.warmup) == (
        "w3", "dummy", 32, 77, False)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"block_size": 12}, "power of two"), ({"num_kv_blocks": 4, "kv_cache_memory_gb": 1.0}, "not both"),
     ({"max_num_seqs": -1}, "max-num-seqs"), ({"worker_id": ""}, "worker-id"),
     ({"kv_reserve_blocks": -2}, "kv-reserve-blocks"), ({"kv_sync_interval_s": -1.0}, "kv-sync-interval-s")],
)
def test_config_rejects_bad_values(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerConfig(**kwargs)


def test_auto_step_limits_follow_the_device() -> None:
    import torch

    from worker_svc.build import resolve_step_limits
    from worker_svc.core.runner import RunnerLimits

    assert resolve_step_limits(WorkerConfig(), torch.device("cpu")) == RunnerLimits(512, 64)
    assert resolve_step_limits(WorkerConfig(), torch.device("cuda")) == RunnerLimits(2048, 128)
    given = WorkerConfig(max_num_batched_tokens=96, max_num_seqs=3)
    assert resolve_step_limits(given, torch.device("cuda")) == RunnerLimits(96, 3)
