"""The `llmserve` command: `up` starts the whole stack locally, `generate` streams a completion
from a running gateway (`cancel` and `model-info` beside it), `bench` compares scheduling policies
(simulated or live)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile

from llmserve.settings import add_settings, config_from_args
from llmserve_stack.bench import add_bench_parser, run_bench
from llmserve_stack.client_cli import add_client_parsers, run_cancel, run_generate, run_model_info
from llmserve_stack.launch import ServiceSpec, StackConfig, preflight, service_specs, stack_tls
from llmserve_stack.restarts import RestartPolicy
from llmserve_stack.supervisor import Stack, print_err


def _add_up_parser(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up", help="start gateway, scheduler, workers and kvstore as local processes",
        description="Starts the kvstore, the workers, the scheduler and the gateway as processes, each once the "
                    "one before is healthy; restarts one that exits on its own (same address, with backoff) "
                    "while the others keep serving; and stops them (reverse order, each drains) on Ctrl-C or "
                    "SIGTERM, or when one keeps failing (exit code 1). The service settings below are the "
                    "services' own (same default, same LLMSERVE_* variable); `python -m <service> --help` "
                    "lists the rest.")
    add_settings(up, StackConfig)


async def _run_up(config: StackConfig) -> int:
    # What lives only as long as this run, in a folder only we can read: the workers' start-up
    # calibrations (a restarted worker reuses its own) and, with --tls, the CA's and the services' keys.
    with tempfile.TemporaryDirectory(prefix="llmserve-up-") as folder:
        if not config.tls:
            return await _run_checked(config, service_specs(config, state_dir=folder))
        try:
            tls = stack_tls(config, folder)
        except RuntimeError as err:
            print_err(f"llmserve up --tls: {err}")
            return 1
        print_err(f"TLS on every hop; the stack's throwaway CA: {tls.ca.cert} (deleted when the stack stops)")
        return await _run_checked(config, service_specs(config, tls=tls, state_dir=folder), tls_ca=str(tls.ca.cert))


async def _run_checked(config: StackConfig, processes: list[ServiceSpec], tls_ca: str | None = None) -> int:
    """Runs the stack of `processes` once `preflight` finds nothing wrong (exit code 2 if it does)."""
    try:
        preflight(config, processes)
    except ValueError as err:
        print_err(f"llmserve up: {err}")
        return 2
    return await _run_stack(config, Stack(processes, log_dir=config.log_dir or None), tls_ca)


async def _run_stack(config: StackConfig, stack: Stack, tls_ca: str | None = None) -> int:
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
    tls_flag = f" --tls-ca {tls_ca}" if tls_ca else ""
    print_err(f"try: llmserve generate --address {gateway}{tls_flag} \"The capital of France is\"")
    policy = RestartPolicy(max_restarts=config.max_restarts, window_s=config.restart_window_s)
    exit_code = await _serve_until_stopped(stack, stop_wait, policy)
    print_err("stopping llmserve ...")
    await stack.stop()
    print_err("all services stopped")
    return exit_code


async def _serve_until_stopped(stack: Stack, stop_wait: asyncio.Task[object], policy: RestartPolicy) -> int:
    """Restarts services that exit on their own until a stop signal (exit code 0) or until one
    fails more than `policy` allows (1: the whole stack stops)."""
    exit_code = await stack.supervise(stop_wait, policy)
    if exit_code != 0:
        stop_wait.cancel()
        print_err(f"a service exited more than {policy.max_restarts} times within {policy.window_s:.0f}s: "
                  "stopping the stack (its log says why)")
    return exit_code


def build_parser() -> argparse.ArgumentParser:
    """The `llmserve` parser; raises ValueError naming an LLMSERVE_* variable that does not parse."""
    parser = argparse.ArgumentParser(prog="llmserve", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_up_parser(subparsers)
    add_client_parsers(subparsers)
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
    if args.command == "bench":
        return run_bench(args)
    client_commands = {"generate": run_generate, "cancel": run_cancel, "model-info": run_model_info}
    try:
        return asyncio.run(client_commands[args.command](args))
    except KeyboardInterrupt:  # Ctrl-C: the stream's call is cancelled with the loop, so the server aborts it
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
