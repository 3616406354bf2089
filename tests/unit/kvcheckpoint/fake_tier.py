"""A fake worker that also checkpoints and restores, against a fake host tier, exactly as
docs/bidirectional_kv.md says the real worker does: the checkpoint of a request holds the tokens
whose KV it covers (so a restore can be checked for content, not only for counts); a refused
checkpoint is reported in a later result; a resumed request whose checkpoint is missing, short or
wrong is recomputed inside the step and reported in `restore_failed_request_ids`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from scheduler_svc.core import BatchPlan, ScheduledRequest, StepResult
from tests.factories import FakeWorker, _WorkerRequest


@dataclass
class FakeHostTier:
    """Checkpoints by request id: the token prefix whose KV they hold."""

    checkpoints: dict[str, tuple[int, ...]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)  # requests whose checkpoints the tier refuses
    num_writes: int = 0
    num_restores: int = 0


@dataclass
class CheckpointingWorker(FakeWorker):
    tier: FakeHostTier = field(default_factory=FakeHostTier)
    restore_failures: list[str] = field(default_factory=list)
    recomputed_tokens: int = 0
    _failed_reports: list[str] = field(default_factory=list)

    def execute(self, plan: BatchPlan) -> StepResult:
        for rid in plan.checkpoint_request_ids:
            if rid not in plan.preempted_request_ids:
                self.violations.append(f"{rid} checkpointed but not preempted")
            state = self.requests.get(rid)
            if state is None:
                continue
            if rid in self.tier.refuse:
                self.tier.checkpoints.pop(rid, None)  # the real tier drops a refused one whole
                self._failed_reports.append(rid)
            else:
                self.tier.checkpoints[rid] = tuple(state.tokens[: state.num_computed])
                self.tier.num_writes += 1
        for rid in (*plan.finished_request_ids, *plan.preempted_request_ids):
            state = self.requests.pop(rid, None)
            self.tainted.discard(rid)
            if state is not None:
                self.num_used_blocks -= state.num_blocks
        for rid in plan.drop_checkpoint_request_ids:
            self.tier.checkpoints.pop(rid, None)
        restore_failed: list[str] = []
        scheduled = list(plan.scheduled)
        plain_new = []
        for new in plan.new_requests:
            if new.num_computed_tokens == 0:
                plain_new.append(new)
                continue
            if new.request_id in self.requests:
                self.violations.append(f"{new.request_id} created twice")
            k = new.num_computed_tokens
            state = _WorkerRequest(list(new.token_ids), new.num_prompt_tokens)
            self.requests[new.request_id] = state
            saved = self.tier.checkpoints.get(new.request_id)
            if saved is not None and len(saved) >= k:
                if saved[:k] != tuple(new.token_ids[:k]):
                    self.violations.append(f"{new.request_id}: checkpoint holds other tokens")
                state.num_computed = k
                self.tier.num_restores += 1
                continue
            # Recompute inside the step: the first chunk starts at 0 instead of k.
            restore_failed.append(new.request_id)
            self.restore_failures.append(new.request_id)
            self.recomputed_tokens += k
            scheduled = [ScheduledRequest(s.request_id, s.num_tokens + k, 0, s.sample) if s.request_id == new.request_id
                         else s for s in scheduled]
        inner = dataclasses.replace(plan, new_requests=tuple(plain_new), scheduled=tuple(scheduled),
                                    finished_request_ids=(), preempted_request_ids=())
        result = super().execute(inner)
        # Restored blocks are counted when the step leases them, like any block of the chunk.
        reports, self._failed_reports = self._failed_reports, []
        return dataclasses.replace(result, restore_failed_request_ids=tuple(restore_failed),
                                   checkpoint_failed_request_ids=tuple(reports))

    def drop_all(self) -> None:
        """The worker died: every request's state (and its blocks) is gone; the tier stays."""
        self.requests.clear()
        self.num_used_blocks = 0
        self.tainted.clear()
        self._failed_reports.clear()
