"""`python -m worker_svc --address ... --kvstore-addr ... --worker-id w0 --model default`."""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning OpenMP threads collapse (5-10x slower steps, measured) when
# the worker shares its cores with the other services; passive waiting costs little otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import asyncio  # noqa: E402
import logging  # noqa: E402

from llmserve.runtime.logs import configure_logging  # noqa: E402
from llmserve.runtime.server import install_signal_handlers  # noqa: E402
from llmserve.runtime.tracing import configure_tracing, shutdown_tracing  # noqa: E402

from worker_svc.config import build_parser, config_from_args  # noqa: E402
from worker_svc.server import start_worker  # noqa: E402

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
