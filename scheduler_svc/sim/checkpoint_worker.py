"""A simulated worker that also checkpoints to and restores from a simulated host tier, for
bidirectional-KV experiments (benchmarks/bench_bidirectional_kv.py).

It wraps `SimWorker` (which prices compute with the cost model) and adds what the real worker
does for checkpoints (docs/bidirectional_kv.md):
- a victim listed in `checkpoint_request_ids` has the KV of its computed tokens copied to the host
  tier; the tier holds `host_tier_bytes` and, like the store's, evicts complete checkpoints least
  recently used first, or refuses (reported in `checkpoint_failed_request_ids`: recompute);
- a new request with `num_computed_tokens` is restored when the tier holds enough tokens, else its
  prefix is recomputed inside the step (`restore_failed_request_ids`);
- copies cost `bytes / link_bytes_per_s` (device↔host), added to the step. With lazy
  checkpointing the full blocks of running best-effort requests were copied in the background
  while they ran, so a preemption is charged only its tail block (`lazy=True`).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from scheduler_svc.core.plan import BatchPlan, NewRequestData, ScheduledRequest, StepResult
from scheduler_svc.sim.worker import SimWorker


@dataclass
class HostTierStats:
    bytes_saved: int = 0
    bytes_restored: int = 0
    num_checkpoints: int = 0
    num_restores: int = 0
    num_refusals: int = 0
    num_evictions: int = 0
    num_failed_restores: int = 0
    recomputed_tokens: int = 0  # by failed restores
    transfer_s: float = 0.0


class CheckpointSimWorker:
    """Duck-types `SimWorker` (execute, num_failed_steps, num_requests, check_invariants)."""

    def __init__(self, inner: SimWorker, block_size: int, kv_bytes_per_token: int, host_tier_bytes: int,
                 link_bytes_per_s: float = 25e9, lazy: bool = True) -> None:
        self.inner = inner
        self.block_size = block_size
        self.block_bytes = kv_bytes_per_token * block_size
        self.capacity = host_tier_bytes
        self.link_bytes_per_s = link_bytes_per_s
        self.lazy = lazy
        self.tier: OrderedDict[str, int] = OrderedDict()  # request -> tokens held, LRU first
        self.used_bytes = 0
        self.stats = HostTierStats()
        self._failed: list[str] = []

    @property
    def num_failed_steps(self) -> int:
        return self.inner.num_failed_steps

    @property
    def num_requests(self) -> int:
        return self.inner.num_requests

    def check_invariants(self) -> None:
        self.inner.check_invariants()

    def _bytes(self, tokens: int) -> int:
        return -(-tokens // self.block_size) * self.block_bytes

    def _store(self, request_id: str, tokens: int) -> bool:
        self._drop(request_id)
        need = self._bytes(tokens)
        while self.used_bytes + need > self.capacity and self.tier:
            victim, held = self.tier.popitem(last=False)
            self.used_bytes -= self._bytes(held)
            self.stats.num_evictions += 1
        if self.used_bytes + need > self.capacity:
            self.stats.num_refusals += 1
            return False
        self.tier[request_id] = tokens
        self.used_bytes += need
        return True

    def _drop(self, request_id: str) -> None:
        held = self.tier.pop(request_id, None)
        if held is not None:
            self.used_bytes -= self._bytes(held)

    def execute(self, plan: BatchPlan, now: float) -> tuple[StepResult, float]:
        seqs = self.inner._seqs  # noqa: SLF001 - the wrapped worker's per-request state
        moved = 0
        for rid in plan.checkpoint_request_ids:
            seq = seqs.get(rid)
            if seq is None or seq.num_computed == 0:
                continue
            if self._store(rid, seq.num_computed):
                self.stats.num_checkpoints += 1
                nbytes = self._bytes(seq.num_computed)
                self.stats.bytes_saved += nbytes
                # Lazily, every full block already went while the request ran: only the tail now.
                moved += self.block_bytes if self.lazy else nbytes
            else:
                self._failed.append(rid)
        for rid in plan.drop_checkpoint_request_ids:
            self._drop(rid)
        restored: dict[str, int] = {}
        failed: list[str] = []
        news: list[NewRequestData] = []
        for new in plan.new_requests:
            k = new.num_computed_tokens
            if k:
                held = self.tier.get(new.request_id, 0)
                if held >= k:
                    restored[new.request_id] = k
                    self.tier.move_to_end(new.request_id)
                    self.stats.num_restores += 1
                    self.stats.bytes_restored += self._bytes(k)
                    moved += self._bytes(k)
                else:
                    failed.append(new.request_id)
                    self.stats.num_failed_restores += 1
                    self.stats.recomputed_tokens += k
                new = dataclasses.replace(new, num_computed_tokens=0)
            news.append(new)
        resumed = {**restored, **{rid: 0 for rid in failed}}
        # The wrapped worker computes a resumed request from 0 (same blocks leased); a restored
        # one is re-priced below as if its prefix had been copied in instead.
        scheduled = tuple(
            ScheduledRequest(s.request_id, s.num_tokens + s.num_computed_tokens, 0, s.sample)
            if s.request_id in resumed else s for s in plan.scheduled)
        inner_plan = dataclasses.replace(plan, new_requests=tuple(news), scheduled=scheduled)
        result, dt = self.inner.execute(inner_plan, now)
        transfer_s = moved / self.link_bytes_per_s
        self.stats.transfer_s += transfer_s
        reports, self._failed = self._failed, []
        timing = result.timing
        if timing is not None and restored:
            prefill, decode = timing.num_prefill_tokens, timing.num_decode_seqs
            for s in plan.scheduled:
                k = restored.get(s.request_id)
                if k is None:
                    continue
                prefill -= k
                if s.num_tokens == 1:  # restored then decoded: a decode, not a prefill token
                    prefill -= 1
                    decode += 1
            dt = self.inner._cost.step_time(prefill, decode, timing.num_kv_tokens_read)  # noqa: SLF001
            timing = dataclasses.replace(timing, num_prefill_tokens=prefill, num_decode_seqs=decode)
        if timing is not None:
            dt += transfer_s
            ns = int(dt * 1e9)
            timing = dataclasses.replace(timing, forward_ns=ns, total_ns=ns,
                                         num_recomputed_tokens=sum(plan_k for rid, plan_k in
                                                                   ((n.request_id, n.num_computed_tokens)
                                                                    for n in plan.new_requests) if rid in failed))
        elif transfer_s:
            dt += transfer_s
        return dataclasses.replace(result, timing=timing, restore_failed_request_ids=tuple(failed),
                                   checkpoint_failed_request_ids=tuple(reports)), dt
