"""The live suite's workloads: mixes drawn from the traces like the simulator suite's, scaled to
what the 2-core CPU stack serves.

Four mixes (request rates at load x1, before the time scale; the tiered SLOs of the sim suite:
base TTFT 1 s / TPOT 100 ms / deadline 10 s, request k at x(k mod 4 + 1)):

    rt_be_short   Azure conversation RT 5.5/s + ShareGPT BE (prompts <= 1,024) 2.5/s
    rt_be_long    Azure conversation RT 5.5/s + arXiv BE (prompts 2-4k) 1/s
    rt_deadline   Azure conversation RT 5.5/s + Azure code deadline 2/s
    mixed_bursty  RT 5.5/s, deadline 1/s, ShareGPT BE 2.5/s, every stream bursty (gamma, CV 3)

Scaling (the README's live example): every time (arrivals, SLOs) x `TIME_SCALE`; prompts capped at
`MAX_PROMPT` tokens (BE prompts of `rt_be_long` at `MAX_LONG_PROMPT`, so they stay the longest),
outputs at `MAX_OUTPUT`. A load x L compresses arrivals by L; each cell is `WINDOW_S` seconds of
arrivals (more requests at a higher load), so every run is about as short as the others, and ends
`DRAIN_S` after its last arrival at the latest (what is unfinished then misses its SLO).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler_svc.sim import transform
from scheduler_svc.sim.workload import BEST_EFFORT, REAL_TIME, WorkloadRequest
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec

TIME_SCALE = 4.0  # a CPU step is ~5-15x an H100 step of Llama-3-8B; x4 keeps a TTFT of 4-16 s
MAX_PROMPT = 256
MAX_LONG_PROMPT = 512  # one full step's budget: a long BE prompt still costs a whole CPU step
MAX_OUTPUT = 32
WINDOW_S = 20.0  # seconds of arrivals per cell, wall time
DRAIN_S = 20.0  # a run ends this long after its last arrival at the latest (live and simulated); unfinished misses
LOADS = (1.0, 2.0, 4.0)
SLO = SloSpec(ttft_ms=1000.0, tpot_ms=100.0, deadline_ms=10000.0, tiers=4)
SEED = 1

_RT = "azure_conv:real_time:start=300,rate=5.5"
MIXES: dict[str, tuple[str, ...]] = {
    "rt_be_short": (_RT, "sharegpt:best_effort:rate=2.5,max_prompt=1024"),
    "rt_be_long": (_RT, "arxiv:best_effort:rate=1,min_prompt=2048,max_prompt=4096"),
    "rt_deadline": (_RT, "azure_code:deadline:start=300,rate=2"),
    "mixed_bursty": (_RT + ",process=gamma,cv=3", "azure_code:deadline:start=300,rate=1,process=gamma,cv=3",
                     "sharegpt:best_effort:rate=2.5,max_prompt=1024,process=gamma,cv=3"),
}
DEDICATED = "dedicated"  # the workload's RT requests alone under fcfs


@dataclass(frozen=True)
class Cell:
    """One workload at one load."""

    mix: str
    load: float

    @property
    def name(self) -> str:
        return f"{self.mix} x{self.load:g}"


def cells(mixes: tuple[str, ...] = tuple(MIXES), loads: tuple[float, ...] = LOADS) -> list[Cell]:
    return [Cell(m, load) for m in mixes for load in loads]


def cell_requests(cell: Cell, dedicated: bool = False) -> list[WorkloadRequest]:
    """The cell's requests, scaled: `WINDOW_S` of wall-clock arrivals at its load."""
    duration = WINDOW_S * cell.load / TIME_SCALE  # trace seconds at x1 that fill the window at this load
    config = BuildConfig(duration_s=duration, seed=SEED, slo=SLO, max_prompt_tokens=4096, max_output_tokens=4096)
    requests = build_workload([StreamSpec.parse(s) for s in MIXES[cell.mix]], config)
    requests = [_cap(r, cell.mix) for r in requests]
    requests = transform.scale_rate(transform.stretch_time(requests, TIME_SCALE), cell.load)
    return [r for r in requests if r.cls == REAL_TIME] if dedicated else requests


def _cap(r: WorkloadRequest, mix: str) -> WorkloadRequest:
    prompt_cap = MAX_LONG_PROMPT if (mix == "rt_be_long" and r.cls == BEST_EFFORT) else MAX_PROMPT
    return replace(r, prompt_tokens=min(r.prompt_tokens, prompt_cap), output_tokens=min(r.output_tokens, MAX_OUTPUT))
