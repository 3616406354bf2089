"""The worker's start-up calibration: it times a grid of step shapes within its own limits
(`core/step_timer.py`) and fits the step-time model (`llmserve.step_cost`, the fit the simulator's
tools use too), which Describe reports so that the scheduler starts its online cost model from the
machine it runs on rather than from a profile of another."""

from __future__ import annotations

import logging
import time
from typing import Any

from llmserve.step_cost import fit_step_cost
from worker_svc.calibration_cache import read_calibration, write_calibration
from worker_svc.core.runner import StepRunner
from worker_svc.core.step_timer import start_up_grid, time_steps
from worker_svc.core.types import StepCalibration

logger = logging.getLogger(__name__)

REPEATS = 3  # runs per shape, the fastest kept: interference on a shared machine only adds time
MAX_SECONDS = 8.0  # the grid stops early past this (a loaded machine); ~3 s on an idle 2-core CPU


def calibrate(runner: StepRunner, worker_id: str) -> StepCalibration | None:
    """Times the grid on the runner's model and cache (before any block is leased) and fits it;
    None, with a warning, when too few shapes were timed to fit."""
    limits, model, cache = runner.limits, runner.model, runner.kv_cache
    shapes = start_up_grid(limits.max_num_batched_tokens, limits.max_num_seqs, model.config.max_model_len,
                           cache.num_blocks * cache.spec.block_size)
    start = time.perf_counter()
    samples = time_steps(model, cache, shapes, repeats=REPEATS, max_seconds=MAX_SECONDS)
    seconds = time.perf_counter() - start
    try:
        fit = fit_step_cost(samples)
    except ValueError as err:
        logger.warning("worker %s: start-up calibration failed after %.1fs (%s): the scheduler uses its own prior",
                       worker_id, seconds, err)
        return None
    c = fit.cost
    logger.info("worker %s: step-time model fitted at start from %d of %d step shapes in %.1fs: %.2f ms + "
                "%.1f us/prefill token + %.1f us/decode seq + %.3f us/kv token read (R^2 %.3f, median error %.1f%%)",
                worker_id, fit.num_samples, len(shapes), seconds, c.a_s * 1e3, c.b_s_per_prefill_token * 1e6,
                c.c_s_per_decode_seq * 1e6, c.d_s_per_kv_token * 1e6, fit.r2, fit.median_rel_error * 100)
    return StepCalibration(fit, seconds)


def calibrate_once(runner: StepRunner, worker_id: str, path: str, key: dict[str, Any]) -> StepCalibration | None:
    """The calibration kept in `path` for `key` (`calibration_cache.py`), else a fresh one, which is
    then kept there; no file: a fresh one."""
    if path:
        kept = read_calibration(path, key)
        if kept is not None:
            c = kept.fit.cost
            logger.info("worker %s: step-time model from an earlier start with the same settings (%s), not timed "
                        "again: %.2f ms + %.1f us/prefill token + %.1f us/decode seq + %.3f us/kv token read",
                        worker_id, path, c.a_s * 1e3, c.b_s_per_prefill_token * 1e6, c.c_s_per_decode_seq * 1e6,
                        c.d_s_per_kv_token * 1e6)
            return kept
    calibration = calibrate(runner, worker_id)
    if path and calibration is not None:
        write_calibration(path, key, calibration)
    return calibration
