"""Small seeded workloads and a cheap cost model for simulator tests."""

from __future__ import annotations


from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.workload import WorkloadRequest
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec

# A small GPU-like step: 5 ms fixed, 50 us per prefill token, 0.1 ms per decode sequence.
TEST_COST = CostModel(0.005, 5e-5, 1e-4, 5e-8, name="test")


def mixed_workload(seed: int = 0, duration_s: float = 20.0, rt_rate: float = 6.0, be_rate: float = 1.5,
                   dl_rate: float = 1.0) -> list[WorkloadRequest]:
    """RT chat + deadline calls + BE batch work, synthetic and seeded (no traces needed)."""
    cfg = BuildConfig(duration_s=duration_s, seed=seed, slo=SloSpec(ttft_ms=400, tpot_ms=40, deadline_ms=4000, tiers=2),
                      max_prompt_tokens=2048, max_output_tokens=256)
    streams = [StreamSpec.parse(f"synthetic:real_time:rate={rt_rate},prompt_mean=300,output_mean=60"),
               StreamSpec.parse(f"synthetic:deadline:rate={dl_rate},prompt_mean=500,output_mean=80"),
               StreamSpec.parse(f"synthetic:best_effort:rate={be_rate},prompt_mean=1200,output_mean=150")]
    return build_workload(streams, cfg)


