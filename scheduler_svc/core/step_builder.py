"""One step being filled: which running requests get tokens, which waiting ones are admitted, and
which lower-ranked requests give up KV (or a seat) for them. Built afresh for every plan by the
step planner (planner.py), which hands it the running requests in rank order.

The walk (`fill`) merges two streams in key order: the ranked running requests and the waiting
queue's best. Each request gets the tokens it lacks, chunked at the token budget, while
`max_num_seqs` and the ledger allow:

    tokens:   |<-- num_computed -->|<- num_tokens ->|
    blocks:   |  b0  |  b1  |  b2  |  b3  |              block_size = 4, held = 3
    need = cdiv(num_computed + num_tokens, block_size) - held

A running request short of KV preempts requests ranked after it that have no step in flight (a
victim with one in flight is drained: not scheduled again, preempted by the roster once its
results are in). A waiting request may do so only where the policy allows it; a promoted one
always may, and may take a seat at `max_num_seqs`. At `max_num_seqs` a waiting request the policy
lets take seats (`may_take_seats`, bros and tempo: on-time RT) takes that of a lower-ranked
request the policy names (`seat_may_preempt`) whose checkpoint fits the host tier, fewest blocks
first (`_take_seat`).
"""

from __future__ import annotations

from collections.abc import Callable

from llmserve.types import cdiv, is_decode
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.plan import NewRequestData, ScheduledRequest
from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.prefix_view import PrefixCacheView
from scheduler_svc.core.request import RequestStatus, ServiceClass
from scheduler_svc.core.roster import Entry, Roster
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.ticket import Ticket

_RUNNING = RequestStatus.RUNNING
_RT = ServiceClass.REAL_TIME


class StepBuilder:
    """Accumulates one plan's work. `running`: the running requests in rank order (best first);
    those at index `start` or later rank after the request being served and may be its victims."""

    __slots__ = ("draft", "running", "scheduled", "entries", "new_requests", "victims", "preempted_any",
                 "_roster", "_ledger", "_policy", "_checkpoints", "_block_size", "_limit_tokens", "_on_scheduled",
                 "_prefix")

    def __init__(self, draft: StepDraft, running: list[Ticket], roster: Roster, policy: Policy,
                 checkpoints: CheckpointBook | None, block_size: int,
                 limit_tokens: Callable | None, on_scheduled: Callable | None,
                 prefix: PrefixCacheView | None = None) -> None:
        """`limit_tokens` / `on_scheduled`: the policy's hooks, None where it keeps the defaults
        (skipped on the per-request hot path). `prefix`: the worker's prefix cache, if it has one."""
        self._prefix = prefix
        self.draft = draft
        self.running = running
        self.scheduled: list[ScheduledRequest] = []
        self.entries: list[Entry] = []
        self.new_requests: list[NewRequestData] = []
        self.victims: list[Ticket] = []  # preempted in this step: queued once the step is planned
        self.preempted_any = False
        self._roster = roster
        self._ledger = roster.ledger
        self._policy = policy
        self._checkpoints = checkpoints
        self._block_size = block_size
        self._limit_tokens = limit_tokens
        self._on_scheduled = on_scheduled

    def fill(self, refresh: Callable[[Ticket], tuple | None] | None, max_num_seqs: int) -> None:
        """Walks running and waiting requests merged in key order until the token budget is spent
        or nobody can use it. `refresh`: the waiting queue's lazy re-keying (or None)."""
        draft, running, waiting = self.draft, self.running, self._roster.waiting
        admitted = self._roster.running  # grows as requests are admitted
        ri = 0
        admission_open = True
        while draft.token_budget > 0:
            r = running[ri] if ri < len(running) else None
            w = waiting.peek(refresh) if admission_open else None
            if w is not None and len(admitted) >= max_num_seqs and not (
                    self._free_seat(w, ri) if w.promoted_at is not None else self._take_seat(w, ri)):
                w = None  # no seat (a promoted request frees one, the policy may let others take one)
                admission_open = False
            if w is None and r is None:
                break
            if w is not None and (r is None or w.sched_key < r.sched_key):
                admission_open = self._try_admit(w, ri)
            else:
                ri += 1
                if r.req.status is _RUNNING and not r.preempt_when_drained:
                    self._try_schedule(r, ri)

    def _try_admit(self, t: Ticket, start: int) -> bool:
        """Admits the best waiting request if it fits; False closes admission for this step."""
        req = t.req
        privileged = t.promoted_at is not None
        if self.preempted_any and not privileged:
            return False  # vLLM: no admission in a step that had to preempt (avoids thrashing)
        # Resume from a host-tier checkpoint when the book has one: its tokens are not recomputed.
        book = self._checkpoints
        resume = book.resume_point(req.request_id, req.num_tokens) if book else 0
        # Past its cached prefix, as the worker's cache holds it now (claimed below): a resumed
        # request re-acquires the shared blocks and restores only the rest (issue 13); a
        # checkpoint no longer than the hit is not needed at all.
        cached = 0
        if self._prefix is not None:
            cached = req.num_cached_tokens = self._prefix.cached_tokens(req)
            if resume <= cached:
                resume = 0
        first = resume or cached
        req.num_computed_tokens = first  # policies price the step from here
        num_tokens = min(req.num_tokens - first, self.draft.token_budget)
        decode = is_decode(first, num_tokens, req.num_prompt_tokens)
        num_tokens = self._policy.limit_tokens(req, num_tokens, decode, self.draft, t)
        if num_tokens <= 0:
            req.num_computed_tokens = req.num_cached_tokens  # queued again, as it was
            return False
        need = cdiv(first + num_tokens, self._block_size)  # a waiting request holds no blocks
        reserve = 0 if privileged else self._policy.kv_reserve(req)
        if not self._ledger.can_allocate(need, reserve):
            if not self._make_room(t, need, reserve, start, admission=True):
                req.num_computed_tokens = req.num_cached_tokens
                return False
        self._roster.admit(t)
        self.new_requests.append(NewRequestData(
            req.request_id, req.all_token_ids(), req.num_prompt_tokens, req.sampling, req.service_class,
            req.num_output_tokens, first, num_cached_tokens=cached, prefix_salt=req.prefix_salt))
        if resume:
            book.on_restore(req.request_id, resume)  # type: ignore[union-attr]
        if cached:
            self._prefix.claim(req)  # type: ignore[union-attr]
        self._commit(t, num_tokens, decode, need)
        return True

    def _try_schedule(self, t: Ticket, start: int) -> None:
        """Gives a running request the tokens it lacks, if budgets and KV allow."""
        # Hot path (runs for every running request every step): plain locals, no properties.
        req = t.req
        num_output = len(req.output_token_ids) + req.num_output_placeholders
        if num_output >= req.sampling.max_tokens:
            return  # its last token is being sampled: nothing more to compute
        computed = req.num_computed_tokens
        num_prompt = len(req.prompt_token_ids)
        missing = num_prompt + num_output - computed
        if missing <= 0:
            return
        budget = self.draft.token_budget
        num_tokens = missing if missing < budget else budget
        decode = is_decode(computed, num_tokens, num_prompt)
        if self._limit_tokens is not None:
            num_tokens = self._limit_tokens(req, num_tokens, decode, self.draft, t)
            if num_tokens <= 0:
                return
        ledger = self._ledger
        block_size = self._block_size
        held = ledger.held(req.request_id)
        need = cdiv(computed + num_tokens, block_size) - held
        if need > 0 and not ledger.can_allocate(need):
            # A wait needs a step in flight: its result re-plans with less slack (else an idle core
            # whose running requests all wait for blocks would never plan again).
            if (self._roster.inflight and self._policy.growth_may_wait(req)) or not self._make_room(
                    t, need, 0, start, admission=False):
                if t.preempt_when_drained or req.status is not _RUNNING:
                    return  # it yielded its blocks (`growth_may_preempt`)
                # Take what the free blocks hold rather than nothing (a shorter prefill chunk).
                num_tokens = min(num_tokens, (held + ledger.num_free) * block_size - computed)
                if num_tokens <= 0:
                    return
                need = cdiv(computed + num_tokens, block_size) - held
        self._commit(t, num_tokens, decode, need)

    def _commit(self, t: Ticket, num_tokens: int, decode: bool, need: int) -> None:
        """Puts `num_tokens` of the request in the step; `need`: blocks to add for them."""
        req = t.req
        computed = req.num_computed_tokens
        rid = req.request_id
        if need > 0:
            self._ledger.allocate(rid, req.slo.service_class, need)
        sample = computed + num_tokens == (
            len(req.prompt_token_ids) + len(req.output_token_ids) + req.num_output_placeholders)
        self.scheduled.append(ScheduledRequest(rid, num_tokens, computed, sample))
        self.entries.append((t, sample))
        req.num_computed_tokens = computed + num_tokens
        if sample:
            req.num_output_placeholders += 1
        t.num_inflight_steps += 1
        draft = self.draft
        t.last_progress_s = draft.now
        draft.add(computed, num_tokens, decode)
        if self._on_scheduled is not None:
            self._on_scheduled(req, num_tokens, decode, sample, draft, t)

    def _make_room(self, beneficiary: Ticket, need: int, reserve: int, start: int, admission: bool) -> bool:
        """Frees KV for `beneficiary` by preempting lower-ranked running requests (`running[start:]`,
        worst first). Victims with a step in flight are drained instead: they stop being scheduled
        and are preempted once their results are in, so their blocks come a step later. Nobody is
        touched unless enough blocks can be had. True if `need` blocks (+ reserve) are free now.
        Nobody is touched either while victims already being drained will free enough: the
        beneficiary waits a step for their blocks (else, with two plans in flight, every short
        request of a step drained a victim of its own for a block or two). A running beneficiary
        that the policy refused a victim (`growth_may_preempt`) and that cannot get its blocks
        otherwise yields its own: it is preempted, so the request it spared can grow (else both
        could wait for each other's blocks)."""
        ledger = self._ledger
        free = ledger.num_free - reserve
        chosen: list[Ticket] = []
        gain = 0
        spared = False  # a victim the policy refused to this (running) beneficiary
        running = self.running
        if free + sum(ledger.held(t.req.request_id) for t in running if t.preempt_when_drained) >= need:
            return False
        privileged = beneficiary.promoted_at is not None
        policy = self._policy
        for j in range(len(running) - 1, start - 1, -1):
            victim = running[j]
            if victim is beneficiary or victim.req.status is not _RUNNING or victim.preempt_when_drained:
                continue
            if victim.promoted_at is not None and not privileged:
                continue
            if admission and not privileged and not policy.admission_may_preempt(beneficiary.req, victim.req):
                continue
            held = ledger.held(victim.req.request_id)
            if held == 0:
                continue
            if not admission and not privileged and not policy.growth_may_preempt(beneficiary.req, victim.req):
                spared = True
                continue
            chosen.append(victim)
            gain += held
            if free + gain >= need:
                break
        if free + gain < need:
            if spared:
                self._preempt(beneficiary)
                self.preempted_any = True
            return False
        for victim in chosen:
            self._preempt(victim)
        self.preempted_any = True
        return ledger.can_allocate(need, reserve)

    def _preempt(self, victim: Ticket) -> None:
        """Preempts `victim` now, or once its steps in flight are back (drained)."""
        if victim.num_inflight_steps:
            victim.preempt_when_drained = True
        else:
            self._roster.preempt(victim, self._policy.preemption_mode(victim.req), counted=True)
            self.victims.append(victim)

    def _take_seat(self, beneficiary: Ticket, start: int) -> bool:
        """The seat the policy lets a waiting request take at `max_num_seqs` (`seat_may_preempt`):
        of the requests ranked after it that it may take one from, the one holding the fewest
        blocks (the cheapest to checkpoint and restore), one for each RT request waiting less the
        seats already on their way (victims being drained): the walk stops at the first waiting
        request without a seat, so the ones behind it would otherwise get a seat a step each.
        Only victims whose checkpoint the host tier holds beside the others (the book's `fits`):
        a seat is never bought with a recompute. True if a seat is free now; a victim with a
        step in flight is drained, its seat free once its steps are back."""
        policy, ledger, running, book = self._policy, self._ledger, self.running, self._checkpoints
        req = beneficiary.req
        if book is None or not policy.may_take_seats(req):
            return False  # without a checkpoint book the victim would be recomputed
        candidates: list[tuple[int, int, Ticket]] = []
        on_the_way = pending = 0
        for j in range(start, len(running)):
            victim = running[j]
            if victim.preempt_when_drained:
                on_the_way += 1
                pending += victim.req.num_computed_tokens  # its checkpoint is still to come
                continue
            if victim.req.status is not _RUNNING or victim.promoted_at is not None:
                continue
            if policy.seat_may_preempt(req, victim.req):
                candidates.append((ledger.held(victim.req.request_id), j, victim))
        if not candidates:
            return False
        roster = self._roster  # RT requests waiting: those not finished less those running
        rt_running = sum(1 for t in roster.running.values() if t.req.service_class is _RT)
        wanted = roster.num_rt - rt_running - on_the_way
        if wanted <= 0:
            return False
        candidates.sort(key=lambda c: (c[0], -c[1]))  # fewest blocks, then the lowest ranked
        # Not `preempted_any`: that would close admission to the beneficiary too, and the seats
        # are full anyway, so nothing else is admitted behind it without a seat of its own.
        for _, _, victim in candidates:
            if wanted <= 0:
                break
            tokens = victim.req.num_computed_tokens
            if not book.fits(pending + tokens):
                continue  # its checkpoint would evict another's (recomputed later): keep its seat
            pending += tokens
            wanted -= 1
            self._preempt(victim)
            if not victim.preempt_when_drained:
                return True  # a seat free now (for this request; the others' come as they drain)
        return False

    def _free_seat(self, beneficiary: Ticket, start: int) -> bool:
        """A promoted request may take the seat of the lowest-ranked non-promoted running request
        when max_num_seqs is reached (the aging bound would not hold otherwise). True if a seat
        is free now; a victim with a step in flight is drained and frees its seat a step later."""
        running = self.running
        for j in range(len(running) - 1, start - 1, -1):
            victim = running[j]
            if victim.req.status is not _RUNNING or victim.promoted_at is not None:
                continue
            if victim.preempt_when_drained:
                return False  # a seat is already on its way
            self._preempt(victim)
            return not victim.preempt_when_drained
        return False
