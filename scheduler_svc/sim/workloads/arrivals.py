"""Seeded arrival processes: Poisson, and gamma-distributed gaps for bursty traffic."""

from __future__ import annotations

import random


def arrival_times(rate: float, duration_s: float, rng: random.Random, *, process: str = "poisson",
                  cv: float = 1.0, start_s: float = 0.0) -> list[float]:
    """Arrival times in [start_s, start_s + duration_s) at a mean `rate` (requests/s).

    `process` "poisson" draws exponential gaps; "gamma" draws gamma gaps with the same mean and
    coefficient of variation `cv` (cv > 1 gives bursts, cv = 1 is Poisson, cv < 1 is smoother).
    """
    if rate <= 0 or duration_s <= 0:
        return []
    if process not in ("poisson", "gamma"):
        raise ValueError(f"arrival process must be 'poisson' or 'gamma', got {process!r}")
    if process == "gamma" and cv <= 0:
        raise ValueError(f"gamma arrivals need cv > 0, got {cv}")
    mean_gap = 1.0 / rate
    shape = 1.0 / (cv * cv) if process == "gamma" else 1.0
    out: list[float] = []
    t = start_s
    while True:
        gap = rng.gammavariate(shape, mean_gap / shape) if process == "gamma" else rng.expovariate(rate)
        t += gap
        if t >= start_s + duration_s:
            return out
        out.append(t)
