"""`python -m worker_svc --address ... --kvstore-addr ... --worker-id w0 --model default`."""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning OpenMP threads collapse (5-10x slower steps, measured) when
# the worker shares its cores with the other services; passive waiting costs little otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402

from llmserve.runtime.service_main import run_service  # noqa: E402
from worker_svc.config import WorkerConfig  # noqa: E402
from worker_svc.start import start_worker  # noqa: E402


def main() -> None:
    sys.exit(run_service("worker", WorkerConfig, start_worker, prog="python -m worker_svc", description=__doc__))


if __name__ == "__main__":
    main()
