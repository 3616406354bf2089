"""What happened between two plans that the next plan must tell the worker, and the events the
next `update()` (or `take_outputs()`) must deliver.

Requests finish, are aborted and are preempted outside `schedule()` (a result arrives, a client
cancels, a drained victim's last step returns); the worker learns of each only through the next
plan. The notes keep them, in the order they happened, until that plan takes them:

    finished   finished while admitted: the next plan lists it in `finished_request_ids` (the worker
               holds its state) and the core frees its blocks then, before planning the step
    preempted  taken off the worker: `preempted_request_ids`
    checkpoint of the preempted, those whose KV the worker saves first: `checkpoint_request_ids`
    drop       left while holding a host-tier checkpoint: `drop_checkpoint_request_ids`
    outputs    token events produced outside update() (CANCELLED after an abort)
"""

from __future__ import annotations

from scheduler_svc.core.plan import RequestOutput
from scheduler_svc.core.ticket import Ticket


class PlanNotes:
    __slots__ = ("_finished", "_preempted", "_checkpoint", "_drop", "_outputs")

    def __init__(self) -> None:
        self._finished: dict[str, Ticket] = {}
        self._preempted: list[str] = []
        self._checkpoint: list[str] = []
        self._drop: list[str] = []
        self._outputs: list[RequestOutput] = []

    # ---- noting --------------------------------------------------------------------------------
    def note_finished(self, ticket: Ticket) -> None:
        """A request finished while admitted (its worker holds state for it)."""
        self._finished[ticket.req.request_id] = ticket

    def is_finish_pending(self, request_id: str) -> bool:
        """Finished while admitted and not yet listed in a plan."""
        return request_id in self._finished

    def note_preempted(self, request_id: str, checkpoint: bool) -> None:
        """Preempted; `checkpoint`: the worker saves its KV to the host tier before dropping it."""
        self._preempted.append(request_id)
        if checkpoint:
            self._checkpoint.append(request_id)

    def note_drop(self, request_id: str) -> None:
        """Left the system while holding a host-tier checkpoint: the worker frees it."""
        self._drop.append(request_id)

    def note_output(self, output: RequestOutput) -> None:
        self._outputs.append(output)

    # ---- taking --------------------------------------------------------------------------------
    def take_finished(self) -> dict[str, Ticket]:
        """The finished requests the next plan lists (taken before the step is planned)."""
        finished, self._finished = self._finished, {}
        return finished

    def has_ids_for_plan(self) -> bool:
        """Whether ids wait for a plan, so that one must be sent even with no work in it."""
        return bool(self._preempted or self._drop)

    def take_ids_for_plan(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(preempted, checkpoint, drop) ids, in the order noted, for the plan being sent."""
        ids = (tuple(self._preempted), tuple(self._checkpoint), tuple(self._drop))
        self._preempted, self._checkpoint, self._drop = [], [], []
        return ids

    def take_outputs(self) -> list[RequestOutput]:
        outputs, self._outputs = self._outputs, []
        return outputs

    @property
    def pending_drops(self) -> tuple[str, ...]:
        """Drops not yet sent (what a dead worker never received)."""
        return tuple(self._drop)

    def on_worker_lost(self) -> list[str]:
        """The worker died: finished and preempted requests need no listing any more (their state
        died with it). Returns the checkpoint ids never sent, which the worker will not write.
        Drops and outputs are kept for the next plan and the next reader of outputs."""
        unsent = self._checkpoint
        self._finished, self._preempted, self._checkpoint = {}, [], []
        return unsent
