"""`SimConfig()` simulates what `llmserve up` runs by default (plans in flight, checkpoint
preemption to a host tier of the store's size, bros's online cost model from the worker's own
step costs, as a self-calibrated worker reports them),
and the run reports the KV work it computed twice."""

from __future__ import annotations

from kvstore_svc.config import KvStoreConfig
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.core.cost_model import LinearCostModel
from scheduler_svc.core.policy.bros import BrosPolicy
from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain
from scheduler_svc.sim.simulator import SimConfig, Simulation
from scheduler_svc.sim.workload import WorkloadRequest
from tests.sim.helpers import TEST_COST, mixed_workload
from worker_svc.config import WorkerConfig


def test_defaults_are_the_services():
    service = SchedulerServiceConfig(worker_addrs=("127.0.0.1:1",))
    config = SimConfig()
    assert config.pipeline_depth == service.max_inflight_plans
    assert config.checkpoint_preemption is service.checkpoint_preemption is True
    assert config.prefix_cache is service.prefix_cache is True
    assert config.host_tier_bytes == KvStoreConfig().host_tier_bytes
    assert config.checkpoint_lazy is (WorkerConfig.__dataclass_fields__["checkpoint_lazy_blocks"].default > 0)
    # Each worker calibrates itself at start and the scheduler starts bros/tempo from that fit;
    # the simulated worker's "calibration" is its own cost model.
    assert config.cost_model_as_prior is WorkerConfig.__dataclass_fields__["calibrate"].default is True


def test_bros_refits_online_from_the_workers_cost_model_unless_asked_for_the_built_in_prior():
    reqs = mixed_workload(seed=1, duration_s=1.0)
    policy = Simulation(reqs, "bros", TEST_COST, SimConfig(num_blocks=500)).core.policy
    assert isinstance(policy, BrosPolicy) and policy.online_cost is not None
    assert policy.online_cost.prior == LinearCostModel(TEST_COST.a_s, TEST_COST.b_s_per_prefill_token,
                                                       TEST_COST.c_s_per_decode_seq, TEST_COST.d_s_per_kv_token)
    policy = Simulation(reqs, "bros", TEST_COST, SimConfig(num_blocks=500, cost_model_as_prior=False)).core.policy
    assert isinstance(policy, BrosPolicy) and policy.online_cost is not None
    assert policy.online_cost.prior == LinearCostModel()


def _pressure() -> list[WorkloadRequest]:
    """BE prompts that fill the pool, then RT arrivals that need their blocks."""
    be = [WorkloadRequest(f"be{i}", 0.001 * i, 600, 200, "best_effort") for i in range(12)]
    rt = [WorkloadRequest(f"rt{i}", 0.5 + 0.05 * i, 300, 30, "real_time", ttft_ms=500.0, tpot_ms=50.0)
          for i in range(20)]
    return be + rt


def _run(policy: str, **overrides: object):
    config = SimConfig(num_blocks=600, block_size=16, max_num_batched_tokens=1024, max_num_seqs=32,
                       max_model_len=2048, check_invariants_every=1, **overrides)  # type: ignore[arg-type]
    sim = Simulation(_pressure(), policy, TEST_COST, config)
    result = sim.run()
    assert result.num_unfinished == 0 and result.num_failed_steps == 0
    return sim, result, summarize(result.records, result.stats, service_gain)


def test_bros_checkpoints_be_victims_and_recomputes_nothing_while_the_tier_has_room():
    sim, _, metrics = _run("bros")
    assert sim.host_tier is not None and sim.core.checkpoints is not None
    assert metrics["be_preemptions"] > 0 and metrics["host_tier_checkpoints"] > 0
    assert metrics["host_tier_restores"] == metrics["host_tier_checkpoints"]
    assert metrics["be_recomputed_tokens"] == 0 and metrics["host_tier_failed_restores"] == 0
    assert metrics["host_tier_transfer_s"] > 0


def test_without_checkpointing_victims_are_recomputed_and_the_count_matches_the_book():
    _, _, off = _run("bros", checkpoint_preemption=False)
    assert off["be_preemptions"] > 0 and off["be_recomputed_tokens"] > 0
    assert "host_tier_checkpoints" not in off
    # fcfs preempts by recompute: the worker-side count equals the core's own book.
    sim, result, fcfs = _run("fcfs")
    assert fcfs["preemptions"] > 0
    assert result.recompute.total() == sim.core.checkpoints.stats.recomputed_tokens > 0  # type: ignore[union-attr]
    assert fcfs["recomputed_tokens"] == result.recompute.total()


def test_a_tiny_host_tier_evicts_and_the_failed_restores_count_as_recomputed():
    _, _, tiny = _run("bros", host_tier_bytes=600 * SimConfig().kv_bytes_per_token)
    assert tiny["host_tier_evictions"] + tiny["host_tier_refusals"] > 0
    assert tiny["be_recomputed_tokens"] > 0

