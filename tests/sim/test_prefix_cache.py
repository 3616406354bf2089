"""The simulator's prefix cache (issue 13): a prompt's cached prefix is not prefilled (the step's
cost charges only the uncached part), hits need the same ids under the same tenant and scope,
caching can be turned off, and every reference is released when the requests are done."""

from __future__ import annotations

import dataclasses

import pytest

from llmserve.prefix import reuse_bound
from scheduler_svc.sim.simulator import SimConfig, Simulation
from scheduler_svc.sim.prefix import prefix_counters, workload_chain
from scheduler_svc.sim.workload import WorkloadRequest
from tests.sim.helpers import TEST_COST, mixed_workload

CONFIG = SimConfig(num_blocks=400, block_size=16, max_num_batched_tokens=4096, max_num_seqs=16, max_model_len=4096,
                   prefix_cache=True, prefix_host_tier_bytes=0)
BLOCK_BYTES = 16 * CONFIG.kv_bytes_per_token


def _req(rid: str, at: float, ids: tuple[int, ...], prompt: int = 1024, tenant: str = "t",
         scope: str = "") -> WorkloadRequest:
    return WorkloadRequest(rid, at, prompt, 4, "best_effort", tenant=tenant, hash_ids=ids, hash_block_tokens=512,
                           hash_scope=scope)


def _run(requests: list[WorkloadRequest], config: SimConfig = CONFIG) -> tuple[Simulation, list[tuple[int, int]]]:
    """The simulation, and (prefill tokens, steps) of each step that prefilled."""
    prefills: list[int] = []
    sim = Simulation(requests, "fcfs", TEST_COST, config,
                     on_step=lambda plan, result, dt, now: prefills.append(result.timing.num_prefill_tokens))
    result = sim.run()
    assert result.num_unfinished == 0 and result.num_failed_steps == 0
    return sim, [p for p in prefills if p]


def test_a_repeated_prompt_prefills_only_its_uncached_part() -> None:
    sim, prefills = _run([_req("a", 0.0, (1, 2)), _req("b", 5.0, (1, 2)), _req("c", 10.0, (1, 3))])
    # a: all 1024; b: the whole prompt is cached but its last block (the last token is computed);
    # c: shares the first 512-token trace block.
    assert prefills == [1024, 16, 512]
    counters = prefix_counters([(sim.nodes[0].prefix_stats, sim.cache)])  # type: ignore[list-item]
    assert counters is not None
    assert counters["prefix_hit_blocks"] == 63 + 32 and counters["prefill_tokens_saved"] == 95 * 16
    # Only a request the worker still holds (the last one, dropped with a next plan) references blocks.
    assert {o if isinstance(o, str) else o[0] for o in sim.cache.index.owners()} <= set(sim.worker.book.request_ids)  # type: ignore[union-attr]


def test_hits_need_the_same_tenant_and_scope() -> None:
    _, prefills = _run([_req("a", 0.0, (1, 2)), _req("b", 5.0, (1, 2), tenant="other"),
                        _req("c", 10.0, (1, 2), scope="session-2")])
    assert prefills == [1024, 1024, 1024]


def test_off_computes_every_prompt() -> None:
    sim, prefills = _run([_req("a", 0.0, (1, 2)), _req("b", 5.0, (1, 2))],
                         dataclasses.replace(CONFIG, prefix_cache=False))
    assert prefills == [1024, 1024] and sim.prefix is None and sim.cache is None


def test_cached_blocks_live_in_free_space_and_go_lru() -> None:
    # 400 blocks; each prompt is 64 blocks: 8 distinct prompts leave room for 6 and a quarter.
    reqs = [_req(f"r{k}", 3.0 * k, (10 * k, 10 * k + 1)) for k in range(8)] + [_req("again", 30.0, (0, 1))]
    sim, prefills = _run(reqs)
    assert prefills[-1] == 1024  # r0's prefix was evicted for the others
    stats = sim.cache.stats  # type: ignore[union-attr]
    assert stats.evicted_blocks > 0 and sim.cache.index.num_cached <= CONFIG.num_blocks  # type: ignore[union-attr]
    reqs[-1] = _req("again", 30.0, (10, 11))  # r1 lost its tail first: its first blocks are still cached
    _, prefills = _run(reqs)
    assert 16 < prefills[-1] < 1024
    reqs[-1] = _req("again", 30.0, (70, 71))  # the latest prompt is cached whole
    _, prefills = _run(reqs)
    assert prefills[-1] == 16


def test_the_host_tier_serves_what_the_pool_evicted_as_a_copy() -> None:
    """The LRU case above with a host tier: r0's evicted prefix is demoted, and its return is
    served from the host tier (copied into fresh blocks, charged as a copy, not prefilled)."""
    reqs = [_req(f"r{k}", 3.0 * k, (10 * k, 10 * k + 1)) for k in range(8)] + [_req("again", 30.0, (0, 1))]
    steps: list[tuple[int, float]] = []
    config = dataclasses.replace(CONFIG, prefix_host_tier_bytes=256 * BLOCK_BYTES)
    sim = Simulation(reqs, "fcfs", TEST_COST, config,
                     on_step=lambda plan, result, dt, now: steps.append((result.timing.num_prefill_tokens, dt)))
    result = sim.run()
    assert result.num_unfinished == 0 and result.num_failed_steps == 0
    prefills = [p for p, _ in steps if p]
    assert prefills[-1] == 16  # the whole prefix from the host tier but the last block
    counters = result.stats.prefix
    assert counters is not None and counters["prefix_host_hit_blocks"] == 63
    assert counters["prefix_demoted_blocks"] > 0 and counters["prefix_hit_blocks"] == 63
    last_dt = [dt for p, dt in steps if p][-1]
    copy_s = 63 * BLOCK_BYTES / config.link_bytes_per_s
    assert last_dt >= copy_s  # the copy is charged to the step ...
    cold = [dt for p, dt in steps if p == 1024][0]
    assert last_dt < cold  # ... and costs less than the prefill it saves
    assert len(sim.cache.host_tier) <= 256  # type: ignore[union-attr, arg-type]
    sim.cache.check()  # type: ignore[union-attr]


def test_a_host_tier_too_small_for_a_prefix_serves_its_head_only_if_it_holds_it() -> None:
    reqs = [_req(f"r{k}", 3.0 * k, (10 * k, 10 * k + 1)) for k in range(8)] + [_req("again", 30.0, (0, 1))]
    sim, prefills = _run(reqs, dataclasses.replace(CONFIG, prefix_host_tier_bytes=8 * BLOCK_BYTES))
    assert prefills[-1] == 1024  # the tier kept the latest 8 demoted blocks, not r0's
    assert len(sim.cache.host_tier) == 8  # type: ignore[union-attr, arg-type]


@pytest.mark.parametrize("policy,host_blocks", [("fcfs", 0), ("bros", 0), ("tempo", 0), ("bros", 64), ("tempo", 64)])
def test_references_are_exact_under_load(policy: str, host_blocks: int) -> None:
    """A loaded mixed workload whose requests share prefixes: preemptions, checkpoints and
    restores happen, and the index's counts stay exact (checked every 50 steps and at the end)."""
    base = mixed_workload(seed=3, duration_s=10.0, rt_rate=12.0, be_rate=4.0)
    families = 40 if host_blocks else 5  # with a host tier: more prefixes than the pool holds
    reqs = [dataclasses.replace(r, hash_ids=tuple(range(10 * (k % families), 10 * (k % families) + 8)),
                                hash_block_tokens=64) for k, r in enumerate(base)]
    config = SimConfig(num_blocks=600, max_num_batched_tokens=1024, max_num_seqs=32, max_model_len=4096,
                       prefix_cache=True, prefix_host_tier_bytes=host_blocks * BLOCK_BYTES)
    sim = Simulation(reqs, policy, TEST_COST, dataclasses.replace(config, check_invariants_every=50))
    result = sim.run()
    assert result.num_unfinished == 0 and result.num_failed_steps == 0
    assert result.stats.preemptions > 0  # the counts went through preemptions ...
    if policy != "fcfs":  # ... and, where the policy checkpoints, through checkpoints and restores
        assert result.stats.checkpoint["host_tier_restores"] > 0  # type: ignore[index]
    assert sim.cache is not None and sim.cache.stats.hit_blocks > 0
    if host_blocks:
        assert sim.cache.stats.host_hit_blocks > 0 and sim.cache.stats.demoted_blocks > 0
    sim.cache.check()
    live = {rid for rid in sim.worker.book.request_ids}
    assert {o if isinstance(o, str) else o[0] for o in sim.cache.index.owners()} <= live


def test_the_bound_counts_what_an_infinite_cache_could_serve() -> None:
    reqs = [_req("a", 0.0, (1, 2)), _req("b", 5.0, (1, 2)), _req("c", 10.0, (1, 3))]
    bound = reuse_bound(((r.prompt_tokens, workload_chain(r, 16)) for r in reqs), 16)
    assert (bound.num_blocks, bound.num_reusable) == (63 * 3, 63 + 32)
