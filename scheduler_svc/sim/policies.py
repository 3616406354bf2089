"""The policies the simulator runs, built by name: the service's (`make_policy`), plus
`tempo-oracle`, which only the simulator can build (issue 9's target 4, oracle_lengths.py)."""

from __future__ import annotations

from collections.abc import Mapping

from scheduler_svc.core.policy import POLICY_NAMES, Policy, make_policy
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.oracle_lengths import ORACLE_POLICY, make_oracle_tempo


# Policies that price steps with a cost model get the simulator's own (the same coefficients the
# simulated worker charges) when `SimConfig.cost_model_as_prior` is set, unless the options name one.
COST_AWARE_POLICIES = frozenset({"bros", "tempo", ORACLE_POLICY})
# What the simulator runs: the service's policies, plus the oracle that only it can build.
SIM_POLICY_NAMES: tuple[str, ...] = (*POLICY_NAMES, ORACLE_POLICY)


def build_policy(name: str, cost: CostModel, options: dict[str, object], cost_as_prior: bool = True,
                 true_lengths: Mapping[str, int] | None = None) -> Policy:
    """`make_policy(name, **options)`, plus `cost_model=cost` for cost-aware policies when
    `cost_as_prior` (else they start from their built-in prior, as the service does).
    `tempo-oracle` (SIM_POLICY_NAMES, issue 9's target 4) is tempo told `true_lengths`."""
    opts = dict(options)
    if (cost_as_prior and name in COST_AWARE_POLICIES and "cost_model" not in opts
            and "cost_model_path" not in opts):
        opts["cost_model"] = cost
    if name == ORACLE_POLICY:
        return make_oracle_tempo(true_lengths or {}, **opts)
    return make_policy(name, **opts)
