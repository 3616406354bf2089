"""`python -m scheduler_svc`: runs the scheduler service until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import sys

from llmserve.runtime.service_main import run_service
from scheduler_svc.config import build_parser, config_from_args
from scheduler_svc.server import start_scheduler


def main() -> None:
    sys.exit(run_service("scheduler", build_parser(), config_from_args, start_scheduler))


if __name__ == "__main__":
    main()
