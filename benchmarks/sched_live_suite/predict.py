"""The simulator's prediction of a live cell: the same scaled requests, the same policy, on a
simulated deployment with the live worker's geometry, its steps priced by the model that worker
fitted on itself at start (Describe's `step_cost`), and bros and tempo starting their online
model from that calibration, as the live scheduler does. Everything else is the simulator's
default, which is what the stack runs: 2 plans in flight, checkpoint preemption to a 2 GiB host
tier; it stops `DRAIN_S` after the last arrival, as the live run does. A fresh simulation per
cell (the live stack carries what its policy learnt from one cell to the next)."""

from __future__ import annotations

from scheduler_svc.core.policy import COST_MODEL_POLICIES
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain
from scheduler_svc.sim.simulator import SimConfig, simulate

from benchmarks.sched_live_suite.workloads import DEDICATED, DRAIN_S, Cell, cell_requests

_COEFFICIENTS = ("a_s", "b_s_per_prefill_token", "c_s_per_decode_seq", "d_s_per_kv_token")


def cost_model_of(info: dict) -> CostModel:
    """The simulator's cost model of a worker's description (`live_runs.describe`)."""
    if "step_cost" not in info:
        raise ValueError("the live worker reported no start-up calibration (was it started with --no-calibrate?)")
    step = info["step_cost"]
    return CostModel(*(float(step[k]) for k in _COEFFICIENTS), name="live-worker-calibration",
                     extra={k: v for k, v in step.items() if k not in _COEFFICIENTS})


def predict(cell: Cell, label: str, info: dict, slack_bank_tpots: float = 0.0) -> dict:
    """Simulated metrics of (cell, fcfs | bros | tempo | dedicated) on the worker `info` describes;
    `slack_bank_tpots` as the live scheduler's (bros and tempo only)."""
    cost = cost_model_of(info)
    config = SimConfig(num_blocks=info["num_blocks"], block_size=info["block_size"],
                       max_num_batched_tokens=info["max_num_batched_tokens"], max_num_seqs=info["max_num_seqs"],
                       max_model_len=info["max_model_len"],
                       kv_bytes_per_token=info["bytes_per_block"] // info["block_size"], cost_model_as_prior=True,
                       drain_limit_s=DRAIN_S,
                       policy_options={"slack_bank_tpots": slack_bank_tpots} if label in COST_MODEL_POLICIES else {})
    policy = "fcfs" if label == DEDICATED else label
    requests = cell_requests(cell, dedicated=label == DEDICATED)
    result = simulate(requests, policy, cost, config)
    metrics = summarize(result.records, result.stats, service_gain)
    metrics["num_unfinished"] = result.num_unfinished
    return metrics
