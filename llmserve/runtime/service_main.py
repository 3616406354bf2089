"""The `python -m <service>` entry point every service shares: parse flags, configure logging and
tracing, start the server, drain on SIGTERM/SIGINT, and exit 2 with a one-line reason when the
configuration or the start fails."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from llmserve.errors import LlmServeError
from llmserve.runtime.logs import configure_logging
from llmserve.runtime.server import ServiceServer, install_signal_handlers
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing

# Failures a service can explain in one line (a bad flag, a peer that never became healthy, a
# port in use, a model that does not load) rather than with a traceback.
_START_ERRORS = (ValueError, LlmServeError, TimeoutError, OSError, RuntimeError)


def run_service(
    name: str,
    parser: argparse.ArgumentParser,
    make_config: Callable[[argparse.Namespace], Any],
    start: Callable[[Any, str], Awaitable[ServiceServer]],
    argv: list[str] | None = None,
) -> int:
    """Runs one service until it is stopped by a signal; returns the process exit code.

    `make_config(args)` builds the frozen config (raising ValueError on bad flags), `start(config,
    address)` starts the server and returns once it is SERVING. The config's `drain_grace_s` (5 s
    when it has none) is the grace in-flight calls get on SIGTERM.
    """
    args = parser.parse_args(argv)
    log_format = getattr(args, "log_format", None)
    configure_logging(name, getattr(args, "log_level", None), None if log_format is None else log_format != "text")
    logger = logging.getLogger(name)
    try:
        config = make_config(args)
    except ValueError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2

    async def serve() -> int:
        provider = configure_tracing(name)
        try:
            try:
                running = await start(config, args.address)
            except _START_ERRORS as err:
                print(f"{name}: could not start: {err}", file=sys.stderr)
                return 2
            logger.info("%s serving on %s", name, running.address if args.address.endswith(":0") else args.address)
            install_signal_handlers(lambda: running.stop(getattr(config, "drain_grace_s", 5.0)))
            await running.wait_stopped()
            logger.info("%s stopped", name)
            return 0
        finally:
            shutdown_tracing(provider)

    return asyncio.run(serve())
