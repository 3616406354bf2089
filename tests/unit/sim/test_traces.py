"""Workload converters on the real traces in ../shared/traces (skipped when the folder is absent)."""

from __future__ import annotations

import collections
import statistics

import pytest

from scheduler_svc.sim.workload import WorkloadRequest, check_workload
from scheduler_svc.sim.workloads import traces
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec

pytestmark = pytest.mark.skipif(not traces.traces_dir().is_dir(), reason="traces folder ../shared/traces absent")


def test_traces_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(traces.TRACES_ENV, str(tmp_path))
    assert traces.traces_dir() == tmp_path
    with pytest.raises(traces.TraceMissingError, match="LLMSERVE_TRACES_DIR"):
        traces.read_azure()


def test_azure_conv_matches_published_stats():
    calls = traces.read_azure(traces.AZURE_CONV)
    assert len(calls) == 19_366
    assert calls[0].arrival_s == 0.0
    assert calls[-1].arrival_s == pytest.approx(3501.7, abs=0.1)
    assert statistics.mean(c.prompt_tokens for c in calls) == pytest.approx(1154.7, abs=0.1)
    assert statistics.mean(c.output_tokens for c in calls) == pytest.approx(211.1, abs=0.1)


def test_mooncake_ticks_are_spread_in_order():
    calls = traces.read_mooncake(traces.MOONCAKE_CONV)
    assert len(calls) == 12_031
    times = [c.arrival_s for c in calls]
    assert times == sorted(times)
    # The raw trace has 1,180 distinct timestamps; spreading makes nearly all distinct.
    assert len(set(times)) > 11_000


def test_azure_stream_rate_scale_compresses_the_clock():
    cfg = BuildConfig(duration_s=60, slo=SloSpec(ttft_ms=500, tpot_ms=50, tiers=4))
    base = build_workload([StreamSpec.parse("azure_conv:real_time")], cfg)
    doubled = build_workload([StreamSpec.parse("azure_conv:real_time:rate_scale=2")], cfg)
    # 60 s of a 5.5 req/s trace, then 120 s of trace time squeezed into 60 s.
    assert 150 < len(base) < 500  # the first minute of the trace is quiet (191 requests)
    calls = traces.read_azure(traces.AZURE_CONV)
    assert len(base) == sum(1 for c in calls if c.arrival_s < 60)
    assert len(doubled) == sum(1 for c in calls if c.arrival_s < 120)
    assert all(r.arrival_s < 60 for r in doubled)
    assert collections.Counter(r.ttft_ms for r in base).keys() == {500.0, 1000.0, 1500.0, 2000.0}


def test_arxiv_be_lengths_follow_the_distribution():
    cfg = BuildConfig(duration_s=400, seed=1, max_prompt_tokens=8192, max_output_tokens=8192)
    reqs = build_workload([StreamSpec.parse("arxiv:best_effort:rate=5")], cfg)
    assert len(reqs) == pytest.approx(2000, rel=0.1)
    assert {r.cls for r in reqs} == {"best_effort"}
    assert statistics.mean(r.prompt_tokens for r in reqs) == pytest.approx(2588, rel=0.05)
    assert statistics.median(r.output_tokens for r in reqs) == pytest.approx(167, rel=0.2)


def test_agentic_sessions_become_dependency_chains():
    cfg = BuildConfig(duration_s=100, seed=2)
    reqs = build_workload([StreamSpec.parse("agentic:deadline:rate=0.1,sessions=6,max_calls=10")], cfg)
    check_workload(reqs)
    by_id = {r.id: r for r in reqs}
    workflows = collections.defaultdict(list)
    for r in reqs:
        workflows[r.workflow_id].append(r)
    assert 1 <= len(workflows) <= 6
    for members in workflows.values():
        roots = [m for m in members if not m.depends_on]
        assert len(roots) == 1 and roots[0].stage == 0
        for m in members:
            assert m.cls == "deadline" and m.deadline_ms and m.workflow_deadline_ms >= m.deadline_ms
            for dep in m.depends_on:
                assert by_id[dep].workflow_id == m.workflow_id
                assert by_id[dep].stage < m.stage
        assert sum(1 for m in members if m.application == "coding") == len(members)
        assert max(m.prompt_tokens for m in members) <= 4096


def test_agentic_subagents_fan_out_and_join():
    path = traces.traces_dir() / traces.AGENTIC_DIR / "trace_0291.json"
    calls = traces.read_agentic_session(path)
    agents = {c.agent for c in calls}
    assert len(agents) >= 3  # main + 2 sub-agents
    joins = [c for c in calls if len(c.depends_on) > 1]
    assert joins and all(c.agent == "main" for c in joins)
    sub_roots = [c for c in calls if c.agent != "main" and all(calls[d].agent == "main" for d in c.depends_on)]
    assert len(sub_roots) >= 2


def test_prompt_filters_keep_real_rows_inside_the_range():
    cfg = BuildConfig(duration_s=200, seed=4, max_prompt_tokens=8192, max_output_tokens=8192)
    long_be = build_workload([StreamSpec.parse("arxiv:best_effort:rate=5,min_prompt=2048,max_prompt=4096")], cfg)
    short_be = build_workload([StreamSpec.parse("sharegpt:best_effort:rate=5,max_prompt=1024")], cfg)
    assert long_be and all(2048 <= r.prompt_tokens <= 4096 for r in long_be)
    assert short_be and all(r.prompt_tokens <= 1024 for r in short_be)
    rows = {row for row in traces.read_lengths(traces.SHAREGPT_LENGTHS) if row[0] <= 1024}
    assert all((r.prompt_tokens, r.output_tokens) in rows for r in short_be)  # real rows, not capped ones
    with pytest.raises(ValueError, match="max_prompt"):
        build_workload([StreamSpec.parse("arxiv:best_effort:rate=1,min_prompt=10,max_prompt=5")], cfg)


def test_a_process_replaces_a_trace_clock_and_keeps_its_lengths_in_order():
    cfg = BuildConfig(duration_s=120, seed=5, max_prompt_tokens=1 << 20, max_output_tokens=1 << 20)
    poisson = build_workload([StreamSpec.parse("azure_conv:real_time:start=600,rate=4,process=poisson")], cfg)
    bursty = build_workload([StreamSpec.parse("azure_conv:real_time:start=600,rate=4,process=gamma,cv=4")], cfg)
    calls = [c for c in traces.read_azure(traces.AZURE_CONV) if c.arrival_s >= 600]
    for reqs in (poisson, bursty):
        assert len(reqs) == pytest.approx(480, rel=0.35)
        assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(c.prompt_tokens, c.output_tokens)
                                                                      for c in calls[:len(reqs)]]

    def cv(reqs):
        gaps = [b.arrival_s - a.arrival_s for a, b in zip(reqs, reqs[1:])]
        return statistics.pstdev(gaps) / statistics.mean(gaps)

    assert cv(poisson) == pytest.approx(1.0, abs=0.25)
    assert cv(bursty) > 2.0


def test_trace_hash_ids_reach_the_workload_cut_with_the_prompt() -> None:
    cfg = BuildConfig(duration_s=20.0, seed=0, max_prompt_tokens=4096)
    moon = build_workload([StreamSpec.parse("mooncake_conv:real_time")], cfg)
    assert moon and all(r.hash_block_tokens == 512 and len(r.hash_ids) == -(-r.prompt_tokens // 512) for r in moon)
    agent = build_workload([StreamSpec.parse("agentic:deadline:rate=0.5,sessions=2,max_calls=3")], cfg)
    assert agent and all(r.hash_block_tokens == 64 and r.hash_scope == r.workflow_id for r in agent)
    assert all(len(r.hash_ids) == -(-r.prompt_tokens // 64) for r in agent)
    assert WorkloadRequest.from_json(agent[0].to_json()) == agent[0]
