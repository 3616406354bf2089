"""The workload JSONL format, the arrival processes and the SLO tiers."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from scheduler_svc.sim.workload import WorkloadError, WorkloadRequest, read_workload, write_workload
from scheduler_svc.sim.workloads.arrivals import arrival_times
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec


def _rt(rid: str, t: float, **kw: object) -> WorkloadRequest:
    return WorkloadRequest(rid, t, 10, 5, "real_time", ttft_ms=100.0, tpot_ms=10.0, **kw)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field(tmp_path):
    reqs = [
        _rt("a", 0.5, tenant="chat", priority=3),
        WorkloadRequest("b", 0.1, 7, 9, "deadline", deadline_ms=500.0, workflow_id="w", stage=0,
                        application="coding", workflow_deadline_ms=900.0),
        WorkloadRequest("c", 0.2, 7, 9, "deadline", deadline_ms=500.0, workflow_id="w", depends_on=("b",),
                        think_s=0.25, stage=1, workflow_deadline_ms=900.0),
        WorkloadRequest("d", 0.3, 1, 1, "best_effort"),
    ]
    path = tmp_path / "w.jsonl"
    assert write_workload(path, reqs) == 4
    back = read_workload(path)
    assert [r.id for r in back] == ["b", "c", "d", "a"]  # sorted by arrival
    assert {r.id: r for r in back} == {r.id: r for r in reqs}
    # Optional fields that are unset are left out of the file.
    first = json.loads(path.read_text().splitlines()[2])
    assert first == {"id": "d", "arrival_s": 0.3, "class": "best_effort", "prompt_tokens": 1, "output_tokens": 1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "x", "arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "class": "chat"}, "'class' must be"),
        ({"id": "x", "arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "class": "real_time"}, "ttft_ms"),
        ({"id": "x", "arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "class": "deadline"}, "deadline_ms"),
        ({"id": "x", "arrival_s": 0, "prompt_tokens": 0, "output_tokens": 1, "class": "best_effort"}, "prompt_tokens"),
        ({"id": "x", "arrival_s": 0, "output_tokens": 1, "class": "best_effort"}, "missing required field 'prompt_tokens'"),
        ({"id": "x", "arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "class": "best_effort",
          "depends_on": ["nope"]}, "unknown id 'nope'"),
    ],
)
def test_bad_lines_name_the_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(WorkloadError, match=message):
        read_workload(path)


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(WorkloadError, match="duplicate"):
        write_workload(tmp_path / "d.jsonl", [_rt("a", 0), _rt("a", 1)])


@pytest.mark.parametrize(("process", "cv"), [("poisson", 1.0), ("gamma", 3.0), ("gamma", 0.5)])
def test_arrival_processes_hit_rate_and_burstiness(process, cv):
    times = arrival_times(50.0, 200.0, random.Random(7), process=process, cv=cv)
    assert len(times) == pytest.approx(10_000, rel=0.08)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(cv, rel=0.15)
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 200.0


def test_arrivals_are_seeded():
    assert arrival_times(5, 10, random.Random(1)) == arrival_times(5, 10, random.Random(1))
    assert arrival_times(5, 10, random.Random(1)) != arrival_times(5, 10, random.Random(2))


def test_slo_tiers_cycle():
    slo = SloSpec(ttft_ms=100, tpot_ms=10, deadline_ms=1000, tiers=4)
    assert [slo.real_time(k) for k in range(5)] == [(100, 10), (200, 20), (300, 30), (400, 40), (100, 10)]
    assert slo.deadline(6) == 3000


def test_synthetic_stream_is_seeded_and_valid():
    cfg = BuildConfig(duration_s=20, seed=3, mix=(0.5, 0.25, 0.25))
    specs = [StreamSpec.parse("synthetic:mix:rate=10,process=gamma,cv=2,prompt_mean=300,output_mean=50")]
    a, b = build_workload(specs, cfg), build_workload(specs, cfg)
    assert a == b and len(a) > 100
    for r in a:
        r.validate()
    classes = {r.cls for r in a}
    assert classes == {"real_time", "deadline", "best_effort"}
    assert statistics.mean(r.prompt_tokens for r in a) == pytest.approx(300, rel=0.2)


@pytest.mark.parametrize(
    ("text", "message"),
    [("azure_conv", "SOURCE:CLASS"), ("nope:real_time", "unknown source"), ("arxiv:rt", "class must be"),
     ("arxiv:best_effort:rate", "not key=value"), ("arxiv:best_effort:speed=2", "unknown option")],
)
def test_stream_spec_errors(text, message):
    with pytest.raises(ValueError, match=message):
        StreamSpec.parse(text)
