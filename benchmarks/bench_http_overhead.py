"""What the OpenAI-compatible HTTP front adds to streaming latency over the gRPC front, side by side
in one run, at 1 and 32 concurrent streams.

Both fronts run in one gateway process over the same request lifecycle. Behind the gateway is a
stand-in scheduler that streams one token every `--interval-ms` per request (the real tokenizer
detokenizes them), so that the differences measured are the fronts' own (parsing, SSE/JSON vs
protobuf framing, the HTTP stack) rather than the model's step-to-step noise. Rounds alternate
between the fronts. Per front: client-observed TTFT (request sent to first text chunk) and TPOT
(mean gap between chunks after the first) p50/p99 over all streams, and the HTTP - gRPC
difference of the p50s.

The clients run in a process of their own, as a user's would (`--same-process`: in the gateway's
own event loop, as this benchmark did before, which charges the clients' own parsing, the aiohttp
client's SSE lines against the grpc client's C-core framing, to the fronts).

    .venv/bin/python benchmarks/bench_http_overhead.py [--rounds 6] [--tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import grpc  # noqa: E402

from gateway.client import GatewayClient  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.server import start_gateway  # noqa: E402
from llmserve.model_source import load_tokenizer, resolve_model  # noqa: E402
from llmserve.runtime.server import start_server  # noqa: E402
from llmserve.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, worker_pb2  # noqa: E402


class PacedScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Streams `max_tokens` tokens per request, one every `interval_s` (token ids cycle through
    ordinary words of the vocabulary), then LENGTH."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s

    async def Submit(self, request: scheduler_pb2.SubmitRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        n = request.sampling.max_tokens
        for i in range(n):
            await asyncio.sleep(self.interval_s)
            last = i == n - 1
            yield scheduler_pb2.TokenEvent(request_id=request.request_id, token_ids=[1000 + (i * 37) % 20000],
                                           finish_reason=common_pb2.FINISH_REASON_LENGTH if last else 0)

    async def Abort(self, request, context):  # noqa: N802
        return scheduler_pb2.AbortResponse(aborted=False)

    async def GetStats(self, request, context):  # noqa: N802
        model = worker_pb2.WorkerInfo(model_name="paced", vocab_size=49152, max_model_len=8192, block_size=16,
                                      num_blocks=1024, eos_token_ids=[0])
        return scheduler_pb2.SchedulerStats(policy="paced", num_workers=1, model=model)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": statistics.median(ordered) * 1e3, "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3}


async def grpc_stream(client: GatewayClient, tokens: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    times = []
    async for chunk in client.generate("Hello", max_tokens=tokens, service_class="best_effort"):
        if chunk.text:
            times.append(time.perf_counter())
    return times[0] - t0, (times[-1] - times[0]) / (len(times) - 1)


async def http_stream(session: aiohttp.ClientSession, tokens: int) -> tuple[float, float]:
    body = {"prompt": "Hello", "max_tokens": tokens, "stream": True, "slo": {"class": "best_effort"}}
    t0 = time.perf_counter()
    times = []
    async with session.post("/v1/completions", json=body) as response:
        async for line in response.content:
            if line.startswith(b"data: {") and b'"text":""' not in line:
                times.append(time.perf_counter())
    return times[0] - t0, (times[-1] - times[0]) / (len(times) - 1)


async def measure(grpc_address: str, http_base: str, rounds: int, tokens: int) -> dict:
    """The clients' side: alternating rounds of both fronts at 1 and 32 streams."""
    results: dict = {}
    async with GatewayClient(grpc_address) as client, aiohttp.ClientSession(
            http_base, connector=aiohttp.TCPConnector(limit=0)) as session:
        for streams in (1, 32):
            samples: dict[str, dict[str, list[float]]] = {f: {"ttft": [], "tpot": []} for f in ("grpc", "http")}
            for round_index in range(rounds + 1):  # round 0 warms both up and is not counted
                for front in (("grpc", "http") if round_index % 2 else ("http", "grpc")):
                    if front == "grpc":
                        runs = [grpc_stream(client, tokens) for _ in range(streams)]
                    else:
                        runs = [http_stream(session, tokens) for _ in range(streams)]
                    for ttft, tpot in await asyncio.gather(*runs):
                        if round_index:
                            samples[front]["ttft"].append(ttft)
                            samples[front]["tpot"].append(tpot)
            row = {front: {k: _summary(v) for k, v in s.items()} for front, s in samples.items()}
            row["http_minus_grpc_p50_ms"] = {k: row["http"][k]["p50_ms"] - row["grpc"][k]["p50_ms"]
                                             for k in ("ttft", "tpot")}
            results[str(streams)] = row
    return results


async def _client_process(grpc_address: str, http_base: str, args: argparse.Namespace) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--client", grpc_address, http_base,
            "--rounds", str(args.rounds), "--tokens", str(args.tokens)]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the client process failed (exit {process.returncode})")
    return json.loads(out)


async def main(args: argparse.Namespace) -> dict:
    tokenizer = await asyncio.to_thread(load_tokenizer, resolve_model("default"))
    scheduler = await start_server(lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(
        PacedScheduler(args.interval_ms / 1e3), s), ["llmserve.v1.Scheduler"])
    await scheduler.set_serving(True)
    gateway = await start_gateway(GatewayConfig(scheduler_addr=scheduler.address, http_address="127.0.0.1:0"),
                                  tokenizer=tokenizer)
    http_base = f"http://127.0.0.1:{gateway.service.http_port}"  # type: ignore[union-attr]
    results: dict = {"interval_ms": args.interval_ms, "tokens": args.tokens, "rounds": args.rounds,
                     "clients": "the gateway's process" if args.same_process else "a process of their own"}
    try:
        if args.same_process:
            results["streams"] = await measure(gateway.address, http_base, args.rounds, args.tokens)
        else:
            results["streams"] = await _client_process(gateway.address, http_base, args)
    finally:
        await gateway.stop(0)
        await scheduler.stop(0)
    return results


def table(results: dict) -> str:
    lines = ["| streams | front | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |", "|---|---|---|---|---|---|"]
    for streams, row in results["streams"].items():
        for front in ("grpc", "http"):
            r = row[front]
            lines.append(f"| {streams} | {front} | {r['ttft']['p50_ms']:.2f} | {r['ttft']['p99_ms']:.2f} | "
                         f"{r['tpot']['p50_ms']:.2f} | {r['tpot']['p99_ms']:.2f} |")
        d = row["http_minus_grpc_p50_ms"]
        lines.append(f"| {streams} | HTTP - gRPC (p50) | {d['ttft']:+.2f} | | {d['tpot']:+.2f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds per front and stream count")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per stream")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="the stand-in scheduler's time per token")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--same-process", action="store_true", help="clients in the gateway's event loop")
    parser.add_argument("--client", nargs=2, metavar=("GRPC_ADDRESS", "HTTP_BASE"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.client:  # the client process: measures, prints its samples' summary as JSON
        print(json.dumps(asyncio.run(measure(*arguments.client, arguments.rounds, arguments.tokens))))
        sys.exit(0)
    out = asyncio.run(main(arguments))
    print(table(out))
    if arguments.json:
        arguments.json.write_text(json.dumps(out, indent=2))
