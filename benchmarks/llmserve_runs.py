"""llmserve under the benchmark: the full stack through its four services (client on gRPC, as a
user's would be) and the same engine driven in-process (scheduler core + step runner + KV store
core, no gRPC, no extra processes), on the same prompts.

With `streams == 1` the prompts run one after another (latency: TTFT without queueing); otherwise
all `streams` prompts are submitted at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.request
from typing import Any

from bench_common import Row, make_row

STACK = "llmserve stack (gRPC, 4 processes)"
INPROC = "llmserve engine in-process"


# ---- the stack over gRPC ---------------------------------------------------------------------
PHASE_METRIC = "llmserve_step_phase_seconds_total"


def worker_phases(metrics_url: str) -> dict[str, float]:
    """The worker's cumulative step time by phase, from its /metrics (one worker)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return {s.labels["phase"]: s.value for family in text_string_to_metric_families(body)
            for s in family.samples if s.name == PHASE_METRIC}


class StackClient:
    """Streams requests to a running gateway and times them on the client; with the worker's
    /metrics URL it also records where the worker's time went during each run."""

    def __init__(self, stub: Any, max_tokens: int, worker_metrics_url: str = "") -> None:
        self.stub = stub
        self.max_tokens = max_tokens
        self.worker_metrics_url = worker_metrics_url

    def _request(self, prompt: str | list[int], max_tokens: int) -> Any:
        from llmserve.v1 import common_pb2, gateway_pb2

        sampling = common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        slo = common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT)
        if isinstance(prompt, str):
            return gateway_pb2.GenerateRequest(text=prompt, sampling=sampling, slo=slo)
        return gateway_pb2.GenerateRequest(token_ids=common_pb2.TokenIds(ids=prompt), sampling=sampling, slo=slo)

    async def _one(self, prompt: str | list[int], max_tokens: int) -> tuple[float, float, int]:
        """(TTFT ms, TPOT ms, tokens) of one streamed request."""
        start = time.perf_counter()
        first = last = None
        count = 0
        async for chunk in self.stub.Generate(self._request(prompt, max_tokens), timeout=900):
            if chunk.token_ids:
                now = time.perf_counter()
                first = now if first is None else first
                last = now
                count += len(chunk.token_ids)
        assert first is not None and last is not None, "the stream ended without a token"
        return (first - start) * 1000, (last - first) * 1000 / max(1, count - 1), count

    async def run(self, prompts: list[str], streams: int) -> Row:
        before = await asyncio.to_thread(worker_phases, self.worker_metrics_url) if self.worker_metrics_url else {}
        start = time.perf_counter()
        if streams == 1:
            results = [await self._one(p, self.max_tokens) for p in prompts]
        else:
            results = await asyncio.gather(*(self._one(p, self.max_tokens) for p in prompts))
        wall = time.perf_counter() - start
        ttfts, tpots, counts = zip(*results)
        row = make_row(STACK, streams, list(ttfts), list(tpots), wall, sum(counts))
        if not self.worker_metrics_url:
            return row
        after = await asyncio.to_thread(worker_phases, self.worker_metrics_url)
        phases = tuple((phase, after[phase] - before.get(phase, 0.0)) for phase in sorted(after))
        return dataclasses.replace(row, worker_phases_s=phases)

    async def time_to_first_token(self, prompt_ids: list[int]) -> float:
        """Seconds from sending one request to its first token: its prefill plus the hops."""
        ttft_ms, _, _ = await self._one(prompt_ids, 1)
        return ttft_ms / 1000


# ---- the same engine in-process --------------------------------------------------------------
class InProcessRunner:
    def __init__(self, engine: Any, max_tokens: int) -> None:
        self.engine = engine
        self.max_tokens = max_tokens

    def run(self, prompts: list[list[int]], streams: int) -> Row:
        if streams == 1:
            runs = [self.engine.generate_all([p], max_tokens=self.max_tokens) for p in prompts]
            return make_row(INPROC, 1, [t for r in runs for t in r.ttfts_ms], [t for r in runs for t in r.tpots_ms],
                            sum(r.wall_s for r in runs), sum(r.output_tokens for r in runs))
        result = self.engine.generate_all(prompts, max_tokens=self.max_tokens)
        return make_row(INPROC, streams, result.ttfts_ms, result.tpots_ms, result.wall_s, result.output_tokens)

    def time_to_first_token(self, prompt_ids: list[int]) -> float:
        return self.engine.generate_all([prompt_ids], max_tokens=1).ttfts_ms[0] / 1000
