"""The scheduler core of one worker: queues, the step planner, result handling, KV ledger.

Pure and synchronous: no grpc, no asyncio, no wall clock (a `Clock` is injected). The async
shell calls `schedule()` to get plan N+1 while plan N is still running on the worker (up to two
plans in flight), then `update()` with each result in step order.

Lifecycle of a request:

    add_request ──▶ WAITING ──admit──▶ RUNNING ──update: EOS/stop id/max_tokens/context──▶ FINISHED_*
                       ▲                  │  (listed in the next plan's finished ids; blocks freed)
                       └────preempt───────┘  PREEMPTED: KV dropped, listed in preempted ids,
                                             re-admitted later as a NewRequest with all known tokens
With a `CheckpointBook` (issue 4), a victim the policy preempts with CHECKPOINT is also listed in
the plan's `checkpoint_request_ids` (the worker saves its KV to the store's host tier first) and
re-admission resumes from the checkpoint (`NewRequestData.num_computed_tokens`); see checkpoints.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

from llmserve.errors import CapacityError, InvalidRequestError
from scheduler_svc.core.block_ledger import BlockLedger
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.clock import Clock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import BatchPlan, NewRequestData, RequestOutput, ScheduledRequest, StepResult
from scheduler_svc.core.policy.base import Policy, PreemptionMode
from scheduler_svc.core.request import FINISHED_STATUS, FinishReason, Request, RequestStatus, ServiceClass
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.waiting_queue import WaitingQueue

_SORT_KEY = attrgetter("sched_key")
_MAX_LAZY_REKEYS = 32


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    policy: str
    num_waiting: int
    num_running: int
    num_steps: int  # step results applied (successful or failed)
    num_preemptions: int
    num_failed_steps: int
    num_inflight_steps: int
    num_free_blocks: int
    kv_blocks_by_class: dict[ServiceClass, int] = field(default_factory=dict)


# One scheduled piece of work, kept until its step's result arrives: (request, num_tokens, sample).
_Entry = tuple[Request, int, bool]


class Scheduler:
    """Plans steps for one worker. See the module docstring and `schedule()`."""

    def __init__(self, config: SchedulerConfig, policy: Policy, clock: Clock,
                 checkpoints: CheckpointBook | None = None) -> None:
        """`checkpoints`: the (shared) book of host-tier checkpoints; None preempts by recompute only."""
        self.config = config
        self.checkpoints = checkpoints
        self._checkpoint_ids: list[str] = []  # preempted by checkpoint since the last plan
        self._drop_ids: list[str] = []  # left while holding a checkpoint: the next plan drops it
        self.policy = policy
        policy.bind(config)
        self.clock = clock
        self.ledger = BlockLedger(config.num_blocks)
        self._eos = frozenset(config.eos_token_ids)
        self._requests: dict[str, Request] = {}  # every request not yet dropped
        self._running: dict[str, Request] = {}  # admitted: holding (or about to hold) KV on the worker
        self._waiting = WaitingQueue(track_starvation=policy.aging_s is not None)
        self._to_finish: dict[str, Request] = {}  # finished while admitted: listed in the next plan
        self._preempted_ids: list[str] = []  # preempted since the last plan
        self._inflight: dict[int, list[_Entry]] = {}  # step_id -> work, in plan order
        self._outputs: list[RequestOutput] = []  # produced outside update() (aborts), delivered next
        self._next_step_id = 0
        self._next_seq = 0
        self._last_rekey_step = 0
        self._outstanding = 0
        # Hooks the policy does not override are skipped on the per-request hot path.
        overridden = lambda name: getattr(type(policy), name) is not getattr(Policy, name)  # noqa: E731
        self._limit_tokens = policy.limit_tokens if overridden("limit_tokens") else None
        self._on_scheduled = policy.on_scheduled if overridden("on_scheduled") else None
        self.num_steps = 0
        self.num_preemptions = 0
        self.num_failed_steps = 0

    # ---- requests in ---------------------------------------------------------------------------
    def add_request(self, req: Request) -> None:
        """Queues a request (new, or evicted from another worker's core with its known tokens).

        Raises InvalidRequestError (duplicate id, empty prompt, too long for the context or the
        KV pool) or CapacityError (the waiting queue is full).
        """
        cfg = self.config
        req.prompt_token_ids = tuple(req.prompt_token_ids)
        if req.request_id in self._requests:
            raise InvalidRequestError(f"request_id {req.request_id!r} is already queued on this worker")
        if not req.prompt_token_ids:
            raise InvalidRequestError("prompt_token_ids is empty: send at least one token")
        if req.is_finished:
            raise InvalidRequestError(f"request {req.request_id!r} is already finished")
        max_tokens = req.sampling.max_tokens
        if req.num_prompt_tokens + max_tokens > cfg.max_model_len:
            raise InvalidRequestError(
                f"prompt ({req.num_prompt_tokens} tokens) + sampling.max_tokens ({max_tokens}) exceeds the "
                f"context length {cfg.max_model_len}: shorten the prompt or lower max_tokens")
        if cfg.blocks_for(req.num_prompt_tokens + max_tokens) > cfg.num_blocks:
            raise InvalidRequestError(
                f"prompt + max_tokens ({req.num_prompt_tokens + max_tokens} tokens) exceeds this worker's KV "
                f"capacity ({cfg.num_kv_tokens} tokens): lower max_tokens")
        if req.num_output_tokens >= max_tokens:
            raise InvalidRequestError(f"request {req.request_id!r} already has max_tokens output tokens")
        if len(self._waiting) >= cfg.max_num_waiting:
            raise CapacityError(f"{len(self._waiting)} requests are already waiting on this worker: retry later")
        now = self.clock.now()
        if req.arrival_s <= 0:
            req.arrival_s = now
        req.reset_for_queue()
        if req.status is not RequestStatus.PREEMPTED:
            req.status = RequestStatus.WAITING
        req.seq = self._next_seq
        self._next_seq += 1
        req.promoted_at = None
        req.last_progress_s = now
        req.last_scheduled_step = -1
        self._requests[req.request_id] = req
        self._outstanding += req.num_prompt_tokens + max_tokens - req.num_output_tokens
        self.policy.on_added(req, now)
        self._enqueue(req, now)

    def abort_request(self, request_id: str) -> bool:
        """Aborts an unfinished request; True if it was. Its CANCELLED output comes with the next
        `update()` (or `take_outputs()`); if it was admitted, the next plan lists it as finished."""
        req = self._requests.get(request_id)
        if req is None or req.is_finished:
            return False
        self._finish(req, FinishReason.CANCELLED, self.clock.now())
        self._outputs.append(self._final_output(req, ()))
        return True

    # ---- planning ------------------------------------------------------------------------------
    def schedule(self) -> BatchPlan:
        """Plans the next step. Callable again before the previous plan's `update()`.

        The rule (vLLM's): there is no prefill phase and no decode phase. Every request has
        `num_computed_tokens` chasing `num_tokens_with_spec` (its known tokens plus the tokens
        that steps in flight will sample). A step walks running and waiting requests merged in
        policy-key order (promoted ones first) and gives each the tokens it lacks, chunked at the
        per-step token budget, while `max_num_seqs` and the KV ledger allow. A running request
        short of KV preempts lower-ranked requests that have no step in flight (one still in
        flight is drained first: not scheduled again, preempted once its results are in).
        Counts advance optimistically, so a decode can be planned before the previous token is
        known to the core (the worker keeps it); outputs never exceed max_tokens.

        An empty plan (`is_empty()`) takes no step id: do not send it.
        """
        now = self.clock.now()
        step_id = self._next_step_id
        policy = self.policy
        finished_ids = self._release_finished()
        preempted_ids, self._preempted_ids = self._preempted_ids, []
        if policy.aging_s is not None:
            self._waiting.promote_starved(now, policy.aging_s, self._promoted_key)
        if policy.waiting_key_ttl and step_id - self._last_rekey_step >= policy.waiting_key_ttl:
            self._waiting.rekey(self._make_key, now)
            self._last_rekey_step = step_id
        running = self._order_running(now, step_id)

        draft = StepDraft(now, step_id, len(self._inflight), self.config.max_num_batched_tokens)
        policy.begin_step(draft)
        ctx = _StepContext(draft, running)
        ri = 0
        admission_open = True
        refresh = None
        if policy.waiting_keys_only_worsen:
            # At most _MAX_LAZY_REKEYS per step: when every waiting key decays at once, a full
            # lazy pass would touch them all; beyond the cap the stored (optimistic) key stands
            # until the policy's periodic full re-key.
            rekeys = [0]

            def refresh(req: Request) -> tuple | None:
                if req.key_step == step_id or rekeys[0] >= _MAX_LAZY_REKEYS:
                    return None
                rekeys[0] += 1
                req.key_step = step_id
                req.sched_key = self._make_key(req, now)
                return req.sched_key
        while draft.token_budget > 0:
            r = running[ri] if ri < len(running) else None
            w = self._waiting.peek(refresh) if admission_open else None
            if w is not None and len(self._running) >= self.config.max_num_seqs:
                if w.promoted_at is None or not self._free_seq_slot(w, ri, ctx):
                    w = None
                    admission_open = False
            if w is None and r is None:
                break
            if w is not None and (r is None or w.sched_key < r.sched_key):
                admission_open = self._try_admit(w, ri, ctx)
            else:
                ri += 1
                if r.status is RequestStatus.RUNNING and not r.preempt_when_drained:
                    self._try_schedule(r, ri, ctx)

        for victim in ctx.victims:  # queued only now, so that no victim is re-admitted in its own step
            self._enqueue(victim, now)
        if not (ctx.scheduled or finished_ids or preempted_ids or ctx.preempted_ids or self._drop_ids):
            return BatchPlan(step_id)
        self._next_step_id += 1
        self._inflight[step_id] = ctx.entries
        checkpoint_ids, self._checkpoint_ids = tuple(self._checkpoint_ids), []
        drop_ids, self._drop_ids = tuple(self._drop_ids), []
        return BatchPlan(step_id, tuple(ctx.new_requests), tuple(ctx.scheduled), tuple(finished_ids),
                         tuple(preempted_ids + ctx.preempted_ids), checkpoint_ids, drop_ids)

    def _try_admit(self, req: Request, start: int, ctx: _StepContext) -> bool:
        """Admits the best waiting request if it fits; False closes admission for this step."""
        privileged = req.promoted_at is not None
        if ctx.preempted_any and not privileged:
            return False  # vLLM: no admission in a step that had to preempt (avoids thrashing)
        # Resume from a host-tier checkpoint when the book has one: its tokens are not recomputed.
        resume = self.checkpoints.resume_point(req.request_id, req.num_tokens) if self.checkpoints else 0
        req.num_computed_tokens = resume  # policies price the step from here (0 unless resuming)
        num_tokens = min(req.num_tokens - resume, ctx.draft.token_budget)
        is_decode = resume >= req.num_prompt_tokens and num_tokens == 1
        num_tokens = self.policy.limit_tokens(req, num_tokens, is_decode, ctx.draft)
        if num_tokens <= 0:
            req.num_computed_tokens = 0
            return False
        need = self.config.blocks_for(resume + num_tokens)
        reserve = 0 if privileged else self.policy.kv_reserve(req)
        if not self.ledger.can_allocate(need, reserve):
            if not self._make_room(req, need, reserve, start, ctx, admission=True):
                req.num_computed_tokens = 0
                return False
        self._waiting.remove(req)
        req.status = RequestStatus.RUNNING
        self._running[req.request_id] = req
        ctx.new_requests.append(NewRequestData(
            req.request_id, req.all_token_ids(), req.num_prompt_tokens, req.sampling, req.service_class,
            req.num_output_tokens, resume))
        if resume:
            self.checkpoints.on_restore(req.request_id, resume)  # type: ignore[union-attr]
        self._commit(req, num_tokens, is_decode, ctx)
        return True

    def _try_schedule(self, req: Request, start: int, ctx: _StepContext) -> None:
        """Gives a running request the tokens it lacks, if budgets and KV allow."""
        # Hot path (runs for every running request every step): plain locals, no properties.
        num_output = len(req.output_token_ids) + req.num_output_placeholders
        if num_output >= req.sampling.max_tokens:
            return  # its last token is being sampled: nothing more to compute
        computed = req.num_computed_tokens
        num_prompt = len(req.prompt_token_ids)
        missing = num_prompt + num_output - computed
        if missing <= 0:
            return
        is_decode = missing == 1 and computed >= num_prompt
        budget = ctx.draft.token_budget
        num_tokens = missing if missing < budget else budget
        if self._limit_tokens is not None:
            num_tokens = self._limit_tokens(req, num_tokens, is_decode, ctx.draft)
            if num_tokens <= 0:
                return
        ledger = self.ledger
        block_size = self.config.block_size
        held = ledger.held(req.request_id)
        need = -(-(computed + num_tokens) // block_size) - held
        if need > 0 and not ledger.can_allocate(need):
            if not self._make_room(req, need, 0, start, ctx, admission=False):
                # Take what the free blocks hold rather than nothing (a shorter prefill chunk).
                num_tokens = min(num_tokens, (held + ledger.num_free) * block_size - computed)
                if num_tokens <= 0:
                    return
        self._commit(req, num_tokens, is_decode, ctx)

    def _commit(self, req: Request, num_tokens: int, is_decode: bool, ctx: _StepContext) -> None:
        computed = req.num_computed_tokens
        rid = req.request_id
        need = -(-(computed + num_tokens) // self.config.block_size) - self.ledger.held(rid)
        if need > 0:
            self.ledger.allocate(rid, req.slo.service_class, need)
        sample = computed + num_tokens == (
            len(req.prompt_token_ids) + len(req.output_token_ids) + req.num_output_placeholders)
        ctx.scheduled.append(ScheduledRequest(rid, num_tokens, computed, sample))
        ctx.entries.append((req, num_tokens, sample))
        req.num_computed_tokens = computed + num_tokens
        if sample:
            req.num_output_placeholders += 1
        req.num_inflight_steps += 1
        draft = ctx.draft
        req.last_progress_s = draft.now
        req.last_scheduled_step = draft.step_id
        draft.add(computed, num_tokens, is_decode)
        if self._on_scheduled is not None:
            self._on_scheduled(req, num_tokens, is_decode, sample, draft)

    def _make_room(self, beneficiary: Request, need: int, reserve: int, start: int, ctx: _StepContext,
                   admission: bool) -> bool:
        """Frees KV for `beneficiary` by preempting lower-ranked running requests (`running[start:]`,
        worst first). Victims with a step in flight are drained instead: they stop being scheduled
        and are preempted once their results are in, so their blocks come a step later. Nobody is
        touched unless enough blocks can be had. True if `need` blocks (+ reserve) are free now.
        Nobody is touched either while victims already being drained will free enough: the
        beneficiary waits a step for their blocks (else, with two plans in flight, every short
        request of a step drained a victim of its own for a block or two)."""
        free = self.ledger.num_free - reserve
        chosen: list[Request] = []
        gain = 0
        running = ctx.running
        if free + sum(self.ledger.held(r.request_id) for r in running if r.preempt_when_drained) >= need:
            return False
        privileged = beneficiary.promoted_at is not None
        policy = self.policy
        for j in range(len(running) - 1, start - 1, -1):
            victim = running[j]
            if victim is beneficiary or victim.status is not RequestStatus.RUNNING or victim.preempt_when_drained:
                continue
            if victim.promoted_at is not None and not privileged:
                continue
            if admission and not privileged and not policy.admission_may_preempt(beneficiary, victim):
                continue
            held = self.ledger.held(victim.request_id)
            if held == 0:
                continue
            chosen.append(victim)
            gain += held
            if free + gain >= need:
                break
        if free + gain < need:
            return False
        for victim in chosen:
            if victim.num_inflight_steps:
                victim.preempt_when_drained = True
            else:
                self._preempt(victim, policy.preemption_mode(victim), counted=True, to_plan=ctx.preempted_ids)
                ctx.victims.append(victim)
        ctx.preempted_any = True
        return self.ledger.can_allocate(need, reserve)

    def _free_seq_slot(self, beneficiary: Request, start: int, ctx: _StepContext) -> bool:
        """A promoted request may take the seat of the lowest-ranked non-promoted running request
        when max_num_seqs is reached (the aging bound would not hold otherwise). True if a seat
        is free now; a victim with a step in flight is drained and frees its seat a step later."""
        running = ctx.running
        for j in range(len(running) - 1, start - 1, -1):
            victim = running[j]
            if victim.status is not RequestStatus.RUNNING or victim.promoted_at is not None:
                continue
            if victim.preempt_when_drained:
                return False  # a seat is already on its way
            if victim.num_inflight_steps:
                victim.preempt_when_drained = True
                return False
            self._preempt(victim, self.policy.preemption_mode(victim), counted=True, to_plan=ctx.preempted_ids)
            ctx.victims.append(victim)
            return True
        return False

    # ---- results -------------------------------------------------------------------------------
    def update(self, result: StepResult) -> list[RequestOutput]:
        """Applies one step's result (steps in order); returns the token events it produced,
        at most one per request, plus any pending CANCELLED events."""
        book = self.checkpoints
        if book is not None:
            for rid in result.checkpoint_failed_request_ids:
                book.on_checkpoint_failed(rid)
            for rid in result.restore_failed_request_ids:
                book.on_restore_failed(rid, book.tokens(rid))
        if result.error:
            return self.fail_step(result.step_id, result.error)
        entries = self._pop_inflight(result.step_id)
        now = self.clock.now()
        sampled = dict(result.sampled)
        new_tokens: dict[str, list[int]] = {}
        finished: list[Request] = []
        for req, _, sample in entries:
            req.num_inflight_steps -= 1
            if sample:
                req.num_output_placeholders -= 1
                if not req.is_finished and not req.discard_inflight:
                    token = sampled.get(req.request_id)
                    if token is None:  # the worker broke the contract: recompute from known tokens
                        req.discard_inflight = req.preempt_when_drained = True
                    else:
                        new_tokens.setdefault(req.request_id, []).append(token)
                        if self._append_token(req, token, now):
                            finished.append(req)
            if req.num_inflight_steps == 0:
                self._on_drained(req)
        self.policy.observe_step(result.timing, now)
        outputs = self.take_outputs()
        done = {req.request_id for req in finished}
        for rid, tokens in new_tokens.items():
            req = self._requests.get(rid) or self._to_finish.get(rid)
            if rid in done and req is not None:
                outputs.append(self._final_output(req, tuple(tokens)))
            else:
                outputs.append(RequestOutput(rid, tuple(tokens)))
        return outputs

    def fail_step(self, step_id: int, error: str) -> list[RequestOutput]:
        """The worker failed this step (e.g. the KV store refused its leases): its requests lose
        their KV and go back to waiting with every known token (recompute); none is lost. Tokens
        of their later steps already in flight are discarded."""
        entries = self._pop_inflight(step_id)
        self.num_failed_steps += 1
        # A later step in flight that shares a request with this one is doomed (the worker's count
        # check will fail it), and so is everything in it: stop scheduling all of those requests
        # now, or every new plan would again mix healthy requests into a doomed step.
        doomed = {req.request_id for req, _, _ in entries}
        for later in self._inflight.values():
            if any(req.request_id in doomed for req, _, _ in later):
                for req, _, _ in later:
                    doomed.add(req.request_id)
                    if not req.is_finished:
                        req.discard_inflight = req.preempt_when_drained = True
        for req, _, sample in entries:
            req.num_inflight_steps -= 1
            if sample:
                req.num_output_placeholders -= 1
            if not req.is_finished:
                req.discard_inflight = req.preempt_when_drained = True
            if req.num_inflight_steps == 0:
                self._on_drained(req)
        return self.take_outputs()

    def take_outputs(self) -> list[RequestOutput]:
        """Events produced outside update() (CANCELLED after an abort), for a caller with no
        step in flight."""
        outputs, self._outputs = self._outputs, []
        return outputs

    def evict_all(self) -> list[Request]:
        """Takes every unfinished request out (the worker died): each comes back reset to its
        known tokens, ready for `add_request` on another core. In-flight steps are forgotten."""
        now = self.clock.now()
        evicted = [req for req in self._requests.values() if not req.is_finished]
        evicted.sort(key=attrgetter("seq"))
        for req in evicted:
            self.policy.on_finished(req, now)
            req.reset_for_queue()
            req.promoted_at = None
            req.status = RequestStatus.PREEMPTED if req.output_token_ids else RequestStatus.WAITING
        self._requests.clear()
        self._running.clear()
        self._waiting = WaitingQueue(track_starvation=self.policy.aging_s is not None)
        self._to_finish.clear()
        self._preempted_ids.clear()
        self._inflight.clear()
        self.ledger = BlockLedger(self.config.num_blocks)
        self._outstanding = 0
        if self.checkpoints is not None:
            for rid in self._checkpoint_ids:  # never sent: the worker will not write them
                self.checkpoints.on_checkpoint_failed(rid)
        self._checkpoint_ids.clear()
        return evicted

    # ---- queries -------------------------------------------------------------------------------
    def has_unfinished_requests(self) -> bool:
        return bool(self._running) or len(self._waiting) > 0

    def outstanding_tokens(self) -> int:
        """Routing load: prompt tokens plus output tokens still allowed, over unfinished requests."""
        return self._outstanding

    def get_request(self, request_id: str) -> Request | None:
        return self._requests.get(request_id)

    @property
    def num_inflight_steps(self) -> int:
        return len(self._inflight)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            policy=self.policy.name, num_waiting=len(self._waiting), num_running=len(self._running),
            num_steps=self.num_steps, num_preemptions=self.num_preemptions,
            num_failed_steps=self.num_failed_steps, num_inflight_steps=len(self._inflight),
            num_free_blocks=self.ledger.num_free, kv_blocks_by_class=self.ledger.used_by_class())

    def waiting_requests(self) -> list[Request]:
        return list(self._waiting)

    def running_requests(self) -> list[Request]:
        return list(self._running.values())

    # ---- internals -----------------------------------------------------------------------------
    def _make_key(self, req: Request, now: float) -> tuple:
        return (1, *self.policy.key(req, now), req.seq)

    @staticmethod
    def _promoted_key(req: Request, now: float) -> tuple:
        return (0, req.promoted_at, req.seq)

    def _enqueue(self, req: Request, now: float) -> None:
        if req.promoted_at is None:
            req.sched_key = self._make_key(req, now)
            req.key_step = self._next_step_id
        self._waiting.push(req)

    def _order_running(self, now: float, step_id: int) -> list[Request]:
        """Running requests by effective key; promotes the starved, refreshes stale keys."""
        aging = self.policy.aging_s
        ttl = self.policy.running_key_ttl
        for req in self._running.values():
            if req.promoted_at is not None:
                continue
            if aging is not None and now - req.last_progress_s >= aging:
                req.promoted_at = now
                req.sched_key = (0, now, req.seq)
            elif ttl and step_id - req.key_step >= ttl:
                req.sched_key = self._make_key(req, now)
                req.key_step = step_id
        return sorted(self._running.values(), key=_SORT_KEY)

    def _pop_inflight(self, step_id: int) -> list[_Entry]:
        entries = self._inflight.pop(step_id, None)
        if entries is None:
            return []  # a step of an evicted worker, or already failed
        self.num_steps += 1
        return entries

    def _append_token(self, req: Request, token: int, now: float) -> bool:
        """Appends a sampled token and applies the stop checks; True if it finished the request."""
        req.output_token_ids.append(token)
        req.token_times_s.append(now)
        if req.first_token_s is None:
            req.first_token_s = now
        self._outstanding -= 1
        sampling = req.sampling
        reason = None
        if (token in self._eos and not sampling.ignore_eos) or token in sampling.stop_token_ids:
            reason = FinishReason.STOP
        elif len(req.output_token_ids) >= sampling.max_tokens or req.num_tokens >= self.config.max_model_len:
            reason = FinishReason.LENGTH
        if reason is None:
            return False
        self._finish(req, reason, now)
        return True

    def _finish(self, req: Request, reason: FinishReason, now: float) -> None:
        req.status = FINISHED_STATUS[reason]
        req.finish_reason = reason
        self._outstanding -= req.num_prompt_tokens + req.sampling.max_tokens - req.num_output_tokens
        if self.checkpoints is not None and self.checkpoints.forget(req.request_id):
            self._drop_ids.append(req.request_id)
        if self._running.pop(req.request_id, None) is not None:
            self._to_finish[req.request_id] = req  # the worker holds state: list it in the next plan
        else:
            self._waiting.remove(req)
            if req.num_inflight_steps == 0:
                self._requests.pop(req.request_id, None)
        self.policy.on_finished(req, now)

    def _release_finished(self) -> list[str]:
        ids = list(self._to_finish)
        for rid, req in self._to_finish.items():
            self.ledger.free(rid)
            if req.num_inflight_steps == 0:
                self._requests.pop(rid, None)
        self._to_finish.clear()
        return ids

    def _on_drained(self, req: Request) -> None:
        """The request has no step in flight any more."""
        if req.is_finished:
            if req.request_id not in self._to_finish:
                self._requests.pop(req.request_id, None)
        elif req.preempt_when_drained and req.status is RequestStatus.RUNNING:
            counted = not req.discard_inflight
            mode = self.policy.preemption_mode(req) if counted else PreemptionMode.RECOMPUTE
            self._preempt(req, mode, counted=counted, to_plan=self._preempted_ids)
            self._enqueue(req, self.clock.now())

    def _preempt(self, req: Request, mode: PreemptionMode, counted: bool, to_plan: list[str]) -> None:
        """Takes a running request with no step in flight off the worker.

        CHECKPOINT (with a book, and KV to save) also lists it in the plan's
        `checkpoint_request_ids`: the worker saves its KV to the store's host tier before dropping
        it, and re-admission restores instead of recomputing. Otherwise the KV is recomputed.
        """
        assert req.num_inflight_steps == 0, "a request with a step in flight cannot be preempted"
        book = self.checkpoints
        if book is not None:
            if mode is PreemptionMode.CHECKPOINT and req.num_computed_tokens > 0:
                book.on_checkpoint(req.request_id, req.num_computed_tokens)
                self._checkpoint_ids.append(req.request_id)
            else:
                book.on_recompute(req.request_id, req.num_computed_tokens)
        self.ledger.free(req.request_id)
        self._running.pop(req.request_id, None)
        req.reset_for_queue()
        req.status = RequestStatus.PREEMPTED
        if counted:
            req.num_preemptions += 1
            self.num_preemptions += 1
        to_plan.append(req.request_id)

    def _final_output(self, req: Request, tokens: tuple[int, ...]) -> RequestOutput:
        return RequestOutput(req.request_id, tokens, req.finish_reason, req.num_prompt_tokens, req.num_preemptions)


@dataclass(slots=True)
class _StepContext:
    """What one `schedule()` call accumulates."""

    draft: StepDraft
    running: list[Request]
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    entries: list[_Entry] = field(default_factory=list)
    new_requests: list[NewRequestData] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)
    victims: list[Request] = field(default_factory=list)
    preempted_any: bool = False
