"""`llmserve bench --engine sim` end to end: table, results.json schema, PNG plots."""

from __future__ import annotations

import argparse
import dataclasses
import json

from llmserve_stack.bench import add_bench_parser, run_bench
from scheduler_svc.sim.workload import write_workload
from tests.sim.helpers import TEST_COST, mixed_workload

KEYS = {"rt_slo_attainment", "deadline_slo_attainment", "be_throughput_tok_s", "be_mean_completion_s", "service_gain",
        "goodput_req_s", "rt_ttft_p50_ms", "rt_ttft_p99_ms", "rt_tpot_p99_ms", "preemptions", "kv_util_mean"}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_bench_sim_writes_results_and_plots(tmp_path, capsys):
    workload = tmp_path / "w.jsonl"
    write_workload(workload, mixed_workload(seed=2, duration_s=4.0))
    cost = tmp_path / "cost.json"
    TEST_COST.save(cost)
    out = tmp_path / "out"
    args = _parse(["--workload", str(workload), "--policies", "fcfs,priority", "--cost-model", str(cost),
                   "--rate-scale", "1", "3", "--out", str(out), "--num-blocks", "2000"])
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["engine"] == "sim" and doc["workload"] == str(workload) and doc["rate_scales"] == [1.0, 3.0]
    assert set(doc["policies"]) == {"fcfs", "priority"}
    for metrics in doc["policies"].values():
        assert KEYS <= set(metrics)
        for key in ("rt_slo_attainment", "deadline_slo_attainment", "kv_util_mean"):
            assert 0.0 <= metrics[key] <= 1.0
    assert [s["rate_scale"] for s in doc["sweep"]] == [1.0, 3.0]
    for png in ("sweep.png", "latency_cdf_x1.png", "latency_cdf_x3.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "fcfs" in table and "priority" in table and "RT SLO" in table


def test_absent_class_is_null(tmp_path):
    workload = tmp_path / "w.jsonl"
    write_workload(workload, [r for r in mixed_workload(seed=3, duration_s=3.0) if r.cls == "best_effort"])
    out = tmp_path / "out"
    args = _parse(["--workload", str(workload), "--policies", "fcfs", "--out", str(out), "--no-plots"])
    assert run_bench(args) == 0
    metrics = json.loads((out / "results.json").read_text())["policies"]["fcfs"]
    assert metrics["rt_slo_attainment"] is None and metrics["deadline_slo_attainment"] is None
    assert metrics["be_throughput_tok_s"] > 0


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert run_bench(_parse(["--workload", str(bad), "--out", str(tmp_path / "o")])) == 2
    assert "missing required field" in capsys.readouterr().err
    ok = tmp_path / "ok.jsonl"
    write_workload(ok, mixed_workload(seed=3, duration_s=1.0))
    assert run_bench(_parse(["--workload", str(ok), "--cost-model", "nope", "--out", str(tmp_path / "o")])) == 2
    assert "bundled profile" in capsys.readouterr().err


def test_tempo_oracle_is_a_sim_policy_only(tmp_path, capsys):
    workload = tmp_path / "w.jsonl"
    write_workload(workload, mixed_workload(seed=2, duration_s=3.0))
    out = tmp_path / "out"
    args = _parse(["--workload", str(workload), "--policies", "tempo,tempo-oracle", "--out", str(out), "--no-plots"])
    assert run_bench(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["policies"]) == {"tempo", "tempo-oracle"}
    live = _parse(["--workload", str(workload), "--policies", "tempo-oracle", "--engine", "live",
                   "--address", "127.0.0.1:1", "--out", str(out)])
    assert run_bench(live) == 2
    assert "simulator only" in capsys.readouterr().err


def test_prefix_cache_on_by_default_as_llmserve_up_runs_and_off_by_flag(tmp_path):
    workload = tmp_path / "w.jsonl"
    reqs = mixed_workload(seed=2, duration_s=4.0)
    write_workload(workload, [dataclasses.replace(r, hash_ids=(7, 8), hash_block_tokens=512) for r in reqs])
    cost = tmp_path / "cost.json"
    TEST_COST.save(cost)
    docs = {}
    for flag in ((), ("--prefix-cache", "off")):
        out = tmp_path / f"out{len(flag)}"
        args = _parse(["--workload", str(workload), "--policies", "fcfs", "--cost-model", str(cost), "--out", str(out),
                       "--num-blocks", "2000", *flag])
        assert args.func(args) == 0
        docs[flag] = json.loads((out / "results.json").read_text())["policies"]["fcfs"]
    on, off = docs[()], docs[("--prefix-cache", "off")]
    assert KEYS <= set(on) and on["prefix_hit_blocks"] > 0 and on["prefill_tokens_saved"] > 0
    assert "prefix_hit_blocks" not in off and KEYS <= set(off)
