"""The router's placements (issue 13): KV-aware weighs the miss against the queue, a workflow
keeps its worker within the slack, load-only ignores the cache, round-robin rotates, ties rotate."""

from __future__ import annotations

import pytest

from scheduler_svc.core.placement import Placement, PlacementConfig, Router, WorkerLoad

IDLE = WorkerLoad(0, 0, 0)


def test_kv_aware_takes_the_hit_unless_its_queue_costs_more_than_the_miss() -> None:
    router = Router(PlacementConfig(Placement.KV_AWARE))
    hit = WorkerLoad(cached_tokens=3000, backlog_tokens=1000, num_running=2)
    assert router.choose(4000, [IDLE, hit]) == 1  # miss 4000 > 1000 + 64 + 1000
    busy_hit = WorkerLoad(cached_tokens=3000, backlog_tokens=5000, num_running=2)
    assert router.choose(4000, [IDLE, busy_hit]) == 0


def test_load_only_ignores_the_cache() -> None:
    router = Router(PlacementConfig(Placement.LOAD))
    assert router.choose(4000, [WorkerLoad(0, 10, 0), WorkerLoad(3000, 20, 0)]) == 0


def test_round_robin_and_ties_rotate() -> None:
    rr = Router(PlacementConfig(Placement.ROUND_ROBIN))
    assert [rr.choose(10, [IDLE] * 3) for _ in range(4)] == [0, 1, 2, 0]
    kv = Router(PlacementConfig(Placement.KV_AWARE))
    assert [kv.choose(10, [IDLE] * 3) for _ in range(3)] == [0, 1, 2]


def test_a_workflow_keeps_its_worker_within_the_slack() -> None:
    router = Router(PlacementConfig(Placement.KV_AWARE, affinity_slack=0.25))
    assert router.choose(1000, [IDLE, WorkerLoad(0, 500, 0)], "wf") == 0
    # Its worker now costs 1100 against 1000 elsewhere: within 25%, it stays.
    assert router.choose(1000, [WorkerLoad(0, 100, 0), IDLE], "wf") == 0
    assert router.choose(1000, [WorkerLoad(0, 900, 0), IDLE], "wf") == 1  # 1900 > 1250: it moves


def test_bad_settings_and_no_worker_are_refused() -> None:
    with pytest.raises(ValueError):
        PlacementConfig(affinity_slack=-1)
    with pytest.raises(ValueError):
        Router(PlacementConfig()).choose(10, [])
