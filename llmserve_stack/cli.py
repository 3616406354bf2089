"""The `llmserve` command: `up` starts the whole stack locally, `generate` streams a completion
from a running gateway, `bench` compares scheduling policies (simulated or live)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from llmserve.settings import add_settings, config_from_args
from llmserve_stack.bench import add_bench_parser, run_bench
from llmserve_stack.launch import StackConfig, preflight, service_specs
from llmserve_stack.supervisor import Stack, print_err

# `--class` spellings -> gateway.client's service class names.
CLASS_NAMES = {"rt": "real_time", "real_time": "real_time", "deadline": "deadline", "be": "best_effort",
               "best_effort": "best_effort"}
CLASS_SLO_DEFAULTS = {"real_time": {"ttft_ms": 2000.0, "tpot_ms": 200.0}, "deadline": {"deadline_ms": 30_000.0}}


def _add_up_parser(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up", help="start gateway, scheduler, workers and kvstore as local processes",
        description="Starts the kvstore, the workers, the scheduler and the gateway as processes, each once the "
                    "one before is healthy, and stops them (reverse order, each drains) on Ctrl-C or SIGTERM, or "
                    "when one exits. The service settings below are the services' own (same default, same "
                    "LLMSERVE_* variable); `python -m <service> --help` lists the rest.")
    add_settings(up, StackConfig)


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


async def _run_up(config: StackConfig) -> int:
    processes = service_specs(config)
    try:
        preflight(config, processes)
    except ValueError as err:
        print_err(f"llmserve up: {err}")
        return 2
    stack = Stack(processes, log_dir=config.log_dir or None)
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
        stop_wait.cancel()
        print_err(f"llmserve up failed: {start.exception()}")
        return 1
    gateway = stack.specs[-1].address
    print(f"llmserve gateway listening on {gateway}", flush=True)
    if config.http_port:
        print(f"llmserve OpenAI-compatible HTTP on http://{config.host}:{config.http_port}/v1", flush=True)
    print_err(f"try: llmserve generate --address {gateway} \"The capital of France is\"")
    exit_code = await _serve_until_stopped(stack, stop_wait)
    print_err("stopping llmserve ...")
    await stack.stop()
    print_err("all services stopped")
    return exit_code


async def _serve_until_stopped(stack: Stack, stop_wait: asyncio.Task[object]) -> int:
    """Waits for a stop signal (exit code 0) or for a service to exit on its own (1: the whole
    stack stops; a restart policy would go here)."""
    exit_wait = asyncio.create_task(stack.wait_exit())
    await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not exit_wait.done():
        exit_wait.cancel()
        return 0
    stop_wait.cancel()
    exited = exit_wait.result()
    print_err(f"{exited.spec.name} exited with code {exited.exited.result()}: stopping the stack")
    return 1


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
    """The `llmserve` parser; raises ValueError naming an LLMSERVE_* variable that does not parse."""
    parser = argparse.ArgumentParser(prog="llmserve", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_up_parser(subparsers)
    _add_generate_parser(subparsers)
    add_bench_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        up_config = config_from_args(StackConfig, args) if args.command == "up" else None
    except ValueError as err:
        print(f"llmserve: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if up_config is not None:
        return asyncio.run(_run_up(up_config))
    if args.command == "generate":
        return asyncio.run(_run_generate(args))
    if args.command == "bench":
        return run_bench(args)
    raise AssertionError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
