"""The scheduler core stays pure: importing it and every policy loads no grpc, asyncio,
protobuf or torch."""

from __future__ import annotations

import subprocess
import sys


def test_core_and_policies_import_nothing_impure():
    code = (
        "import sys\n"
        "from scheduler_svc.core import POLICY_NAMES, make_policy\n"
        "for name in POLICY_NAMES: make_policy(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'asyncio', 'google', 'torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"impure imports: {out.stdout.strip()}"


def test_make_policy_rejects_unknown_names_and_options():
    import pytest

    from scheduler_svc.core import make_policy

    with pytest.raises(ValueError, match="unknown scheduling policy 'lifo'"):
        make_policy("lifo")
    with pytest.raises(ValueError, match="bad options for policy 'fcfs'"):
        make_policy("fcfs", cost_model_path="x.json")
