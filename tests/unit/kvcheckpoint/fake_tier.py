"""A fake worker that also checkpoints and restores, against a fake host tier, exactly as
docs/bidirectional_kv.md says the real worker does: the checkpoint of a request holds the tokens
whose KV it covers (so a restore can be checked for content, not only for counts); a refused
checkpoint is reported in a later result; a resumed request whose checkpoint is missing, short or
wrong is recomputed inside the step and reported in `restore_failed_request_ids`."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmserve.plan import RestoreSpec
from llmserve.plan_book import RequestState
from scheduler_svc.core import BatchPlan
from tests.factories import FakeWorker


@dataclass
class FakeHostTier:
    """Checkpoints by request id: the token prefix whose KV they hold."""

    checkpoints: dict[str, tuple[int, ...]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)  # requests whose checkpoints the tier refuses
    num_writes: int = 0
    num_restores: int = 0


@dataclass
class CheckpointingWorker(FakeWorker):
    """The fake worker plus the host tier: the plan book decides what is dropped, restored or
    recomputed; this class only plays the tier."""

    tier: FakeHostTier = field(default_factory=FakeHostTier)
    restore_failures: list[str] = field(default_factory=list)
    recomputed_tokens: int = 0
    _failed_reports: list[str] = field(default_factory=list)

    def on_dropped(self, plan: BatchPlan, preempted: list[RequestState]) -> None:
        by_id = {state.request_id: state for state in preempted}
        for rid in plan.checkpoint_request_ids:
            state = by_id.get(rid)
            if state is None:
                continue  # unknown, or not preempted (the book rejects the plan)
            if rid in self.tier.refuse:
                self.tier.checkpoints.pop(rid, None)  # the real tier drops a refused one whole
                self._failed_reports.append(rid)
            else:
                self.tier.checkpoints[rid] = tuple(state.token_ids[: state.num_computed])
                self.tier.num_writes += 1
        for rid in plan.drop_checkpoint_request_ids:
            self.tier.checkpoints.pop(rid, None)

    def restore(self, spec: RestoreSpec) -> bool:
        rid, k = spec.request_id, spec.num_tokens
        saved = self.tier.checkpoints.get(rid)
        if saved is not None and len(saved) >= k:
            if saved[:k] != tuple(self.book.state(rid).token_ids[:k]):
                self.violations.append(f"{rid}: checkpoint holds other tokens")
            self.tier.num_restores += 1
            return True
        # The book has the step recompute it: the first chunk starts at 0 instead of k.
        self.restore_failures.append(rid)
        self.recomputed_tokens += k
        return False

    def take_checkpoint_failures(self) -> tuple[str, ...]:
        reports, self._failed_reports = tuple(self._failed_reports), []
        return reports

    def drop_all(self) -> None:
        """The worker died: every request's state (and its blocks) is gone; the tier stays."""
        self.keeper.release(self.book.reset())
        self.settle()
        self.tainted.clear()
        self._failed_reports.clear()
