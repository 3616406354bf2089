"""`python -m scheduler_svc`: runs the scheduler service until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import asyncio
import logging
import sys

from llmserve.runtime.logs import configure_logging
from llmserve.runtime.server import install_signal_handlers
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing
from scheduler_svc.config import build_parser, config_from_args
from scheduler_svc.server import start_scheduler

logger = logging.getLogger("scheduler_svc")


async def _serve(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"scheduler_svc: {err}", file=sys.stderr)
        return 2
    provider = configure_tracing("scheduler")
    running = await start_scheduler(config, args.address)
    logger.info("scheduler serving on %s (policy %s, %d workers)", args.address, config.policy, len(config.worker_addrs))
    install_signal_handlers(lambda: running.stop(config.drain_grace_s))
    await running.wait_stopped()
    shutdown_tracing(provider)
    logger.info("scheduler stopped")
    return 0


def main() -> None:
    configure_logging("scheduler")
    sys.exit(asyncio.run(_serve(sys.argv[1:])))


if __name__ == "__main__":
    main()
