"""A worker's start-up calibration kept in a file for its next start (`--calibration-file`).

`llmserve up` gives each worker a file for the life of the stack, so a restarted worker reports the
step-time model its first start measured instead of timing the grid again: the machine and the
settings have not changed, and a restart happens while the other workers serve, which makes the
timing slower (8 s, the grid's time cap, against 3 s) and the fit worse (a 58 ms intercept against
6 ms in the 200-stream soak, issue 11). The file names the settings it was measured with (`key`);
a start with other settings, or a file that cannot be read, times the grid as usual."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from llmserve.step_cost import StepCost, StepCostFit
from worker_svc.core.types import StepCalibration

logger = logging.getLogger(__name__)

FORMAT = 1  # the file's layout; another one is ignored


def read_calibration(path: str, key: dict[str, Any]) -> StepCalibration | None:
    """The calibration in `path` if it was measured with `key`; None if there is none (or it is
    unreadable, with a warning)."""
    try:
        with open(path) as file:
            saved = json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("start-up calibration file %s unreadable (%s): timing the grid again", path, err)
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("key") != key:
        return None
    try:
        fit = saved["fit"]
        cost = StepCost(**fit["cost"])
        return StepCalibration(StepCostFit(cost, int(fit["num_samples"]), float(fit["r2"]),
                                           float(fit["median_rel_error"])), float(saved["seconds"]))
    except (KeyError, TypeError, ValueError) as err:
        logger.warning("start-up calibration file %s malformed (%s): timing the grid again", path, err)
        return None


def write_calibration(path: str, key: dict[str, Any], calibration: StepCalibration) -> None:
    """Writes `calibration` for `key` to `path` (whole or not at all: a temporary file renamed)."""
    fit = calibration.fit
    saved = {"format": FORMAT, "key": key, "seconds": calibration.seconds,
             "fit": {"cost": dataclasses.asdict(fit.cost),
                     "num_samples": fit.num_samples, "r2": fit.r2, "median_rel_error": fit.median_rel_error}}
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w") as file:
            json.dump(saved, file)
        os.replace(temporary, path)
    except OSError as err:
        logger.warning("could not keep the start-up calibration in %s (%s): a restart will time the grid again",
                       path, err)

