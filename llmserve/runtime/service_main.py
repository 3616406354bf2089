"""The `python -m <service>` entry point every service shares: parse the settings (flags, then
LLMSERVE_* variables), configure logging and tracing, start the server, drain on SIGTERM/SIGINT,
and exit 2 with a one-line reason when the configuration or the start fails."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from llmserve.errors import LlmServeError
from llmserve.runtime.logs import configure_logging
from llmserve.runtime.server import ServiceServer, install_signal_handlers
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing
from llmserve.settings import add_settings, config_from_args

S = TypeVar("S", bound=ServiceSettings)

# Failures a service can explain in one line (a bad flag, a peer that never became healthy, a
# port in use, a model that does not load) rather than with a traceback.
_START_ERRORS = (ValueError, LlmServeError, TimeoutError, OSError, RuntimeError)


def run_service(
    name: str,
    config_cls: type[S],
    start: Callable[[S, str], Awaitable[ServiceServer]],
    *,
    prog: str,
    description: str | None = None,
    argv: list[str] | None = None,
) -> int:
    """Runs one service until it is stopped by a signal; returns the process exit code.

    The flags are the settings of `config_cls` (a `ServiceSettings`), each with its LLMSERVE_*
    variable as fallback; `start(config, address)` starts the server and returns once it is
    SERVING. A bad flag or variable (ValueError from parsing or from the config's validation)
    exits 2 with the message.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    try:
        add_settings(parser, config_cls)
        config = config_from_args(config_cls, parser.parse_args(argv))
    except ValueError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2
    configure_logging(name, config.log_level, config.log_format != "text")
    logger = logging.getLogger(name)

    async def serve() -> int:
        provider = configure_tracing(name)
        try:
            try:
                running = await start(config, config.address)
            except _START_ERRORS as err:
                print(f"{name}: could not start: {err}", file=sys.stderr)
                return 2
            logger.info("%s serving on %s", name, running.address if config.address.endswith(":0") else config.address)
            install_signal_handlers(lambda: running.stop(config.drain_grace_s))
            await running.wait_stopped()
            logger.info("%s stopped", name)
            return 0
        finally:
            shutdown_tracing(provider)

    return asyncio.run(serve())
