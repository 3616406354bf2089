"""The `llmserve` command: `up` starts the whole stack locally, `generate` streams a completion
from a running gateway, `bench` compares scheduling policies (simulated or live)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from llmserve.launch import StackConfig, service_specs

# `--class` spellings -> gateway.client's service class names.
CLASS_NAMES = {"rt": "real_time", "real_time": "real_time", "deadline": "deadline", "be": "best_effort",
               "best_effort": "best_effort"}
CLASS_SLO_DEFAULTS = {"real_time": {"ttft_ms": 2000.0, "tpot_ms": 200.0}, "deadline": {"deadline_ms": 30_000.0}}


def _add_up_parser(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="start gateway, scheduler, workers and kvstore as local processes")
    up.add_argument("--port", type=int, default=50051, help="the gateway's port on loopback (default 50051)")
    up.add_argument("--host", default="127.0.0.1", help="address every service binds (default loopback)")
    up.add_argument("--workers", type=int, default=1, help="number of worker processes (default 1)")
    up.add_argument("--model", default="default", help="'default' (bundled SmolLM2-135M), a HF folder or a .gguf")
    up.add_argument("--load-format", default="auto", choices=["auto", "safetensors", "gguf", "dummy"])
    up.add_argument("--tokenizer", default="", help="tokenizer folder (for dummy weights of another model)")
    up.add_argument("--policy", default="fcfs", help="scheduling policy: fcfs, priority, edf, bros, tempo")
    up.add_argument("--cost-model", default="", help="bros, tempo: step-time coefficients JSON "
                    "(e.g. scheduler_svc/sim/profiles/cpu_smollm2_135m.json on a CPU)")
    up.add_argument("--num-kv-blocks", type=int, default=0, help="KV blocks per worker (0: sized by the worker)")
    up.add_argument("--block-size", type=int, default=16)
    up.add_argument("--max-num-batched-tokens", type=int, default=512, help="per-step token budget")
    up.add_argument("--max-num-seqs", type=int, default=64)
    up.add_argument("--dtype", default="auto")
    up.add_argument("--device", default="auto")
    up.add_argument("--log-dir", default="", help="write each service's log to DIR/<service>.log")
    up.add_argument("--log-format", default="json", choices=["json", "text"])


def _add_generate_parser(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser("generate", help="stream a completion from a running gateway")
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--address", default="127.0.0.1:50051", help="gateway address")
    gen.add_argument("--class", dest="service_class", default="rt", choices=sorted(CLASS_NAMES))
    gen.add_argument("--ttft-ms", type=float, default=None, help="real-time: time to first token (default 2000)")
    gen.add_argument("--tpot-ms", type=float, default=None, help="real-time: time per output token (default 200)")
    gen.add_argument("--deadline-ms", type=float, default=None, help="deadline class: time to last token")
    gen.add_argument("--priority", type=int, default=0)
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--chat", action="store_true", help="apply the model's chat template")
    gen.add_argument("--tenant", default="")
    gen.add_argument("--usage", action="store_true", help="print token counts and latencies at the end")


async def _run_up(args: argparse.Namespace) -> int:
    from llmserve.supervisor import Stack, print_err

    config = StackConfig(
        port=args.port, host=args.host, num_workers=args.workers, model=args.model,
        load_format=args.load_format, tokenizer=args.tokenizer, policy=args.policy, cost_model=args.cost_model,
        num_kv_blocks=args.num_kv_blocks, block_size=args.block_size,
        max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
        dtype=args.dtype, device=args.device, log_format=args.log_format,
    )
    stack = Stack(service_specs(config), log_dir=args.log_dir or None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print_err(f"starting llmserve: {config.num_workers} worker(s), model {config.model}, policy {config.policy}")
    start = asyncio.create_task(stack.start())
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        await stack.stop()
        print_err("stopped before the stack was ready")
        return 130
    if start.exception() is not None:
        print_err(f"llmserve up failed: {start.exception()}")
        return 1
    gateway = stack.specs[-1].address
    print(f"llmserve gateway listening on {gateway}", flush=True)
    print_err(f"try: llmserve generate --address {gateway} \"The capital of France is\"")
    exit_code = 0
    while not stop.is_set():
        failed = stack.failed_service()
        if failed is not None:
            print_err(f"{failed.spec.name} exited with code {failed.process.returncode}: stopping the stack")
            exit_code = 1
            break
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        except asyncio.TimeoutError:
            pass
    print_err("stopping llmserve ...")
    await stack.stop()
    print_err("all services stopped")
    return exit_code


async def _run_generate(args: argparse.Namespace) -> int:
    import grpc

    from gateway.client import build_request
    from llmserve.runtime.channel import open_channel
    from llmserve.v1 import common_pb2, gateway_pb2_grpc

    service_class = CLASS_NAMES[args.service_class]
    # The SLO values a class needs get a default here, so `--class rt` alone is a valid request.
    slo = {"ttft_ms": args.ttft_ms, "tpot_ms": args.tpot_ms, "deadline_ms": args.deadline_ms}
    for name, default in CLASS_SLO_DEFAULTS.get(service_class, {}).items():
        if slo[name] is None:
            slo[name] = default
    request = build_request(
        args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed, stop=args.stop, service_class=service_class, priority=args.priority, tenant=args.tenant,
        apply_chat_template=args.chat, **slo,
    )
    async with open_channel(args.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        try:
            last = None
            async for chunk in stub.Generate(request):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk
        except grpc.aio.AioRpcError as err:
            print(f"\nerror: {err.code().name}: {err.details()}", file=sys.stderr)
            return 2
    sys.stdout.write("\n")
    if args.usage and last is not None:
        usage = last.usage
        print(f"[{common_pb2.FinishReason.Name(last.finish_reason)}] prompt {usage.prompt_tokens} tokens, "
              f"completion {usage.completion_tokens} tokens, TTFT {usage.ttft_ms:.1f} ms, "
              f"TPOT {usage.mean_tpot_ms:.1f} ms, SLO {'met' if usage.slo_attained else 'missed'}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmserve", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_up_parser(subparsers)
    _add_generate_parser(subparsers)
    try:
        from llmserve.bench import add_bench_parser
    except ImportError:  # the bench module is optional at import time
        add_bench_parser = None
    if add_bench_parser is not None:
        add_bench_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "up":
        return asyncio.run(_run_up(args))
    if args.command == "generate":
        return asyncio.run(_run_generate(args))
    if args.command == "bench":
        from llmserve.bench import run_bench

        return run_bench(args)
    raise AssertionError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
