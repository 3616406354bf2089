"""Test-wide setup. TRITON_INTERPRET must be set before any kernel module is imported, since
`@triton.jit` reads it at decoration time; without a GPU every kernel test runs interpreted."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
