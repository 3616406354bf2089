"""Flags with environment fallbacks: every service flag `--foo-bar` can also be set as
`LLMSERVE_FOO_BAR`, so the same settings work from a shell, compose and Kubernetes."""

from __future__ import annotations

import argparse
import os
from typing import Any


def env_name(flag: str) -> str:
    """`--kvstore-addr` -> `LLMSERVE_KVSTORE_ADDR`."""
    return "LLMSERVE_" + flag.lstrip("-").replace("-", "_").upper()


def add_flag(parser: argparse.ArgumentParser, flag: str, *, default: Any = None, type: Any = str, help: str = "", **kwargs: Any) -> None:
    """Adds `flag` whose default comes from its LLMSERVE_* variable when set."""
    raw = os.environ.get(env_name(flag))
    if raw is not None:
        if type is bool:
            default = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            default = type(raw)
    if type is bool:
        parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=f"{help} [env {env_name(flag)}]", **kwargs)
    else:
        parser.add_argument(flag, default=default, type=type, help=f"{help} [env {env_name(flag)}]", **kwargs)
