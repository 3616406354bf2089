"""What every engine of `bench_stack.py` reports: one row per (engine, concurrency), one prefill row
per engine, with the machine's load average when it was measured (the dev machines are shared)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    engine: str
    streams: int  # concurrent streams (1: requests one after another)
    throughput_tok_s: float  # output tokens / wall
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    wall_s: float
    output_tokens: int
    load1: float  # 1-minute load average right after the run
    # The stack only: the worker's time by phase over the run (its /metrics, before and after),
    # seconds by phase name; the wall time minus their sum is the worker waiting for plans.
    worker_phases_s: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class PrefillRow:
    engine: str
    prompt_tokens: int
    seconds: float  # time to the first token of one request with this prompt (fastest run)
    load1: float

    @property
    def tok_s(self) -> float:
        return self.prompt_tokens / self.seconds


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def load1() -> float:
    return os.getloadavg()[0]


def make_row(engine: str, streams: int, ttfts: list[float], tpots: list[float], wall: float, tokens: int) -> Row:
    return Row(engine, streams, tokens / wall, pct(ttfts, 50), pct(ttfts, 99), pct(tpots, 50), pct(tpots, 99), wall,
               tokens, load1())


def fastest(rows: list[Row]) -> Row:
    """The best of repeated runs: on a shared machine the fastest is the least disturbed."""
    return max(rows, key=lambda r: r.throughput_tok_s)
