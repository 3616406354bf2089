"""Prefix caching live (issue 13): a multi-turn chat replay through the public OpenAI HTTP front
of a full stack (four processes, started as `llmserve up` starts them), caching on and off side
by side in one run:

    flock /work/notes/cpu.lock .venv/bin/python benchmarks/bench_prefix_live.py --out bench_out/prefix_live

`--conversations` chats of `--turns` turns run at once; each turn resends the whole conversation
(its system prompt, every earlier user message and the model's own answers) plus a new user
message, as a chat client does. The user messages' lengths are ShareGPT prompt lengths
(`sharegpt_lengths_sarathi`, read from the traces folder, rows drawn with `--seed`), capped at
`--max-user-tokens`; answers are `--max-tokens` greedy tokens (EOS ignored, so both modes do the
same work). Each conversation has its own system prompt, so hits come from the conversation's own
earlier turns only. Per turn index: TTFT p50/p99 (the gateway's, arrival to first token, from the
response's `llmserve.ttft_ms`), prompt tokens, the cached ones (`usage.prompt_tokens_details`),
and the prefill tokens the worker computed (its /metrics, over the whole run). The stack without
caching runs first, then the one with it; the load average is recorded with each.

The host tier (`--modes notier,on`): the cache on both sides, without and with the worker's host
tier (`--prefix-host-tier-gb`), on a KV pool small enough (`--num-kv-blocks`) that the other
conversations evict a conversation's blocks between its turns; the worker's host-tier hits
(its /metrics) are reported too:

    flock -x /tmp/cpu.lock .venv/bin/python benchmarks/bench_prefix_live.py --modes notier,on \
        --num-kv-blocks 320 --out bench_out/prefix_live_tier
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import os
import random
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("river mountain light window paper garden music winter letter silver market stone evening road "
         "story friend ocean forest city question answer morning library engine coffee").split()
TRACE = "sharegpt_lengths_sarathi/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"


@dataclasses.dataclass(frozen=True)
class Turn:
    conversation: int
    turn: int
    prompt_tokens: int
    cached_tokens: int
    ttft_ms: float
    latency_s: float
    answer: str


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=6)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--system-tokens", type=int, default=200, help="words of each conversation's system prompt")
    p.add_argument("--max-user-tokens", type=int, default=160, help="cap on a user message (ShareGPT lengths), words")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="default")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=2, help="the worker's torch threads")
    p.add_argument("--num-kv-blocks", type=int, default=2048)
    p.add_argument("--traces", default=os.environ.get("LLMSERVE_TRACES_DIR", str(Path(__file__).resolve().parents[2]
                                                                                   / "shared" / "traces")))
    p.add_argument("--out", default="bench_out/prefix_live")
    p.add_argument("--modes", default="off,on", help="two of: off (no cache), notier (the cache without a host "
                                                      "tier), on (the cache with its host tier); the first is the base")
    p.add_argument("--prefix-host-tier-gb", type=float, default=4.0, help="the worker's host tier in mode on")
    return p.parse_args()


def user_lengths(args: argparse.Namespace) -> list[list[int]]:
    """Words per user message, [conversation][turn], from ShareGPT's prompt lengths."""
    with open(Path(args.traces) / TRACE, newline="") as f:
        lengths = [int(row["num_prefill_tokens"]) for row in csv.DictReader(f)]
    rng = random.Random(args.seed)
    return [[max(8, min(args.max_user_tokens, rng.choice(lengths))) for _ in range(args.turns)]
            for _ in range(args.conversations)]


def words(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


async def converse(session: Any, base: str, model: str, c: int, lengths: list[int], args: argparse.Namespace) -> list[Turn]:
    rng = random.Random(1000 * args.seed + c)
    messages = [{"role": "system", "content": f"Conversation {c}. " + words(args.system_tokens, rng)}]
    out = []
    for t, n in enumerate(lengths):
        messages.append({"role": "user", "content": words(n, rng) + "?"})
        body = {"model": model, "messages": messages, "max_tokens": args.max_tokens, "temperature": 0.0,
                "ignore_eos": True}
        start = time.perf_counter()
        async with session.post(f"{base}/v1/chat/completions", json=body) as response:
            reply = await response.json()
            assert response.status == 200, reply
        answer = reply["choices"][0]["message"]["content"]
        usage = reply["usage"]
        out.append(Turn(c, t + 1, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"],
                        reply["llmserve"]["ttft_ms"], time.perf_counter() - start, answer))
        messages.append({"role": "assistant", "content": answer})
    return out


def worker_prefill_tokens(metrics_url: str) -> float:
    """Prefill tokens the worker computed since start (its tokens_per_step histogram's sum)."""
    return worker_counts(metrics_url)["prefill"]


def worker_counts(metrics_url: str) -> dict[str, float]:
    """The worker's prefill tokens and prefix-cache block events since start (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out = {"prefill": 0.0}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name.endswith("tokens_per_step_sum") and s.labels.get("phase") == "prefill":
                out["prefill"] += s.value
            elif s.name == "llmserve_prefix_cache_blocks_total":
                out[s.labels["event"]] = out.get(s.labels["event"], 0.0) + s.value
    return out


async def run_mode(mode: str, args: argparse.Namespace, lengths: list[list[int]]) -> dict[str, Any]:
    import aiohttp

    from bench_stack import _free_port_run  # noqa: PLC0415 - the benchmarks' own helper
    from llmserve_stack.launch import StackConfig, free_port, service_specs
    from llmserve_stack.supervisor import Stack

    cache = mode != "off"
    metrics_base = _free_port_run(4)
    config = StackConfig(port=free_port(), http_port=free_port(), model=args.model, dtype=args.dtype,
                         num_kv_blocks=args.num_kv_blocks, metrics_port=metrics_base, prefix_cache=cache,
                         prefix_host_tier_gb=args.prefix_host_tier_gb if mode == "on" else 0.0, log_format="text")
    specs = [dataclasses.replace(s, env={**s.env, "LLMSERVE_NUM_THREADS": str(args.threads)})
             if s.module == "worker_svc" else s for s in service_specs(config)]
    base = f"http://127.0.0.1:{config.http_port}"
    metrics_url = f"http://127.0.0.1:{metrics_base + 3}/metrics"
    async with Stack(specs, log_dir=str(Path(args.out) / f"logs_{mode}")):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/models") as response:
                model = (await response.json())["data"][0]["id"]
            before = worker_counts(metrics_url)
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            convs = await asyncio.gather(*(converse(session, base, model, c, lengths[c], args)
                                           for c in range(args.conversations)))
            wall = time.perf_counter() - started
            after = worker_counts(metrics_url)
    events = {k: after[k] - before.get(k, 0.0) for k in after}
    return {"mode": mode, "prefix_cache": cache, "turns": [dataclasses.asdict(t) for conv in convs for t in conv],
            "wall_s": wall, "worker_prefill_tokens": events.pop("prefill"), "prefix_events": events,
            "load1_before": load_before, "load1_after": os.getloadavg()[0]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def table(modes: dict[str, dict[str, Any]], turns: int) -> str:
    a, b = modes  # the base, then the one compared with it
    lines = [f"| turn | prompt tok (mean) | cached tok (mean, {a}) | cached tok (mean, {b}) | TTFT p50 {a} ms | "
             f"TTFT p50 {b} ms | p50 {a}/{b} | TTFT p99 {a} ms | TTFT p99 {b} ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in range(1, turns + 1):
        row = {m: [x for x in modes[m]["turns"] if x["turn"] == t] for m in (a, b)}
        p50 = {m: pct([x["ttft_ms"] for x in row[m]], 50) for m in row}
        p99 = {m: pct([x["ttft_ms"] for x in row[m]], 99) for m in row}
        prompt = sum(x["prompt_tokens"] for x in row[b]) / len(row[b])
        cached = {m: sum(x["cached_tokens"] for x in row[m]) / len(row[m]) for m in row}
        lines.append(f"| {t} | {prompt:.0f} | {cached[a]:.0f} | {cached[b]:.0f} | {p50[a]:.0f} | {p50[b]:.0f} | "
                     f"{p50[a] / p50[b]:.1f}x | {p99[a]:.0f} | {p99[b]:.0f} |")
    lines += ["", "| mode | prompt tokens | cached (usage) | prefill computed (worker) | host-tier hits / demoted "
                  "blocks (worker) | wall s | load1 before/after |", "|---|---|---|---|---|---|---|"]
    for name in (a, b):
        m = modes[name]
        prompt = sum(x["prompt_tokens"] for x in m["turns"])
        cached = sum(x["cached_tokens"] for x in m["turns"])
        ev = m.get("prefix_events", {})
        lines.append(f"| {name} | {prompt} | {cached} | {m['worker_prefill_tokens']:.0f} | "
                     f"{ev.get('host_hit', 0):.0f} / {ev.get('demoted', 0):.0f} | "
                     f"{m['wall_s']:.1f} | {m['load1_before']:.2f} / {m['load1_after']:.2f} |")
    same = sum(x["answer"] == y["answer"] for x, y in zip(modes[a]["turns"], modes[b]["turns"]))
    lines += ["", f"answers identical {a} vs {b}: {same}/{len(modes[b]['turns'])} (bf16: chunked vs whole "
                  "prefill may differ at near-ties; a differing answer changes the later turns' prompts)"]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = user_lengths(args)
    names = args.modes.split(",")
    if len(names) != 2 or not set(names) <= {"off", "notier", "on"}:
        raise SystemExit("--modes: two of off, notier, on")
    modes = {name: asyncio.run(run_mode(name, args, lengths)) for name in names}
    report = table(modes, args.turns)
    print(report)
    (out / "results.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), **modes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
