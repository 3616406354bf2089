"""Builds workloads from streams. A stream is one source of requests with one class (or a class
mix) and its own rate; a workload is the union of its streams.

Stream spec syntax (the `--stream` flag of make_workload): `SOURCE:CLASS[:key=value,...]`
    SOURCE  azure_conv | azure_code | mooncake_conv | mooncake_synth   (timestamped traces)
            arxiv | sharegpt | synthetic                              (lengths + an arrival process)
            agentic                                                   (Claude Code sessions as workflows)
    CLASS   real_time | deadline | best_effort | mix (drawn per request from the global mix)
    keys    rate=R        timestamped: target mean req/s (rescales the trace's clock);
                          others: req/s (agentic: sessions/s) of the arrival process
            rate_scale=X  multiplies the stream's rate (timestamped: compresses its clock)
            start=S       timestamped: offset into the trace, seconds of trace time
            process=poisson|gamma, cv=C   arrival process of sampled sources; on a timestamped
                          source it replaces the trace's clock (lengths are the trace's calls in
                          order from `start`, arrivals the process at `rate`, default the trace's)
            min_prompt=P, max_prompt=Q    keep only calls/rows whose prompt is in [P, Q] tokens
                          (a filter, not a cap: e.g. the 2-4k-prompt rows of arxiv)
            prompt_mean=P, output_mean=O  synthetic lengths (lognormal, sigma 0.6)
            sessions=N, max_calls=M, think_scale=F, max_think=S   agentic shaping
            priority=K, tenant=NAME
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler_svc.sim.workload import BEST_EFFORT, CLASSES, DEADLINE, REAL_TIME, WorkloadRequest
from scheduler_svc.sim.workloads import traces
from scheduler_svc.sim.workloads.arrivals import arrival_times
from scheduler_svc.sim.workloads.slo import SloSpec

TIMED_SOURCES: dict[str, Callable[[], list[traces.TimedCall]]] = {
    "azure_conv": lambda: traces.read_azure(traces.AZURE_CONV),
    "azure_code": lambda: traces.read_azure(traces.AZURE_CODE),
    "mooncake_conv": lambda: traces.read_mooncake(traces.MOONCAKE_CONV),
    "mooncake_synth": lambda: traces.read_mooncake(traces.MOONCAKE_SYNTH),
}
LENGTH_SOURCES: dict[str, str] = {"arxiv": traces.ARXIV_LENGTHS, "sharegpt": traces.SHAREGPT_LENGTHS}
SOURCES = (*TIMED_SOURCES, *LENGTH_SOURCES, "synthetic", "agentic")
_FLOAT_KEYS = {"rate", "rate_scale", "start", "cv", "prompt_mean", "output_mean", "think_scale", "max_think"}
_INT_KEYS = {"sessions", "max_calls", "priority", "min_prompt", "max_prompt"}
_STR_KEYS = {"process", "tenant"}


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a workload (see the module docstring)."""

    source: str
    cls: str
    options: dict[str, float | int | str] = field(default_factory=dict)

    @staticmethod
    def parse(text: str) -> StreamSpec:
        """Parses `SOURCE:CLASS[:k=v,...]`; raises ValueError saying what to fix."""
        parts = text.split(":", 2)
        if len(parts) < 2:
            raise ValueError(f"stream {text!r}: expected SOURCE:CLASS[:key=value,...]")
        source, cls = parts[0].strip(), parts[1].strip()
        if source not in SOURCES:
            raise ValueError(f"stream {text!r}: unknown source {source!r}; choose from {SOURCES}")
        if cls not in (*CLASSES, "mix"):
            raise ValueError(f"stream {text!r}: class must be one of {(*CLASSES, 'mix')}")
        options: dict[str, float | int | str] = {}
        if len(parts) == 3 and parts[2].strip():
            for item in parts[2].split(","):
                key, sep, value = item.partition("=")
                key = key.strip()
                if not sep:
                    raise ValueError(f"stream {text!r}: option {item!r} is not key=value")
                if key in _FLOAT_KEYS:
                    options[key] = float(value)
                elif key in _INT_KEYS:
                    options[key] = int(value)
                elif key in _STR_KEYS:
                    options[key] = value.strip()
                else:
                    raise ValueError(f"stream {text!r}: unknown option {key!r}")
        return StreamSpec(source, cls, options)

    def get(self, key: str, default: float | int | str) -> float | int | str:
        return self.options.get(key, default)


@dataclass(frozen=True)
class BuildConfig:
    """Settings shared by all streams of a workload."""

    duration_s: float = 60.0
    rate_scale: float = 1.0
    seed: int = 0
    slo: SloSpec = field(default_factory=SloSpec)
    max_prompt_tokens: int = 4096
    max_output_tokens: int = 1024
    mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # real_time, deadline, best_effort

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.rate_scale <= 0:
            raise ValueError("duration_s and rate_scale must be > 0")
        if len(self.mix) != 3 or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError("mix must be three non-negative fractions (real_time, deadline, best_effort)")


def build_workload(streams: list[StreamSpec], config: BuildConfig) -> list[WorkloadRequest]:
    """All streams' requests, sorted by arrival. Each stream draws from its own seeded generator
    (seed, stream index), so adding a stream does not change the others."""
    out: list[WorkloadRequest] = []
    for i, spec in enumerate(streams):
        rng = random.Random(config.seed * 1_000_003 + i)
        prefix = f"s{i}-{spec.source}-"
        if spec.source == "agentic":
            out += _agentic(spec, config, rng, prefix)
        else:
            out += _flat(spec, config, rng, prefix)
    return sorted(out, key=lambda r: (r.arrival_s, r.id))


def _flat(spec: StreamSpec, cfg: BuildConfig, rng: random.Random, prefix: str) -> list[WorkloadRequest]:
    """A stream of independent requests: arrivals and lengths, then class and SLO per request."""
    scale = float(spec.get("rate_scale", 1.0)) * cfg.rate_scale
    # (arrival, prompt, output, the trace's block ids and their block size where it has them)
    arrivals_lengths: list[tuple[float, int, int, tuple[int, ...], int]]
    keep = _prompt_filter(spec)
    if spec.source in TIMED_SOURCES:
        calls = TIMED_SOURCES[spec.source]()
        span = calls[-1].arrival_s - calls[0].arrival_s
        native = len(calls) / span if span > 0 else 1.0
        rate = float(spec.get("rate", native)) * scale
        start = float(spec.get("start", 0.0))
        if "process" in spec.options:
            # The trace's lengths in order, on a synthetic clock (module doc).
            lengths = [(c.prompt_tokens, c.output_tokens, c.hash_ids, c.hash_block_tokens) for c in calls
                       if c.arrival_s >= start and keep(c.prompt_tokens)]
            if not lengths:
                raise ValueError(f"stream {spec.source}:{spec.cls}: no call left after start/min_prompt/max_prompt")
            times = arrival_times(rate, cfg.duration_s, rng, process=str(spec.options["process"]),
                                  cv=float(spec.get("cv", 1.0)))
            arrivals_lengths = [(t, *lengths[k % len(lengths)]) for k, t in enumerate(times)]
        else:
            speed = rate / native  # trace seconds per workload second
            end = start + cfg.duration_s * speed
            arrivals_lengths = [((c.arrival_s - start) / speed, c.prompt_tokens, c.output_tokens, c.hash_ids,
                                 c.hash_block_tokens) for c in calls if start <= c.arrival_s < end and keep(c.prompt_tokens)]
    else:
        if "rate" not in spec.options:
            raise ValueError(f"stream {spec.source}:{spec.cls} needs rate=R (requests/s)")
        rate = float(spec.options["rate"]) * scale
        times = arrival_times(rate, cfg.duration_s, rng, process=str(spec.get("process", "poisson")),
                              cv=float(spec.get("cv", 1.0)))
        if spec.source in LENGTH_SOURCES:
            table = [row for row in traces.read_lengths(LENGTH_SOURCES[spec.source]) if keep(row[0])]
            if not table:
                raise ValueError(f"stream {spec.source}:{spec.cls}: no row left after min_prompt/max_prompt")
            arrivals_lengths = [(t, *rng.choice(table), (), 0) for t in times]
        else:
            pm, om = float(spec.get("prompt_mean", 512)), float(spec.get("output_mean", 128))
            arrivals_lengths = [(t, _lognormal(rng, pm), _lognormal(rng, om), (), 0) for t in times]
    out = []
    for k, (t, p, o, ids, block) in enumerate(arrivals_lengths):
        cls = spec.cls if spec.cls != "mix" else rng.choices(CLASSES, weights=cfg.mix)[0]
        out.append(_request(f"{prefix}{k:06d}", t, p, o, cls, k, spec, cfg, hash_ids=ids, hash_block_tokens=block))
    return out


def _prompt_filter(spec: StreamSpec) -> Callable[[int], bool]:
    """min_prompt / max_prompt of a stream as a predicate on prompt lengths."""
    lo, hi = int(spec.get("min_prompt", 0)), int(spec.get("max_prompt", 0)) or None
    if hi is not None and hi < lo:
        raise ValueError(f"stream {spec.source}:{spec.cls}: max_prompt {hi} < min_prompt {lo}")
    return lambda prompt: prompt >= lo and (hi is None or prompt <= hi)


def _lognormal(rng: random.Random, mean: float, sigma: float = 0.6) -> int:
    mu = math.log(max(mean, 1.0)) - sigma * sigma / 2
    return max(1, int(round(rng.lognormvariate(mu, sigma))))


def _request(rid: str, t: float, prompt: int, output: int, cls: str, k: int, spec: StreamSpec,
             cfg: BuildConfig, hash_ids: tuple[int, ...] = (), hash_block_tokens: int = 0,
             **extra: object) -> WorkloadRequest:
    prompt, output = _fit(prompt, output, cfg)
    if hash_ids:  # the ids of the capped prompt's blocks (the rest was cut with it)
        extra.update(hash_ids=tuple(hash_ids[:-(-prompt // hash_block_tokens)]), hash_block_tokens=hash_block_tokens)
    slo: dict[str, float] = {}
    if cls == REAL_TIME:
        slo["ttft_ms"], slo["tpot_ms"] = cfg.slo.real_time(k)
    elif cls == DEADLINE:
        slo["deadline_ms"] = cfg.slo.deadline(k)
    return WorkloadRequest(id=rid, arrival_s=round(t, 6), prompt_tokens=prompt, output_tokens=output, cls=cls,
                           priority=int(spec.get("priority", {REAL_TIME: 0, DEADLINE: 1, BEST_EFFORT: 2}[cls])),
                           tenant=str(spec.get("tenant", spec.source)), **slo, **extra)  # type: ignore[arg-type]


def _fit(prompt: int, output: int, cfg: BuildConfig) -> tuple[int, int]:
    """Caps lengths so prompt + output fits the served model's context."""
    output = max(1, min(output, cfg.max_output_tokens))
    prompt = max(1, min(prompt, cfg.max_prompt_tokens))
    return prompt, output


def _agentic(spec: StreamSpec, cfg: BuildConfig, rng: random.Random, prefix: str) -> list[WorkloadRequest]:
    """Claude Code sessions as workflows (collective requests): sessions start as a Poisson process
    at `rate` sessions/s; each call depends on the calls before it in the session's DAG and is
    released `think_s` after they finish. Every call carries the per-call deadline (class
    `deadline` unless the spec says otherwise) and the workflow's end-to-end deadline: the sum, on
    the DAG's critical path, of the per-call deadlines and think times (Tempo: TTLT × stages)."""
    files = traces.agentic_session_files()
    rng.shuffle(files)
    n_sessions = int(spec.get("sessions", len(files)))
    rate = float(spec.get("rate", 0.05)) * float(spec.get("rate_scale", 1.0)) * cfg.rate_scale
    starts = arrival_times(rate, cfg.duration_s, rng)[:n_sessions]
    max_calls = int(spec.get("max_calls", 16))
    think_scale, max_think = float(spec.get("think_scale", 0.1)), float(spec.get("max_think", 30.0))
    out: list[WorkloadRequest] = []
    for w, start in enumerate(starts):
        calls = traces.read_agentic_session(files[w % len(files)], max_main_calls=max_calls)
        wf = f"{prefix}wf{w:03d}"
        cls = spec.cls if spec.cls != "mix" else DEADLINE
        per_call_ms = cfg.slo.deadline(w)
        think = [min(c.think_s * think_scale, max_think) for c in calls]
        stage = [0] * len(calls)
        path_ms = [0.0] * len(calls)  # critical-path deadline budget ending at each call
        for c in calls:
            stage[c.index] = 1 + max((stage[d] for d in c.depends_on), default=-1)
            path_ms[c.index] = per_call_ms + (think[c.index] * 1000.0 if c.depends_on else 0.0) + max(
                (path_ms[d] for d in c.depends_on), default=0.0)
        wf_deadline = max(path_ms, default=per_call_ms)
        for c in calls:
            nominal = start + (c.t_s * think_scale if c.depends_on else 0.0)
            out.append(_request(
                f"{wf}-c{c.index:03d}", nominal, c.prompt_tokens, c.output_tokens, cls, w, spec, cfg,
                workflow_id=wf, depends_on=tuple(f"{wf}-c{d:03d}" for d in c.depends_on),
                think_s=round(think[c.index], 3) if c.depends_on else 0.0, stage=stage[c.index],
                application="coding", workflow_deadline_ms=round(wf_deadline, 3),
                hash_ids=c.hash_ids, hash_block_tokens=c.hash_block_tokens, hash_scope=wf if c.hash_ids else ""))
    return out
