"""The keyword options a worker's policy is built with, its cost model's prior among them.

A policy that prices steps (bros, tempo) starts its online cost model from, in order: the
`--cost-model` file, else the model the worker fitted on itself at start (`WorkerInfo.step_cost`),
else its built-in defaults. It refits online from the worker's step timings in every case.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scheduler_svc import convert
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.core.policy import COST_MODEL_POLICIES

if TYPE_CHECKING:
    from llmserve.v1 import worker_pb2

logger = logging.getLogger(__name__)


def policy_options(config: SchedulerServiceConfig, info: worker_pb2.WorkerInfo) -> dict[str, object]:
    """`config.policy_options`, plus where the cost model starts (module docstring)."""
    options = dict(config.policy_options)
    if config.policy not in COST_MODEL_POLICIES:
        return options
    if config.slack_bank_tpots:
        options.setdefault("slack_bank_tpots", config.slack_bank_tpots)
    worker = convert.worker_id_from_info(info)
    if config.cost_model:
        options["cost_model_path"] = config.cost_model
        logger.info("%s for worker %s: cost model prior from %s", config.policy, worker, config.cost_model)
        return options
    if "cost_model" in options or "cost_model_path" in options:  # code chose one
        return options
    prior = convert.step_cost_from_info(info)
    if prior is None:
        logger.info("%s for worker %s: no calibration reported, cost model prior: built-in defaults",
                    config.policy, worker)
        return options
    options["cost_model"] = prior
    logger.info("%s for worker %s: cost model prior from the worker's start-up calibration: %.2f ms + %.1f us/prefill "
                "token + %.1f us/decode seq + %.3f us/kv token", config.policy, worker, prior.a_s * 1e3,
                prior.b_s_per_prefill_token * 1e6, prior.c_s_per_decode_seq * 1e6, prior.d_s_per_kv_token * 1e6)
    return options
