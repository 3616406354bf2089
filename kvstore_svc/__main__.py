"""`python -m kvstore_svc`: runs the KV store until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import asyncio
import logging
import sys

from llmserve.runtime.logs import configure_logging
from llmserve.runtime.server import install_signal_handlers
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing

from kvstore_svc.config import build_parser, config_from_args
from kvstore_svc.server import start_kvstore

logger = logging.getLogger("kvstore_svc")


async def _serve(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("kvstore", args.log_level, json_format=args.log_format != "text")
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"kvstore_svc: {err}", file=sys.stderr)
        return 2
    provider = configure_tracing("kvstore")
    running = await start_kvstore(config, args.address)
    install_signal_handlers(lambda: running.stop(config.drain_grace_s))
    await running.wait_stopped()
    shutdown_tracing(provider)
    logger.info("kvstore stopped")
    return 0


def main() -> None:
    sys.exit(asyncio.run(_serve(sys.argv[1:])))


if __name__ == "__main__":
    main()
