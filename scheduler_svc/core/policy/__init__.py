"""Scheduling policies, one file each, built by name with `make_policy(name, **options)`."""

from __future__ import annotations

import importlib

from scheduler_svc.core.policy.base import Policy, PreemptionMode, TicketView

# name -> (module, class). Modules load only when their policy is asked for.
_POLICIES: dict[str, tuple[str, str]] = {
    "fcfs": ("scheduler_svc.core.policy.fcfs", "FcfsPolicy"),
    "priority": ("scheduler_svc.core.policy.priority", "PriorityPolicy"),
    "edf": ("scheduler_svc.core.policy.edf", "EdfPolicy"),
    "bros": ("scheduler_svc.core.policy.bros", "BrosPolicy"),
    "tempo": ("scheduler_svc.core.policy.tempo", "TempoPolicy"),
}

POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)
# Options the factory never passes: the simulator injects these by hand (its target-4 oracle of
# output lengths, scheduler_svc/sim/oracle_lengths.py), so the service, which builds its policy
# here, cannot reach them.
SIMULATOR_ONLY_OPTIONS: frozenset[str] = frozenset({"lengths"})
# Policies that price steps with an iteration-time cost model (`cost_model` / `cost_model_path`).
COST_MODEL_POLICIES: tuple[str, ...] = ("bros", "tempo")


def make_policy(name: str, **options: object) -> Policy:
    """Builds a policy by name. Options are the policy's keyword arguments (e.g. `aging_s`;
    `cost_model` or `cost_model_path` for bros); an unknown name or option raises ValueError."""
    entry = _POLICIES.get(name)
    if entry is None:
        raise ValueError(f"unknown scheduling policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
    refused = SIMULATOR_ONLY_OPTIONS & set(options)
    if refused:
        raise ValueError(f"policy option {', '.join(sorted(refused))} is the simulator's to inject "
                         "(scheduler_svc.sim.oracle_lengths); served policies learn output lengths online")
    cls = getattr(importlib.import_module(entry[0]), entry[1])
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"bad options for policy {name!r}: {err}") from err


__all__ = ["COST_MODEL_POLICIES", "POLICY_NAMES", "SIMULATOR_ONLY_OPTIONS", "Policy", "PreemptionMode", "TicketView", "make_policy"]
