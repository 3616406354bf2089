"""`python -m gateway`: serves the public Gateway until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import asyncio
import logging
import sys

from llmserve.runtime.errors import LlmServeError
from llmserve.runtime.logs import configure_logging
from llmserve.runtime.server import install_signal_handlers
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing

from gateway.config import build_parser, config_from_args
from gateway.server import start_gateway

logger = logging.getLogger("gateway")


async def _serve(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("gateway", args.log_level, json_format=args.log_format != "text")
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return 2
    provider = configure_tracing("gateway")
    try:
        running = await start_gateway(config, args.address)
    except (LlmServeError, TimeoutError, OSError) as err:
        print(f"gateway: {err}", file=sys.stderr)
        shutdown_tracing(provider)
        return 2
    install_signal_handlers(lambda: running.stop(config.drain_grace_s))
    await running.wait_stopped()
    shutdown_tracing(provider)
    logger.info("gateway stopped")
    return 0


def main() -> None:
    sys.exit(asyncio.run(_serve(sys.argv[1:])))


if __name__ == "__main__":
    main()
