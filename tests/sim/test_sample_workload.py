"""The committed sample workload is what the README's make_workload command builds from the
traces (so a clone without the traces runs the bench examples on the same requests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler_svc.sim.workloads.traces import AZURE_CONV, TraceMissingError, trace_path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "benchmarks" / "workloads" / "sample_rt_be.jsonl"


def test_the_sample_is_the_readme_workload(tmp_path: Path) -> None:
    try:
        trace_path(AZURE_CONV)
    except TraceMissingError as missing:
        pytest.skip(f"the traces are not here to rebuild the sample: {missing}")
    out = tmp_path / "rt_be.jsonl"
    result = subprocess.run([sys.executable, "-m", "scheduler_svc.sim.make_workload", "--duration", "120", "--seed", "1",
                             "--stream", "azure_conv:real_time:start=600", "--stream", "arxiv:best_effort:rate=2",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == SAMPLE.read_bytes()
    assert "make_workload --duration 120 --seed 1" in (ROOT / "README.md").read_text()
