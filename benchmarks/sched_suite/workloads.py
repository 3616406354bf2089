"""The generalization suite's workloads, built in memory from the real traces (read in place).

Hybrid family, a full factorial per seed (3 x 2 x 2 x 2 = 24 workloads):

- mix (offered request rates at load x1; RT lengths from the Azure conversation trace, deadline
  lengths from the Azure code trace, BE from the length tables below):
    rt_heavy   RT 8/s,   deadline 0.5/s, BE 1/s
    balanced   RT 5.5/s, deadline 1/s,   BE 2.5/s
    be_heavy   RT 3/s,   deadline 0.5/s, BE 5/s
- slo:  tight   every RT request TTFT 1 s / TPOT 80 ms, deadline 5 s (one tier)
        tiered  base TTFT 1 s / TPOT 100 ms / deadline 10 s, x1..x4 tiers (the Tempo artifact's)
- be:   long    arXiv-summarization rows with 2-4k-token prompts (outputs as they are: heavy tail)
        short   ShareGPT rows with prompts <= 1,024 tokens
- arrivals: poisson, or bursty (gamma gaps with CV 3) for every stream

Agentic family (2 x 2 = 4 workloads per seed): Claude Code sessions starting at 0.35/s (at most
40) as deadline-class workflows with an end-to-end `workflow_deadline_ms` (first 6 main-agent
calls, sub-agents kept, think time x0.02 capped at 5 s), plus RT chat from the Azure conversation
trace, for slo x arrivals.

A seed changes every random draw and where in the Azure traces the lengths start (so two seeds
do not share RT requests). Loads compress arrival times (`scale_rate`); SLOs and lengths stay.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_svc.sim.workload import WorkloadRequest
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec

MIXES: dict[str, tuple[float, float, float]] = {  # (rt, deadline, be) requests/s at load x1
    "rt_heavy": (8.0, 0.5, 1.0),
    "balanced": (5.5, 1.0, 2.5),
    "be_heavy": (3.0, 0.5, 5.0),
}
SLOS: dict[str, SloSpec] = {
    "tight": SloSpec(ttft_ms=1000.0, tpot_ms=80.0, deadline_ms=5000.0, tiers=1),
    "tiered": SloSpec(ttft_ms=1000.0, tpot_ms=100.0, deadline_ms=10000.0, tiers=4),
}
BE_SOURCES: dict[str, str] = {
    "long": "arxiv:best_effort:rate={rate},min_prompt=2048,max_prompt=4096",
    "short": "sharegpt:best_effort:rate={rate},max_prompt=1024",
}
ARRIVALS: dict[str, str] = {"poisson": "process=poisson", "bursty": "process=gamma,cv=3"}
AGENTIC_RT_RATE = 4.0
AGENTIC_SESSIONS = "rate=0.35,sessions=40,max_calls=6,think_scale=0.02,max_think=5"


@dataclass(frozen=True)
class WorkloadSpec:
    family: str  # "hybrid" | "agentic"
    mix: str  # a MIXES key, or "agentic"
    slo: str
    be: str  # a BE_SOURCES key, or "-" (agentic)
    arrivals: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.mix}-{self.slo}-{self.be}-{self.arrivals}-s{self.seed}"

    def streams(self) -> list[str]:
        clock = ARRIVALS[self.arrivals]
        rt_start = 300 + 900 * (self.seed % 4)  # trace seconds: a seed reads another part of the trace
        if self.family == "agentic":
            return [f"azure_conv:real_time:start={rt_start},rate={AGENTIC_RT_RATE},{clock}",
                    f"agentic:deadline:{AGENTIC_SESSIONS}"]
        rt, dl, be = MIXES[self.mix]
        return [f"azure_conv:real_time:start={rt_start},rate={rt},{clock}",
                f"azure_code:deadline:start={rt_start},rate={dl},{clock}",
                BE_SOURCES[self.be].format(rate=be) + f",{clock}"]

    def build(self, duration_s: float) -> list[WorkloadRequest]:
        config = BuildConfig(duration_s=duration_s, seed=self.seed, slo=SLOS[self.slo], max_prompt_tokens=4096,
                             max_output_tokens=4096)
        return build_workload([StreamSpec.parse(s) for s in self.streams()], config)


def suite_specs(seeds: tuple[int, ...]) -> list[WorkloadSpec]:
    """Every workload of the suite for these seeds, hybrid first, in a fixed order."""
    out = [WorkloadSpec("hybrid", mix, slo, be, arrivals, seed)
           for seed in seeds for mix in MIXES for slo in SLOS for be in BE_SOURCES for arrivals in ARRIVALS]
    out += [WorkloadSpec("agentic", "agentic", slo, "-", arrivals, seed)
            for seed in seeds for slo in SLOS for arrivals in ARRIVALS]
    return out
