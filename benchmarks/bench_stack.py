"""Throughput and latency of the running stack against Hugging Face transformers, side by side in
one run on the same model, prompts and machine.

    python benchmarks/bench_stack.py --concurrency 32 --max-tokens 64 --out bench_out/stack

Measures, for N concurrent streams of `max_tokens` new tokens each (EOS ignored, greedy):
- the stack (four processes started here, exactly as `llmserve up`): output tokens/s, TTFT and
  TPOT p50/p99 measured by the client;
- the same engine driven in-process (scheduler core + worker runner + KV store core, no gRPC):
  the difference in TTFT p50 is what the gRPC hops add;
- transformers: static batching (`generate` on the padded batch) and its continuous-batching API
  (`generate_batch`) when available.
Writes `results.json` and `results.md` under --out and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from scheduler_svc.core.policy import POLICY_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prompts import benchmark_prompts  # noqa: E402


@dataclass
class Row:
    engine: str
    throughput_tok_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    wall_s: float
    output_tokens: int


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _row(engine: str, ttfts: list[float], tpots: list[float], wall: float, tokens: int) -> Row:
    return Row(engine, tokens / wall, _pct(ttfts, 50), _pct(ttfts, 99), _pct(tpots, 50), _pct(tpots, 99), wall, tokens)


# ---- the stack over gRPC ---------------------------------------------------------------------
async def _one_stream(stub, request) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    first = last = None
    count = 0
    async for chunk in stub.Generate(request, timeout=600):
        if chunk.token_ids:
            now = time.perf_counter()
            if first is None:
                first = now
            last = now
            count += len(chunk.token_ids)
    assert first is not None and last is not None
    ttft_ms = (first - start) * 1000
    tpot_ms = (last - first) * 1000 / max(1, count - 1)
    return ttft_ms, tpot_ms, count


async def bench_stack(address: str, prompts: list[str], max_tokens: int, sequential: bool = False) -> Row:
    from llmserve.runtime.channel import open_channel
    from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

    def request(prompt: str) -> gateway_pb2.GenerateRequest:
        return gateway_pb2.GenerateRequest(
            text=prompt,
            sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
            slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT),
        )

    async with open_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await _one_stream(stub, request("Warm up."))  # first-call costs out of the measurement
        if sequential:
            start = time.perf_counter()
            results = [await _one_stream(stub, request(p)) for p in prompts]
        else:
            start = time.perf_counter()
            results = await asyncio.gather(*(_one_stream(stub, request(p)) for p in prompts))
        wall = time.perf_counter() - start
    label = "llmserve stack (gRPC, 4 processes)" + (", one request at a time" if sequential else "")
    return _row(label, [r[0] for r in results], [r[1] for r in results], wall, sum(r[2] for r in results))


async def run_stack(args: argparse.Namespace, prompts: list[str]) -> Row:
    from llmserve_stack.launch import StackConfig, free_port, service_specs
    from llmserve_stack.supervisor import Stack

    if args.address:
        return await bench_stack(args.address, prompts, args.max_tokens, args.sequential)
    config = StackConfig(port=free_port(), http_port=0, model=args.model, load_format=args.load_format, num_kv_blocks=args.num_kv_blocks,
                         max_num_seqs=max(64, args.concurrency), max_num_batched_tokens=args.max_num_batched_tokens,
                         policy=args.policy, log_format="text")
    log_dir = Path(args.out) / "logs"
    async with Stack(service_specs(config), log_dir=str(log_dir)) as stack:
        return await bench_stack(stack.specs[-1].address, prompts, args.max_tokens, args.sequential)


# ---- the same engine in-process --------------------------------------------------------------
def run_in_process(args: argparse.Namespace, prompts: list[str]) -> Row:
    import torch

    from llmserve_stack.engine import InProcessEngine

    torch.set_num_threads(args.threads)

    engine = InProcessEngine.build(model=args.model, load_format=args.load_format, num_kv_blocks=args.num_kv_blocks,
                                   max_num_seqs=max(64, args.concurrency),
                                   max_num_batched_tokens=args.max_num_batched_tokens, policy=args.policy)
    engine.generate_all([engine.tokenize("Warm up.")], max_tokens=args.max_tokens)
    token_prompts = [engine.tokenize(p) for p in prompts]
    if args.sequential:
        runs = [engine.generate_all([p], max_tokens=args.max_tokens) for p in token_prompts]
        return _row("same engine in-process (no gRPC), one request at a time", [t for r in runs for t in r.ttfts_ms],
                    [t for r in runs for t in r.tpots_ms], sum(r.wall_s for r in runs), sum(r.output_tokens for r in runs))
    result = engine.generate_all(token_prompts, max_tokens=args.max_tokens)
    return _row("same engine in-process (no gRPC)", result.ttfts_ms, result.tpots_ms, result.wall_s, result.output_tokens)


# ---- Hugging Face transformers ---------------------------------------------------------------
def run_hf(args: argparse.Namespace, prompts: list[str]) -> list[Row]:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from llmserve.model_source import load_tokenizer, resolve_model

    torch.set_num_threads(args.threads)
    source = resolve_model(args.model, args.load_format)
    tokenizer = load_tokenizer(source)
    if source.load_format == "dummy":  # same architecture and FLOPs, random weights
        from llmserve.model_source import load_hf_config

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(load_hf_config(source), dtype=torch.float32)
    else:
        kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        model = AutoModelForCausalLM.from_pretrained(source.folder, local_files_only=True, dtype=torch.float32, **kwargs)
    model.eval()
    rows = []
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        model.generate(**tokenizer(["Warm up."], return_tensors="pt"), max_new_tokens=4, do_sample=False)
        start = time.perf_counter()
        model.generate(**batch, max_new_tokens=1, min_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        wall = time.perf_counter() - start
    tokens = (out.shape[1] - batch.input_ids.shape[1]) * len(prompts)
    tpot = (wall - prefill) * 1000 / max(1, args.max_tokens - 1)
    rows.append(Row(f"transformers static batch of {len(prompts)}", tokens / wall, prefill * 1000, prefill * 1000,
                    tpot, tpot, wall, tokens))
    if hasattr(model, "generate_batch") and not args.skip_hf_continuous:
        try:
            config = GenerationConfig(max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens, do_sample=False,
                                      eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
            inputs = [tokenizer(p).input_ids for p in prompts]
            with torch.no_grad():  # generate_batch fails under inference_mode
                start = time.perf_counter()
                outputs = model.generate_batch(inputs=inputs, generation_config=config)
                wall = time.perf_counter() - start
            tokens = sum(len(o.generated_tokens) for o in outputs.values())
            rows.append(Row("transformers generate_batch (continuous batching)", tokens / wall, None, None, None, None,
                            wall, tokens))
        except Exception as err:  # report, don't fail the whole benchmark
            print(f"transformers generate_batch failed: {err!r}", file=sys.stderr)
    return rows


def to_markdown(rows: list[Row], args: argparse.Namespace) -> str:
    def fmt(v: float | None, digits: int = 1) -> str:
        return "—" if v is None else f"{v:.{digits}f}"

    lines = [
        f"{args.concurrency} concurrent streams × {args.max_tokens} new tokens (greedy, EOS ignored), model {args.model} "
        f"({args.load_format} weights), "
        f"policy {args.policy}, {args.threads} torch threads",
        "",
        "| engine | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.engine} | {fmt(r.throughput_tok_s)} | {fmt(r.ttft_p50_ms)} | {fmt(r.ttft_p99_ms)} | "
                     f"{fmt(r.tpot_p50_ms)} | {fmt(r.tpot_p99_ms)} | {fmt(r.wall_s, 2)} |")
    by_name = {r.engine.split(" ")[0] + ("-inproc" if "in-process" in r.engine else ""): r for r in rows}
    stack = next((r for r in rows if r.engine.startswith("llmserve stack")), None)
    inproc = next((r for r in rows if "in-process" in r.engine), None)
    static = next((r for r in rows if "static" in r.engine), None)
    lines.append("")
    if stack and static:
        lines.append(f"- stack / transformers static throughput: **{stack.throughput_tok_s / static.throughput_tok_s:.2f}x**")
    if stack and inproc and stack.ttft_p50_ms is not None and inproc.ttft_p50_ms is not None and not args.sequential:
        lines.append(f"- TTFT p50 difference (stack − in-process) at {args.concurrency} concurrent streams: "
                     f"{stack.ttft_p50_ms - inproc.ttft_p50_ms:+.1f} ms (includes arrival spread and CPU shared with "
                     "the gateway and scheduler processes)")
    if stack and inproc and stack.ttft_p50_ms is not None and inproc.ttft_p50_ms is not None and args.sequential:
        lines.append(f"- TTFT p50 added by the gRPC hops (stack − in-process): **{stack.ttft_p50_ms - inproc.ttft_p50_ms:+.1f} ms**")
    del by_name
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="default")
    parser.add_argument("--load-format", default="auto", help="dummy: random weights of the model's config")
    parser.add_argument("--policy", default="fcfs", choices=POLICY_NAMES)
    parser.add_argument("--num-kv-blocks", type=int, default=1024)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the in-process and HF runs")
    parser.add_argument("--address", default="", help="bench an already running gateway instead of starting one")
    parser.add_argument("--engines", default="stack,inproc,hf", help="comma list of stack, inproc, hf")
    parser.add_argument("--skip-hf-continuous", action="store_true")
    parser.add_argument("--sequential", action="store_true",
                        help="one request at a time (isolates what the gRPC hops add to TTFT)")
    parser.add_argument("--out", default="bench_out/stack")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    prompts = benchmark_prompts(args.concurrency)
    engines = set(args.engines.split(","))
    rows: list[Row] = []
    if "stack" in engines:
        rows.append(asyncio.run(run_stack(args, prompts)))
        print(f"stack done: {rows[-1].throughput_tok_s:.1f} tok/s", file=sys.stderr)
    if "inproc" in engines:
        rows.append(run_in_process(args, prompts))
        print(f"in-process done: {rows[-1].throughput_tok_s:.1f} tok/s", file=sys.stderr)
    if "hf" in engines:
        rows.extend(run_hf(args, prompts))
    table = to_markdown(rows, args)
    print(table)
    (Path(args.out) / "results.md").write_text(table)
    (Path(args.out) / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
