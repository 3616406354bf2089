"""The target-4 oracle (tempo told true output lengths, scheduler_svc/sim/oracle_lengths.py) is
simulator-only: no served code imports it, the policy factory the service uses cannot build it,
and the service's settings do not name it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.core.policy import POLICY_NAMES, make_policy
from scheduler_svc.sim.oracle_lengths import ORACLE_POLICY, OracleLengths
from tests.contract.test_layers import ROOT, imports

ORACLE_MODULE = "scheduler_svc.sim.oracle_lengths"
# Everything that runs in a served stack: the services but the simulator, and the ground floor.
SERVED = ("llmserve", "gateway", "scheduler_svc", "worker_svc", "kvstore_svc")


def _served_files() -> list[Path]:
    files = []
    for package in SERVED:
        for path in (ROOT / package).rglob("*.py"):
            if (ROOT / "scheduler_svc" / "sim") not in path.parents:
                files.append(path)
    return files


def test_no_served_module_imports_the_simulator():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in _served_files()
                 for line, name in imports(path) if name == "scheduler_svc.sim" or name.startswith("scheduler_svc.sim.")]
    assert not offenders, offenders
    assert len(_served_files()) > 50  # the scan saw the tree


def test_the_policy_factory_refuses_injected_lengths():
    with pytest.raises(ValueError, match="simulator"):
        make_policy("tempo", lengths=OracleLengths({}))
    assert ORACLE_POLICY not in POLICY_NAMES
    with pytest.raises(ValueError):
        make_policy(ORACLE_POLICY)


def test_the_service_cannot_be_configured_with_the_oracle():
    with pytest.raises(ValueError):
        SchedulerServiceConfig(worker_addrs=("127.0.0.1:1",), policy=ORACLE_POLICY)
    with pytest.raises(ValueError, match="simulator"):
        # policy_options is the one door for code: it goes through make_policy too.
        make_policy("tempo", **dict(SchedulerServiceConfig(worker_addrs=("127.0.0.1:1",), policy="tempo",
                                                           policy_options=(("lengths", OracleLengths({})),)
                                                           ).policy_options))
