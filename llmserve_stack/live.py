"""Live replay: sends a workload to a running llmserve stack through the public Gateway API and
measures every token's arrival on the client side.

Each request's prompt is `prompt_tokens` seeded random token ids, sampled with `ignore_eos` so
that the model cannot stop early. How its true output length is enforced (`stop`):

- "cancel" (default): every request carries the same `max_tokens` (`LiveConfig.max_tokens`, a
  client's generic cap, within the context), and the client cancels the call once it has
  received `output_tokens` tokens. No policy can learn the true length from the request. The
  server may compute a token or two more before the cancel lands; the request counts as
  finished at its last wanted token. Outputs longer than the cap end early (incomplete): the
  bench caps output lengths to it beforehand.
- "max_tokens": `max_tokens = output_tokens`. Simpler and exact, but an oracle for any policy
  that reads `max_tokens`: tempo's length predictor caps its bound at `max_tokens` (and uses it
  outright before it has seen 20 finished requests), so tempo would know every true length.

Workflow calls are sent when their dependencies have finished, plus their think time
(release.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from llmserve.runtime.channel import open_channel
from llmserve.types import service_class_named
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from scheduler_svc.sim.metrics import RequestRecord, RunStats
from scheduler_svc.sim.release import ReleaseTracker
from scheduler_svc.sim.workload import WorkloadRequest

_REASON = {common_pb2.FINISH_REASON_STOP: "stop", common_pb2.FINISH_REASON_LENGTH: "length",
           common_pb2.FINISH_REASON_CANCELLED: "cancelled", common_pb2.FINISH_REASON_ERROR: "error"}


@dataclass(frozen=True)
class LiveConfig:
    """Where and how to replay."""

    address: str
    timeout_s: float = 600.0  # per request
    stop: str = "cancel"  # "cancel" | "max_tokens" (see the module docstring)
    max_tokens: int = 1024  # the generic cap of the "cancel" stop
    run_timeout_s: float = 1800.0  # whole replay; unfinished requests are cancelled and count as missed


def prompt_ids(request_id: str, length: int, vocab_size: int) -> list[int]:
    """`length` token ids seeded by the request id (the same prompt every run, for every policy).
    Ids avoid the lowest 100, where tokenizers keep special tokens."""
    seed = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "little")
    rng = random.Random(seed)
    lo = min(100, max(vocab_size - 1, 0))
    return [rng.randrange(lo, vocab_size) for _ in range(length)]


def to_generate_request(req: WorkloadRequest, vocab_size: int, workflow_start_unix: float | None,
                        max_tokens: int) -> gateway_pb2.GenerateRequest:
    slo = common_pb2.Slo(service_class=int(service_class_named(req.cls)), priority=req.priority)
    if req.ttft_ms is not None:
        slo.ttft_ms = req.ttft_ms
    if req.tpot_ms is not None:
        slo.tpot_ms = req.tpot_ms
    if req.deadline_ms is not None:
        slo.deadline_ms = req.deadline_ms
    msg = gateway_pb2.GenerateRequest(
        request_id=req.id,
        token_ids=common_pb2.TokenIds(ids=prompt_ids(req.id, req.prompt_tokens, vocab_size)),
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                                           seed=int.from_bytes(hashlib.sha256(req.id.encode()).digest()[8:16], "little")),
        slo=slo, tenant=req.tenant)
    if req.workflow_id:
        msg.workflow.workflow_id = req.workflow_id
        msg.workflow.application = req.application
        msg.workflow.stage = req.stage
        msg.workflow.depends_on.extend(req.depends_on)
        if req.workflow_deadline_ms is not None:
            msg.workflow.workflow_deadline_ms = req.workflow_deadline_ms
        if workflow_start_unix is not None:
            msg.workflow.workflow_start_unix_s = workflow_start_unix
    return msg


async def replay(requests: Sequence[WorkloadRequest], config: LiveConfig,
                 progress: Callable[[int, int], None] | None = None) -> tuple[list[RequestRecord], RunStats]:
    """Replays `requests` against the gateway at `config.address`; returns one record per request
    (times in seconds from the replay start) and the run stats (preemptions and KV use are not
    visible to a client: reported as None)."""
    loop = asyncio.get_running_loop()
    async with open_channel(config.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        info = await stub.GetModelInfo(gateway_pb2.GetModelInfoRequest(), timeout=30.0)
        vocab = int(info.vocab_size) or 32_000
        context = int(info.max_context_length) or 2048
        if config.stop not in ("cancel", "max_tokens"):
            raise ValueError(f"live stop must be 'cancel' or 'max_tokens', got {config.stop!r}")
        t0 = loop.time()
        unix0 = time.time()
        tracker = ReleaseTracker(requests)
        records: dict[str, RequestRecord] = {}
        heap: list[tuple[float, str, WorkloadRequest]] = [(t, r.id, r) for t, r in tracker.initial()]
        heapq.heapify(heap)
        wake = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        wf_start: dict[str, float] = {}
        done = 0

        async def one(req: WorkloadRequest, release_s: float) -> None:
            nonlocal done
            rec = RequestRecord(req, release_s)
            records[req.id] = rec
            start_unix = None
            if req.workflow_id:
                start_unix = unix0 + wf_start.setdefault(req.workflow_id, release_s)
            if config.stop == "cancel":
                max_tokens = max(1, min(config.max_tokens, context - req.prompt_tokens))
            else:
                max_tokens = req.output_tokens
            try:
                call = stub.Generate(to_generate_request(req, vocab, start_unix, max_tokens), timeout=config.timeout_s)
                async for chunk in call:
                    now = loop.time() - t0
                    want = req.output_tokens - len(rec.token_times)
                    rec.token_times.extend([now] * min(len(chunk.token_ids), want))
                    if len(rec.token_times) >= req.output_tokens:
                        rec.finish_reason, rec.finish_s = "stop", now
                        call.cancel()  # the bench-only stop: the server aborts the request
                        break
                    if chunk.finish_reason:
                        rec.finish_reason = _REASON.get(chunk.finish_reason, "stop")
                        rec.finish_s = now
            except grpc.aio.AioRpcError as err:
                rec.finish_reason = "error"
                rec.finish_s = loop.time() - t0
                print(f"bench: {req.id}: {err.code().name}: {err.details()}", file=sys.stderr)
            finally:
                end = rec.finish_s if rec.finish_s is not None else loop.time() - t0
                for release, child in tracker.finished(req.id, end):
                    heapq.heappush(heap, (release, child.id, child))
                done += 1
                if progress:
                    progress(done, len(requests))
                wake.set()

        async def drive() -> None:
            while heap or tasks:
                now = loop.time() - t0
                while heap and heap[0][0] <= now:
                    release, _, req = heapq.heappop(heap)
                    task = asyncio.create_task(one(req, max(release, now)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                wake.clear()
                timeout = (heap[0][0] - now) if heap else None
                # Wait on the tasks too, not only on `wake`: a task's done-callback removes it from
                # `tasks` only after its `finally` set `wake`, so the loop could otherwise see the
                # last task still pending, clear `wake` and sleep until the run timeout.
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({waiter, *tasks}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()

        try:
            await asyncio.wait_for(drive(), timeout=config.run_timeout_s)
        except asyncio.TimeoutError:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        end_s = loop.time() - t0
    recs = [records[r.id] if r.id in records else RequestRecord(r, r.arrival_s) for r in requests]
    arrivals = [r.arrival_s for r in recs]
    stats = RunStats(start_s=min(arrivals, default=0.0), arrivals_end_s=max(arrivals, default=0.0), end_s=end_s,
                     num_steps=0, preemptions=None, kv_util_mean=None)
    return recs, stats
