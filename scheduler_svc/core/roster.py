"""Every request on one scheduler core, where it is, and the moves between its states.

    add ──▶ waiting ──admit──▶ running ──finish──▶ noted finished ──next plan, drained──▶ dropped
              ▲   │                 │ preempt (no step in flight): KV freed, noted preempted
              │   └─finish (abort): dropped at once (a waiting request has nothing in flight)
              └─────────────────────┘

The roster owns the state that the step planner (planner.py, step_builder.py) and the result
handler (results.py) share: the tickets (`requests`: every request not yet dropped; `running`:
admitted, holding or about to hold KV on the worker), the waiting queue, the block ledger, the
plan notes, the steps in flight and the routing load. Each move keeps them consistent with one another and
tells the policy and the checkpoint book what they must know.
"""

from __future__ import annotations

from operator import attrgetter

from scheduler_svc.core.block_ledger import BlockLedger
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.clock import Clock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan_notes import PlanNotes
from scheduler_svc.core.policy.base import Policy, PreemptionMode
from scheduler_svc.core.request import FINISHED_STATUS, FinishReason, Request, RequestStatus, ServiceClass
from scheduler_svc.core.ticket import Ticket
from scheduler_svc.core.waiting_queue import WaitingQueue

# One scheduled piece of work, kept until its step's result arrives: (ticket, sample).
Entry = tuple[Ticket, bool]
_RT = ServiceClass.REAL_TIME


class Roster:
    __slots__ = ("requests", "running", "waiting", "ledger", "notes", "inflight", "next_step_id",
                 "outstanding", "num_preemptions", "num_rt", "_next_seq", "_config", "_policy", "_clock", "_checkpoints")

    def __init__(self, config: SchedulerConfig, policy: Policy, clock: Clock, checkpoints: CheckpointBook | None) -> None:
        self._config = config
        self._policy = policy
        self._clock = clock
        self._checkpoints = checkpoints
        self.requests: dict[str, Ticket] = {}  # every request not yet dropped
        self.running: dict[str, Ticket] = {}  # admitted: holding (or about to hold) KV on the worker
        self.waiting = WaitingQueue(track_starvation=policy.aging_s is not None)
        self.ledger = BlockLedger(config.num_blocks)
        self.notes = PlanNotes()
        self.inflight: dict[int, list[Entry]] = {}  # step_id -> work, in plan order
        self.next_step_id = 0  # the step being (or next to be) planned
        self.outstanding = 0  # routing load: prompt + output tokens still allowed, over unfinished requests
        self.num_preemptions = 0
        # RT requests not finished (waiting or running): the step builder's seat-taking
        # (`StepBuilder._take_seat`) drains a seat for each RT request waiting, no more.
        self.num_rt = 0
        self._next_seq = 0

    # ---- keys ----------------------------------------------------------------------------------
    def make_key(self, t: Ticket, now: float) -> tuple:
        """Band 1 (not promoted), the policy's key, then admission order."""
        return (1, *self._policy.key(t.req, now), t.seq)

    def key_if_added(self, req: Request, now: float) -> tuple:
        """The key `req` would get if it were added now (it is not: admission control asks)."""
        return (1, *self._policy.key(req, now), self._next_seq)

    @staticmethod
    def promoted_key(t: Ticket, now: float) -> tuple:
        """Band 0: ahead of every non-promoted request, promoted ones in promotion order."""
        return (0, t.promoted_at, t.seq)

    # ---- moves ---------------------------------------------------------------------------------
    def add(self, req: Request, now: float) -> None:
        """Takes a checked request in (new, or moved from another core with its known tokens)."""
        t = Ticket(req, self._next_seq, now)
        self._next_seq += 1
        req.reset_for_queue()
        if req.status is not RequestStatus.PREEMPTED:
            req.status = RequestStatus.WAITING
        self.requests[req.request_id] = t
        self.outstanding += req.num_prompt_tokens + req.sampling.max_tokens - req.num_output_tokens
        if req.service_class is _RT:
            self.num_rt += 1
        self._policy.on_added(req, now)
        self.enqueue(t, now)

    def enqueue(self, t: Ticket, now: float) -> None:
        if t.promoted_at is None:
            t.sched_key = self.make_key(t, now)
            t.key_step = self.next_step_id
        self.waiting.push(t)

    def admit(self, t: Ticket) -> None:
        """Waiting -> running (the step builder has made room for its first chunk)."""
        self.waiting.remove(t)
        t.req.status = RequestStatus.RUNNING
        self.running[t.req.request_id] = t

    def finish(self, t: Ticket, reason: FinishReason, now: float) -> None:
        req = t.req
        rid = req.request_id
        req.status = FINISHED_STATUS[reason]
        req.finish_reason = reason
        self.outstanding -= req.num_prompt_tokens + req.sampling.max_tokens - req.num_output_tokens
        if req.service_class is _RT:
            self.num_rt -= 1
        if self._checkpoints is not None and self._checkpoints.forget(rid):
            self.notes.note_drop(rid)
        if self.running.pop(rid, None) is not None:
            self.notes.note_finished(t)  # the worker holds state: list it in the next plan
        else:
            self.waiting.remove(t)
            if t.num_inflight_steps == 0:
                self.requests.pop(rid, None)
        self._policy.on_finished(req, now)

    def release_finished(self) -> list[str]:
        """Frees the blocks of the requests the plan being made lists as finished; their ids."""
        finished = self.notes.take_finished()
        for rid, t in finished.items():
            self.ledger.free(rid)
            if t.num_inflight_steps == 0:
                self.requests.pop(rid, None)
        return list(finished)

    def preempt(self, t: Ticket, mode: PreemptionMode, counted: bool) -> None:
        """Takes a running request with no step in flight off the worker.

        CHECKPOINT (with a book, and KV to save) also lists it in the plan's
        `checkpoint_request_ids`: the worker saves its KV to the store's host tier before dropping
        it, and re-admission restores instead of recomputing. Otherwise the KV is recomputed.
        """
        assert t.num_inflight_steps == 0, "a request with a step in flight cannot be preempted"
        req = t.req
        rid = req.request_id
        book = self._checkpoints
        checkpoint = False
        if book is not None:
            if mode is PreemptionMode.CHECKPOINT and req.num_computed_tokens > 0:
                book.on_checkpoint(rid, req.num_computed_tokens)
                checkpoint = True
            else:
                book.on_recompute(rid, req.num_computed_tokens)
        self.ledger.free(rid)
        self.running.pop(rid, None)
        t.reset_for_queue()
        req.status = RequestStatus.PREEMPTED
        if counted:
            req.num_preemptions += 1
            self.num_preemptions += 1
        self.notes.note_preempted(rid, checkpoint)

    def on_drained(self, t: Ticket) -> None:
        """The request has no step in flight any more: drop it if it is done, preempt it if it
        was chosen as a victim (or its step failed) while in flight."""
        req = t.req
        if req.is_finished:
            if not self.notes.is_finish_pending(req.request_id):
                self.requests.pop(req.request_id, None)
        elif t.preempt_when_drained and req.status is RequestStatus.RUNNING:
            counted = not t.discard_inflight
            mode = self._policy.preemption_mode(req) if counted else PreemptionMode.RECOMPUTE
            self.preempt(t, mode, counted=counted)
            self.enqueue(t, self._clock.now())

    def evict_all(self, now: float) -> list[Request]:
        """Takes every unfinished request out (the worker died), reset to its known tokens, in
        admission order; forgets the steps in flight and the blocks."""
        evicted = [t for t in self.requests.values() if not t.req.is_finished]
        evicted.sort(key=attrgetter("seq"))
        policy = self._policy
        for t in evicted:
            req = t.req
            policy.on_finished(req, now)
            req.reset_for_queue()
            req.status = RequestStatus.PREEMPTED if req.output_token_ids else RequestStatus.WAITING
        self.requests.clear()
        self.running.clear()
        self.num_rt = 0
        self.waiting = WaitingQueue(track_starvation=policy.aging_s is not None)
        self.inflight.clear()
        self.ledger = BlockLedger(self._config.num_blocks)
        self.outstanding = 0
        unsent = self.notes.on_worker_lost()
        if self._checkpoints is not None:
            for rid in unsent:  # never sent: the worker will not write them
                self._checkpoints.on_checkpoint_failed(rid)
        return [t.req for t in evicted]
