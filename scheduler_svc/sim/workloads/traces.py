"""Readers for the public traces in `../shared/traces` (see its README for formats and licenses).

The traces are read in place, never copied into the repo. `traces_dir()` resolves the folder
relative to this checkout, overridable by the env variable LLMSERVE_TRACES_DIR.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

TRACES_ENV = "LLMSERVE_TRACES_DIR"

AZURE_CONV = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = "azure_llm_2023/AzureLLMInferenceTrace_code.csv"
MOONCAKE_CONV = "mooncake_fast25/conversation_trace.jsonl"
MOONCAKE_SYNTH = "mooncake_fast25/synthetic_trace.jsonl"
MOONCAKE_BLOCK_TOKENS = 512  # tokens per `hash_ids` block (traces README)
ARXIV_LENGTHS = "arxiv_summarization_lengths_vidur/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
SHAREGPT_LENGTHS = "sharegpt_lengths_sarathi/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
AGENTIC_DIR = "kv_cache_tester_claude_code"


class TraceMissingError(FileNotFoundError):
    """The traces folder or one trace file is absent (tests skip on it)."""


def traces_dir() -> Path:
    """The traces folder: $LLMSERVE_TRACES_DIR, else `<repo>/../shared/traces`."""
    env = os.environ.get(TRACES_ENV)
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[3] / ".." / "shared" / "traces").resolve()


def trace_path(relative: str) -> Path:
    """The absolute path of one trace file; raises TraceMissingError naming it when absent."""
    path = traces_dir() / relative
    if not path.exists():
        raise TraceMissingError(f"trace {relative!r} not found under {traces_dir()} (set {TRACES_ENV})")
    return path


@dataclass(frozen=True)
class TimedCall:
    """One request of a timestamped trace: arrival (s from the trace start) and token counts."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()  # the prompt's block ids, where the trace gives them
    hash_block_tokens: int = 0


def read_azure(relative: str = AZURE_CONV) -> list[TimedCall]:
    """Azure LLM inference 2023 (conv or code): arrivals relative to the first row, in order."""
    rows: list[TimedCall] = []
    t0: datetime | None = None
    with open(trace_path(relative), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            # 7 fractional digits; datetime takes at most 6.
            stamp = datetime.fromisoformat(row["TIMESTAMP"][:26])
            t0 = t0 or stamp
            rows.append(TimedCall((stamp - t0).total_seconds(), int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    return rows


def read_mooncake(relative: str = MOONCAKE_CONV) -> list[TimedCall]:
    """Mooncake FAST'25 trace. Its conversation timestamps are quantized to ~3 s ticks, so the
    requests of one tick are spread evenly across the tick (the README's advice)."""
    raw: list[tuple[float, int, int, tuple[int, ...]]] = []
    with open(trace_path(relative), encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                raw.append((obj["timestamp"] / 1000.0, int(obj["input_length"]), int(obj["output_length"]),
                            tuple(int(h) for h in obj.get("hash_ids") or ())))
    raw.sort(key=lambda r: r[0])
    ticks = sorted({r[0] for r in raw})
    next_tick = {t: (ticks[i + 1] if i + 1 < len(ticks) else t + 1.0) for i, t in enumerate(ticks)}
    by_tick: dict[float, list[tuple[float, int, int, tuple[int, ...]]]] = {}
    for r in raw:
        by_tick.setdefault(r[0], []).append(r)
    out: list[TimedCall] = []
    for t in ticks:
        group = by_tick[t]
        width = next_tick[t] - t if len(group) > 1 else 0.0
        for i, (_, p, o, ids) in enumerate(group):
            out.append(TimedCall(t + width * i / len(group), max(1, p), max(1, o), ids,
                                 MOONCAKE_BLOCK_TOKENS if ids else 0))
    return out


def read_lengths(relative: str = ARXIV_LENGTHS) -> list[tuple[int, int]]:
    """A length-distribution CSV (Vidur/Sarathi format): (prompt_tokens, output_tokens) rows."""
    with open(trace_path(relative), newline="", encoding="utf-8") as fh:
        return [
            (max(1, int(row["num_prefill_tokens"])), max(1, int(row["num_decode_tokens"])))
            for row in csv.DictReader(fh)
        ]


@dataclass(frozen=True)
class AgentCall:
    """One LLM call of an agentic session, with its place in the session's dependency graph.

    `index` is the call's position in the flattened session; `depends_on` names earlier indices.
    `t_s` is the trace's send time from the session start; `think_s` the client/tool time before it.
    """

    index: int
    t_s: float
    prompt_tokens: int
    output_tokens: int
    think_s: float
    depends_on: tuple[int, ...]
    agent: str
    hash_ids: tuple[int, ...] = ()  # the session's `block_size`-token block ids, scoped to the session
    hash_block_tokens: int = 0


def agentic_session_files() -> list[Path]:
    """The session files (trace_NNNN.json), sorted by name."""
    folder = traces_dir() / AGENTIC_DIR
    if not folder.is_dir():
        raise TraceMissingError(f"agentic traces not found under {folder} (set {TRACES_ENV})")
    return sorted(folder.glob("trace_*.json"))


def read_agentic_session(path: Path, max_main_calls: int | None = None) -> list[AgentCall]:
    """Flattens one Claude Code session into a DAG of calls.

    Main-agent calls form a chain. A sub-agent spawn starts a parallel chain whose first call
    depends on the main call sent last before the spawn; the first main call sent after the
    sub-agent's last call joins it (depends on it), since the parent waits for the Task result.
    Only the first `max_main_calls` main calls (and the sub-agents spawned among them) are kept.
    """
    with open(path, encoding="utf-8") as fh:
        session = json.load(fh)
    block = int(session.get("block_size") or 0)
    calls: list[AgentCall] = []
    last_main: int | None = None
    pending_joins: list[tuple[float, int]] = []  # (sub-agent end time, its last call index)
    main_count = 0
    for entry in session["requests"]:
        if max_main_calls is not None and main_count >= max_main_calls:
            break
        if entry.get("type") == "subagent":
            spawn_t = float(entry["t"])
            prev = last_main
            sub_last: int | None = None
            end_t = spawn_t
            for sub in entry.get("requests", []):
                deps = (sub_last,) if sub_last is not None else ((prev,) if prev is not None else ())
                idx = len(calls)
                t = spawn_t + float(sub["t"])
                calls.append(AgentCall(idx, t, int(sub["in"]), max(1, int(sub["out"])),
                                       float(sub.get("think_time") or 0.0), deps, str(entry.get("agent_id", "sub")),
                                       tuple(sub.get("hash_ids") or ()), block))
                sub_last = idx
                end_t = max(end_t, t + float(sub.get("api_time") or 0.0))
            if sub_last is not None:
                pending_joins.append((end_t, sub_last))
            continue
        t = float(entry["t"])
        deps = [last_main] if last_main is not None else []
        joined = [j for j in pending_joins if j[0] <= t]
        deps += [idx for _, idx in joined]
        pending_joins = [j for j in pending_joins if j[0] > t]
        idx = len(calls)
        calls.append(AgentCall(idx, t, int(entry["in"]), max(1, int(entry["out"])),
                               float(entry.get("think_time") or 0.0), tuple(deps), "main",
                               tuple(entry.get("hash_ids") or ()), block))
        last_main = idx
        main_count += 1
    return calls
