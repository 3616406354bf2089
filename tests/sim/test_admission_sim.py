"""RT admission control in the simulator (issue 9's target 5), loose bounds: under overload it
rejects RT requests it predicts late, which lifts the attainment of all RT requests (rejections
counted as misses) and more so of the admitted ones; at a light load it rejects none, and its
TTFT forecast is close to what admitted requests get."""

from __future__ import annotations

import functools

import pytest

from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain
from scheduler_svc.sim.simulator import SimConfig, simulate
from tests.sim.helpers import TEST_COST, mixed_workload

CONFIG = dict(num_blocks=3000, max_num_batched_tokens=1024, max_num_seqs=64, max_model_len=4096)


@functools.cache
def _run(policy: str, rt_rate: float, admission: bool) -> dict:
    reqs = mixed_workload(seed=1, duration_s=15.0, rt_rate=rt_rate, be_rate=8.0)
    result = simulate(reqs, policy, TEST_COST, SimConfig(**CONFIG, rt_admission_control=admission))
    assert result.num_failed_steps == 0
    return summarize(result.records, result.stats, service_gain)


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_overload_rejects_and_the_admitted_meet_more(policy: str):
    off, on = _run(policy, 60.0, False), _run(policy, 60.0, True)
    assert off["rt_rejected"] == 0 and on["rt_rejected"] > 50
    assert on["rt_slo_attainment"] >= off["rt_slo_attainment"] + 0.05
    assert on["rt_slo_attainment_admitted"] > on["rt_slo_attainment"]


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_a_light_load_rejects_nothing(policy: str):
    off, on = _run(policy, 6.0, False), _run(policy, 6.0, True)
    assert on["rt_rejected"] == 0
    assert on["rt_slo_attainment"] == off["rt_slo_attainment"]
    assert on["rt_ttft_forecast_abs_err_p50_ms"] < 100.0  # SLOs are 400-800 ms here
