"""`llmserve bench --engine live` against a real stack (four processes, dummy SmolLM2 weights):
every request streams exactly its true length, workflow calls wait for their dependencies, and
the results have the same schema as the simulator's."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from llmserve_stack.launch import StackConfig, free_port, service_specs
from llmserve_stack.supervisor import Stack
from llmserve_stack.live import LiveConfig, replay
from scheduler_svc.sim.workload import WorkloadRequest, write_workload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _workload() -> list[WorkloadRequest]:
    return [
        WorkloadRequest("rt-0", 0.0, 12, 6, "real_time", ttft_ms=60_000.0, tpot_ms=10_000.0),
        WorkloadRequest("be-0", 0.1, 30, 9, "best_effort"),
        WorkloadRequest("wf-a", 0.2, 20, 5, "deadline", deadline_ms=120_000.0, workflow_id="wf",
                        workflow_deadline_ms=240_000.0, application="coding"),
        WorkloadRequest("wf-b", 0.2, 25, 4, "deadline", deadline_ms=120_000.0, workflow_id="wf", depends_on=("wf-a",),
                        think_s=0.3, stage=1, workflow_deadline_ms=240_000.0, application="coding"),
        WorkloadRequest("rt-1", 0.5, 8, 7, "real_time", ttft_ms=60_000.0, tpot_ms=10_000.0),
    ]


async def test_live_replay_streams_true_lengths_and_orders_workflows(tmp_path):
    config = StackConfig(port=free_port(), http_port=0, model="default", load_format="dummy", policy="bros", num_kv_blocks=256,
                         log_format="text")
    reqs = _workload()
    async with Stack(service_specs(config), log_dir=str(tmp_path / "logs")) as stack:
        address = stack.specs[-1].address
        records, stats = await replay(reqs, LiveConfig(address, run_timeout_s=240.0, max_tokens=256))
        # The same workload through the real command line, with the max_tokens stop. A separate
        # process: run_bench owns its event loop, and grpc.aio serves one loop per process.
        workload = tmp_path / "w.jsonl"
        write_workload(workload, reqs)
        bench = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmserve_stack", "bench", "--workload", str(workload), "--engine", "live",
            "--address", address, "--policies", "bros", "--live-stop", "max_tokens", "--out", str(tmp_path / "out"),
            "--no-plots", "--live-timeout", "240")
        assert await asyncio.wait_for(bench.wait(), 300) == 0
    by_id = {r.request.id: r for r in records}
    for rec in records:
        assert rec.complete, f"{rec.request.id}: {len(rec.token_times)} tokens, {rec.finish_reason}"
        assert len(rec.token_times) == rec.request.output_tokens
    assert by_id["wf-b"].arrival_s >= by_id["wf-a"].finish_s + 0.3 - 1e-3
    assert stats.preemptions is None
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    metrics = doc["policies"]["bros"]
    assert doc["engine"] == "live" and metrics["rt_slo_attainment"] == 1.0 and metrics["num_unfinished"] == 0
