"""The simulated worker: executes a BatchPlan as worker_svc does, minus the model.

It keeps each request's state (known tokens, computed tokens, block table), leases KV blocks from
the kvstore core's `LeaseTable` exactly as the real worker leases from the KV store (one atomic
apply per step, releases before leases, real-time blocks from the low end), "samples" one token
per request with `sample=True` (the end-of-sequence id when the request reaches its true output
length, a dummy id otherwise), and prices the step with the cost model.

The true output lengths are the simulated model's knowledge; nothing here is visible to the
scheduler core beyond the sampled token ids, exactly as with a real model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kvstore_svc.core.classes import ServiceClass as KvClass
from kvstore_svc.core.errors import KvStoreError
from kvstore_svc.core.lease_table import LeaseSpec, LeaseTable
from scheduler_svc.core.plan import BatchPlan, StepResult, StepTiming
from scheduler_svc.core.request import ServiceClass
from scheduler_svc.sim.cost_model import CostModel

_KV_CLASS = {ServiceClass.REAL_TIME: KvClass.REAL_TIME, ServiceClass.DEADLINE: KvClass.DEADLINE,
             ServiceClass.BEST_EFFORT: KvClass.BEST_EFFORT}


@dataclass(slots=True)
class _SeqState:
    """What the worker holds for one request."""

    num_tokens: int  # known tokens: prompt + sampled outputs
    num_prompt_tokens: int
    num_outputs: int  # outputs sampled so far (the index of the next one)
    service_class: ServiceClass
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)


class SimWorker:
    """One simulated worker with its pool registered in `leases` under `worker_id`."""

    def __init__(self, worker_id: str, leases: LeaseTable, block_size: int, cost: CostModel,
                 true_output_tokens: Mapping[str, int], eos_token_id: int, dummy_token_id: int = 7) -> None:
        if dummy_token_id == eos_token_id:
            raise ValueError("the dummy token id must differ from the EOS id")
        self.worker_id = worker_id
        self._leases = leases
        self._block_size = block_size
        self._cost = cost
        self._true = true_output_tokens
        self._eos = eos_token_id
        self._dummy = dummy_token_id
        self._seqs: dict[str, _SeqState] = {}
        self.num_failed_steps = 0

    def execute(self, plan: BatchPlan, now: float) -> tuple[StepResult, float]:
        """Applies one plan at virtual time `now`; returns the result and the step's duration (s).

        A failed step (an inconsistent count or a refused lease) samples nothing, as the real
        worker does, and takes no time.
        """
        released = [*plan.finished_request_ids, *plan.preempted_request_ids]
        for rid in released:
            self._seqs.pop(rid, None)
        for new in plan.new_requests:
            self._seqs[new.request_id] = _SeqState(len(new.token_ids), new.num_prompt_tokens, new.num_output_tokens,
                                                   new.service_class)
        specs: list[LeaseSpec] = []
        error = ""
        for s in plan.scheduled:
            seq = self._seqs.get(s.request_id)
            if seq is None:
                error = f"request {s.request_id} is unknown to the worker"
                break
            if seq.num_computed != s.num_computed_tokens:
                error = (f"request {s.request_id}: plan says {s.num_computed_tokens} computed, "
                         f"worker has {seq.num_computed}")
                break
            need = -(-(seq.num_computed + s.num_tokens) // self._block_size) - len(seq.block_table)
            if need > 0:
                specs.append(LeaseSpec(s.request_id, _KV_CLASS[seq.service_class], need))
        try:
            result = self._leases.apply(self.worker_id, released, [] if error else specs, now)
        except KvStoreError as err:
            # Releases must not be lost with the refused leases: apply them alone.
            self._leases.apply(self.worker_id, released, [], now)
            error = f"KV lease refused: {err}"
        if error:
            return self._fail(plan, error), 0.0
        for grant in result.grants:
            self._seqs[grant.request_id].block_table.extend(grant.block_ids)
        prefill = decode = kv_read = 0
        sampled: list[tuple[str, int]] = []
        for s in plan.scheduled:
            seq = self._seqs[s.request_id]
            # A decode computes the last sampled token; anything else is (re)prefill work.
            if s.num_tokens == 1 and seq.num_computed >= seq.num_prompt_tokens:
                decode += 1
            else:
                prefill += s.num_tokens
            seq.num_computed += s.num_tokens
            kv_read += seq.num_computed
            if s.sample:
                true_len = self._true.get(s.request_id, 1)
                token = self._eos if seq.num_outputs + 1 >= true_len else self._dummy
                seq.num_outputs += 1
                seq.num_tokens += 1
                sampled.append((s.request_id, token))
        dt = self._cost.step_time(prefill, decode, kv_read) if plan.scheduled else 0.0
        ns = int(dt * 1e9)
        timing = StepTiming(forward_ns=ns, total_ns=ns, num_prefill_tokens=prefill, num_decode_seqs=decode,
                            num_kv_tokens_read=kv_read)
        return StepResult(plan.step_id, tuple(sampled), timing), dt

    def _fail(self, plan: BatchPlan, message: str) -> StepResult:
        # The real worker drops the state of the step's requests on failure; the scheduler
        # re-queues them (recompute) and releases their leases in a later plan.
        self.num_failed_steps += 1
        return StepResult(plan.step_id, (), None, message)

    @property
    def num_requests(self) -> int:
        return len(self._seqs)

    def check_invariants(self) -> None:
        """Asserts: no block id is held twice, and every table matches its lease in the store."""
        seen: set[int] = set()
        record = self._leases.worker(self.worker_id)
        for rid, seq in self._seqs.items():
            for block in seq.block_table:
                assert block not in seen, f"block {block} held twice (second holder {rid})"
                seen.add(block)
            lease = record.leases.get(rid)
            held = list(lease.block_ids) if lease else []
            assert held == seq.block_table, f"{rid}: worker table {seq.block_table} != lease {held}"
        assert len(seen) == record.pool.num_blocks - record.pool.num_free, "pool use != blocks in tables"
        for rid in record.leases:
            assert rid in self._seqs, f"lease of {rid} outlived the request's state"
