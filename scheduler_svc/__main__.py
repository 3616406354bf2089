"""`python -m scheduler_svc`: runs the scheduler service until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import sys

from llmserve.runtime.service_main import run_service
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler


def main() -> None:
    sys.exit(run_service("scheduler", SchedulerServiceConfig, start_scheduler, prog="python -m scheduler_svc", description=__doc__))


if __name__ == "__main__":
    main()
