"""`python -m kvstore_svc`: runs the KV store until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import sys

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.service_main import run_service


def main() -> None:
    sys.exit(run_service("kvstore", KvStoreConfig, start_kvstore, prog="python -m kvstore_svc", description=__doc__))


if __name__ == "__main__":
    main()
