"""Fixtures of the worker tests: tiny random checkpoints (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.unit.worker.helpers import save_tiny_checkpoint
from worker_svc.kernels.backend import make_backend


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    out = {}
    for kind in ("llama", "qwen2"):
        folder = tmp_path_factory.mktemp(f"tiny-{kind}")
        out[kind] = (folder, save_tiny_checkpoint(kind, folder))
    return out


@pytest.fixture(scope="session")
def torch_backend():
    return make_backend("torch")
