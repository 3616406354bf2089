"""Several simulated workers behind the router (issue 13): every request finishes on the worker it
was placed on, counts stay exact on each, and KV-aware placement finds more of the shared
prefixes than round-robin does."""

from __future__ import annotations

import dataclasses
import random

import pytest

from scheduler_svc.core.placement import Placement, PlacementConfig
from scheduler_svc.sim.cluster import ClusterSimulation
from scheduler_svc.sim.simulator import SimConfig
from tests.sim.helpers import TEST_COST, mixed_workload

CONFIG = SimConfig(num_blocks=500, max_num_batched_tokens=1024, max_num_seqs=32, max_model_len=4096,
                   check_invariants_every=40, prefix_cache=True)


def _workload() -> list:
    """40 prefix groups (think: conversations), each request sharing its group's first 8 blocks of
    64 tokens: more than one worker's free blocks hold, a quarter of them fit."""
    base = mixed_workload(seed=5, duration_s=8.0, rt_rate=16.0, be_rate=4.0)
    rng = random.Random(5)  # groups drawn at random, so that no rotation lines up with them
    groups = [rng.randrange(40) for _ in base]
    return [dataclasses.replace(r, hash_ids=tuple(range(1000 * g, 1000 * g + 8)), hash_block_tokens=64)
            for g, r in zip(groups, base)]


@pytest.fixture(scope="module")
def runs() -> dict[Placement, ClusterSimulation]:
    out = {}
    for placement in Placement:
        sim = ClusterSimulation(_workload(), "bros", TEST_COST, CONFIG, 4, PlacementConfig(placement))
        result = sim.run()
        assert result.num_unfinished == 0 and result.num_failed_steps == 0
        out[placement] = (sim, result)
    return out


def test_every_request_finishes_with_exact_counts_on_every_worker(runs) -> None:
    for sim, result in runs.values():
        assert len(sim.placed) == len(result.records)
        assert len(set(sim.placed.values())) == 4  # every worker served
        for node in sim.nodes:
            node.check_invariants()
        assert all(r.finish_s is not None for r in result.records)


def test_kv_aware_placement_finds_more_hits_than_round_robin(runs) -> None:
    kv = runs[Placement.KV_AWARE][1].stats.prefix
    rr = runs[Placement.ROUND_ROBIN][1].stats.prefix
    load = runs[Placement.LOAD][1].stats.prefix
    assert kv["prefix_hit_rate"] > max(rr["prefix_hit_rate"], load["prefix_hit_rate"]) + 0.1


def test_one_worker_cluster_runs_as_the_simulation() -> None:
    from scheduler_svc.sim.simulator import Simulation
    reqs = _workload()
    one = ClusterSimulation(reqs, "fcfs", TEST_COST, CONFIG, 1, PlacementConfig()).run()
    ref = Simulation(reqs, "fcfs", TEST_COST, CONFIG).run()
    assert [r.token_times for r in one.records] == [r.token_times for r in ref.records]
