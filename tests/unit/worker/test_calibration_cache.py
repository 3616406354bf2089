"""A worker's start-up calibration kept for its next start (worker_svc/calibration_cache.py and
calibration.calibrate_once): reused only for the same settings, timed again otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmserve.step_cost import StepCost, StepCostFit
from worker_svc import calibration
from worker_svc.calibration_cache import read_calibration, write_calibration
from worker_svc.core.types import StepCalibration

KEY = {"model": "default", "threads": 1, "limits": [512, 64], "kv": [2912, 16]}
MEASURED = StepCalibration(StepCostFit(StepCost(0.00578, 5.229e-4, 8.722e-4, 5.073e-6), 11, 0.979, 0.051), 3.3)


def test_a_kept_calibration_reads_back_equal(tmp_path: Path) -> None:
    path = str(tmp_path / "worker-0.calibration.json")
    write_calibration(path, KEY, MEASURED)
    assert read_calibration(path, KEY) == MEASURED
    assert [p.name for p in tmp_path.iterdir()] == ["worker-0.calibration.json"]  # no temporary left


def test_other_settings_or_no_file_time_the_grid_again(tmp_path: Path) -> None:
    path = str(tmp_path / "c.json")
    assert read_calibration(path, KEY) is None
    write_calibration(path, KEY, MEASURED)
    assert read_calibration(path, {**KEY, "threads": 2}) is None
    assert read_calibration(path, {k: v for k, v in KEY.items() if k != "kv"}) is None


@pytest.mark.parametrize("content", ["{not json", '{"format": 1, "key": %s, "seconds": 1}', "[]"])
def test_a_broken_file_is_ignored(tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.json"
    path.write_text(content.replace("%s", '{"model": "default", "threads": 1, "limits": [512, 64], "kv": [2912, 16]}'))
    with caplog.at_level(logging.WARNING):
        assert read_calibration(str(path), KEY) is None


def test_calibrate_once_times_only_the_first_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[str] = []

    def fake_calibrate(runner: object, worker_id: str) -> StepCalibration:
        timed.append(worker_id)
        return MEASURED

    monkeypatch.setattr(calibration, "calibrate", fake_calibrate)
    path = str(tmp_path / "worker-0.calibration.json")
    assert calibration.calibrate_once(object(), "worker-0", path, KEY) == MEASURED  # type: ignore[arg-type]
    assert calibration.calibrate_once(object(), "worker-0", path, KEY) == MEASURED  # type: ignore[arg-type]
    assert timed == ["worker-0"]
    assert calibration.calibrate_once(object(), "worker-0", path, {**KEY, "threads": 2}) == MEASURED  # type: ignore[arg-type]
    assert timed == ["worker-0", "worker-0"]
    assert calibration.calibrate_once(object(), "worker-0", "", KEY) == MEASURED  # type: ignore[arg-type]
    assert timed == ["worker-0"] * 3  # no file: every start times the grid
