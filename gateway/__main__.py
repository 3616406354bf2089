"""`python -m gateway`: serves the public Gateway until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import sys

from gateway.config import GatewayConfig
from gateway.server import start_gateway
from llmserve.runtime.service_main import run_service


def main() -> None:
    sys.exit(run_service("gateway", GatewayConfig, start_gateway, prog="python -m gateway", description=__doc__))


if __name__ == "__main__":
    main()
