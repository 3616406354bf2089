"""The worker's start-up breakdown (worker_svc/start_phases.py), on a fake clock."""

from __future__ import annotations

import time

from worker_svc.start_phases import StartPhases, process_age_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_mark_ends_the_phase_begun_at_the_previous_one() -> None:
    clock = FakeClock()
    phases = StartPhases(clock=clock, before_s=4.0)
    clock.now += 0.5
    phases.mark("model load")
    clock.now += 3.0
    phases.mark("calibration")
    assert phases.phases == [("model load", 0.5), ("calibration", 3.0)]
    assert phases.total_s() == 7.5
    assert phases.describe() == "7.5s: process start and imports 4.0s, model load 0.5s, calibration 3.0s"


def test_an_unknown_process_age_is_left_out_not_counted_as_zero() -> None:
    clock = FakeClock()
    phases = StartPhases(clock=clock, before_s=None)
    clock.now += 1.5
    phases.mark("warm-up")
    assert phases.describe() == "1.5s: warm-up 1.5s"


def test_process_age_is_this_process_lifetime_so_far() -> None:
    age = process_age_s()
    assert age is not None  # Linux: /proc is there
    started = time.monotonic() - age
    time.sleep(0.05)
    later = process_age_s()
    assert later is not None and later >= age + 0.04
    assert abs((time.monotonic() - later) - started) < 0.05  # the same start, read twice


def test_the_start_benchmark_reads_the_line_the_worker_writes() -> None:
    # benchmarks/worker_start.py parses the worker's start line: the two must not drift apart.
    from benchmarks.worker_start import parse_phases

    clock = FakeClock()
    phases = StartPhases(clock=clock, before_s=1.7)
    clock.now += 2.9
    phases.mark("model load")
    clock.now += 2.2
    phases.mark("warm-up")
    line = f"worker w0 serving on 127.0.0.1:1 (...) after {phases.describe()}"
    assert parse_phases(line) == {"total": 6.8, "process start and imports": 1.7, "model load": 2.9, "warm-up": 2.2}
    assert parse_phases("worker w0 is starting") is None
