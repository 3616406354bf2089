"""`python -m worker_svc --address ... --kvstore-addr ... --worker-id w0 --model default`."""

from __future__ import annotations

import os

from worker_svc.openmp import set_openmp_defaults  # imports nothing heavy

# Before torch loads OpenMP, which reads them once (worker_svc/openmp.py says why these values).
set_openmp_defaults(os.environ)

import sys  # noqa: E402

from llmserve.runtime.service_main import run_service  # noqa: E402
from worker_svc.config import WorkerConfig  # noqa: E402
from worker_svc.start import start_worker  # noqa: E402


def main() -> None:
    sys.exit(run_service("worker", WorkerConfig, start_worker, prog="python -m worker_svc", description=__doc__))


if __name__ == "__main__":
    main()
