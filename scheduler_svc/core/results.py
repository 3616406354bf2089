"""Applies what comes back from the worker, in step order: sampled tokens (with the stop checks:
EOS, stop token ids, max_tokens, the context length), failed steps, and the checkpoint reports.

A request's tokens from a step are used only if it is still running and its in-flight work was
not discarded (a failed earlier step, a broken contract); each request whose last step in flight
comes back is handed to the roster, which drops it or, if it was marked as a victim, preempts it.
"""

from __future__ import annotations

from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.clock import Clock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import RequestOutput, StepResult
from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.request import FinishReason, Request
from scheduler_svc.core.roster import Entry, Roster
from scheduler_svc.core.ticket import Ticket

# Invalid plans a request may be named in (each after it was planned afresh) before it ends with
# an error: one is a slip the recompute repairs, two is the request itself.
MAX_PLAN_REJECTIONS = 2


def final_output(req: Request, tokens: tuple[int, ...]) -> RequestOutput:
    """The last event of a finished request (its finish reason set)."""
    return RequestOutput(req.request_id, tokens, req.finish_reason, req.num_prompt_tokens, req.num_preemptions,
                         num_cached_tokens=req.num_cached_tokens)


class ResultHandler:
    __slots__ = ("_roster", "_policy", "_clock", "_checkpoints", "_eos", "_max_model_len", "num_steps",
                 "num_failed_steps")

    def __init__(self, roster: Roster, policy: Policy, clock: Clock, config: SchedulerConfig,
                 checkpoints: CheckpointBook | None) -> None:
        self._roster = roster
        self._policy = policy
        self._clock = clock
        self._checkpoints = checkpoints
        self._eos = frozenset(config.eos_token_ids)
        self._max_model_len = config.max_model_len
        self.num_steps = 0  # step results applied (successful or failed)
        self.num_failed_steps = 0

    def update(self, result: StepResult) -> list[RequestOutput]:
        """See `Scheduler.update`."""
        book = self._checkpoints
        if book is not None:
            for rid in result.checkpoint_failed_request_ids:
                book.on_checkpoint_failed(rid)
            for rid in result.restore_failed_request_ids:
                book.on_restore_failed(rid, book.tokens(rid))
        if result.error:
            return self.fail_step(result.step_id, result.error, result.rejected_request_id)
        entries = self._pop_inflight(result.step_id)
        now = self._clock.now()
        sampled = dict(result.sampled)
        new_tokens: dict[str, list[int]] = {}
        finished: dict[str, Request] = {}
        roster = self._roster
        for t, sample in entries:
            t.num_inflight_steps -= 1
            if sample:
                req = t.req
                req.num_output_placeholders -= 1
                if not req.is_finished and not t.discard_inflight:
                    token = sampled.get(req.request_id)
                    if token is None:  # the worker broke the contract: recompute from known tokens
                        t.discard_inflight = t.preempt_when_drained = True
                    else:
                        new_tokens.setdefault(req.request_id, []).append(token)
                        if self._append_token(t, token, now):
                            finished[req.request_id] = req
            if t.num_inflight_steps == 0:
                roster.on_drained(t)
        self._policy.observe_step(result.timing, now)
        outputs = roster.notes.take_outputs()
        for rid, tokens in new_tokens.items():
            done = finished.get(rid)
            if done is not None:
                outputs.append(final_output(done, tuple(tokens)))
            else:
                outputs.append(RequestOutput(rid, tuple(tokens)))
        return outputs

    def fail_step(self, step_id: int, error: str, rejected_request_id: str = "") -> list[RequestOutput]:
        """See `Scheduler.fail_step`."""
        entries = self._pop_inflight(step_id)
        self.num_failed_steps += 1
        if rejected_request_id:
            self._count_rejection(entries, rejected_request_id, error)
        # A later step in flight that shares a request with this one is doomed (the worker's count
        # check will fail it), and so is everything in it: stop scheduling all of those requests
        # now, or every new plan would again mix healthy requests into a doomed step.
        doomed = {t.req.request_id for t, _ in entries}
        roster = self._roster
        for later in roster.inflight.values():
            if any(t.req.request_id in doomed for t, _ in later):
                for t, _ in later:
                    doomed.add(t.req.request_id)
                    if not t.req.is_finished:
                        t.discard_inflight = t.preempt_when_drained = True
        for t, sample in entries:
            t.num_inflight_steps -= 1
            if sample:
                t.req.num_output_placeholders -= 1
            if not t.req.is_finished:
                t.discard_inflight = t.preempt_when_drained = True
            if t.num_inflight_steps == 0:
                roster.on_drained(t)
        return roster.notes.take_outputs()

    def _count_rejection(self, entries: list[Entry], request_id: str, error: str) -> None:
        """The worker refused the step's plan because of this request. A first refusal may be the
        planner's slip (recomputing the request repairs it); one that comes back after the request
        was planned afresh will come back every time (a token the model cannot take, say), failing
        every step it shares with others: end it with the worker's reason. Steps already doomed by
        its first failure (planned before it was known) are not counted."""
        t = next((t for t, _ in entries if t.req.request_id == request_id), None)
        if t is None or t.discard_inflight or t.req.is_finished:
            return
        t.num_rejections += 1
        if t.num_rejections < MAX_PLAN_REJECTIONS:
            return
        req = t.req
        roster = self._roster
        roster.finish(t, FinishReason.ERROR, self._clock.now())
        roster.notes.note_output(RequestOutput(
            request_id, (), FinishReason.ERROR, req.num_prompt_tokens, req.num_preemptions,
            error_message=f"the worker refused {t.num_rejections} plans because of this request: {error}",
            num_cached_tokens=req.num_cached_tokens))

    def _pop_inflight(self, step_id: int) -> list[Entry]:
        entries = self._roster.inflight.pop(step_id, None)
        if entries is None:
            return []  # a step of an evicted worker, or already failed
        self.num_steps += 1
        return entries

    def _append_token(self, t: Ticket, token: int, now: float) -> bool:
        """Appends a sampled token and applies the stop checks; True if it finished the request."""
        req = t.req
        req.output_token_ids.append(token)
        req.token_times_s.append(now)
        if req.first_token_s is None:
            req.first_token_s = now
        self._roster.outstanding -= 1
        sampling = req.sampling
        reason = None
        if (token in self._eos and not sampling.ignore_eos) or token in sampling.stop_token_ids:
            reason = FinishReason.STOP
        elif len(req.output_token_ids) >= sampling.max_tokens or req.num_tokens >= self._max_model_len:
            reason = FinishReason.LENGTH
        if reason is None:
            return False
        self._roster.finish(t, reason, now)
        return True
