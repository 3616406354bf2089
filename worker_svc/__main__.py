"""`python -m worker_svc --address ... --kvstore-addr ... --worker-id w0 --model default`."""

from __future__ import annotations

import asyncio
import logging

from llmserve.runtime.logs import configure_logging
from llmserve.runtime.server import install_signal_handlers
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing

from worker_svc.config import build_parser, config_from_args
from worker_svc.server import start_worker

logger = logging.getLogger("worker_svc")


async def _serve(address: str, args) -> None:
    config = config_from_args(args)
    server = await start_worker(config, address)
    install_signal_handlers(lambda: server.stop(config.drain_grace_s))
    await server.wait_stopped()


def main() -> None:
    args = build_parser().parse_args()
    configure_logging("worker", args.log_level)
    provider = configure_tracing("worker")
    try:
        asyncio.run(_serve(args.address, args))
    finally:
        shutdown_tracing(provider)


if __name__ == "__main__":
    main()
