"""How much of each request goes into a step: the rules bros and tempo share on top of the step
guard (`step_guard.py`) and the on-time / lost / aged split (`slo_watch.py`).

- On-time RT decodes are always taken (one token, ~20 µs each).
- Every other chunk is trimmed so the step ends before the tightest RT deadline it can still
  meet (and within the pace of its streams, `StepGuard.note`).
- The streams' slack bank (opt-in, `slack_bank_tpots`; 0, the default of bros and tempo, turns it
  off): while a stream in the step has less than that many TPOTs of slack, work other than
  on-time RT may only fill the step up to `bank_fill_pace` (0.5) of its TPOT, so its slack grows
  as on dedicated hardware, where streams bank ~40 ms a token in quiet periods and spend it when
  a burst of prompts comes; on-time RT work keeps the whole limit. `bank_spares_deadline_work`
  (bros) spares on-time deadline work too: bros ranks it among RT prompts by slack, and a waiting
  request the bank zeroes closes admission, so the RT prompts behind it waited. In the simulator
  (docs/scheduling.md, "the slack bank") 10 TPOTs lifted RT within 0.02 of dedicated from 92 to
  95 of 95 tuning cells for tempo and 90 to 92 for bros. Off by default because live on the CPU
  stack it cost best-effort work 1.5-4x at the highest load (`mixed_bursty` x4: bros 39.7 -> 10.5
  tok/s, tempo 35.7 -> 23.4, RT 1.00 either way; fcfs itself 41.9 -> 28.3 between the runs);
  the simulator, with or without step-time noise, predicts ~40 tok/s with the bank and without,
  so that cost is not modelled yet (docs/scheduling.md, phase E).
- A chunk that completes an on-time RT prompt must also end before that request's own first
  token is due; trimming it to that deadline helps only if the whole chunk then fits, else the
  token is late anyway and the chunk takes what the others' deadlines allow. (Trimming every
  such chunk to its own deadline left ~300 tokens of each step's budget unused while RT
  prompts queued in the suite's near-saturated cells.)
- Progress beyond the guard: the first chunk of a step that is on-time RT work or aged and
  does not fit still gets `min_prefill_chunk` tokens; only the first. A minimum chunk for every
  waiting RT request overran a step by ~30 ms in a burst and left them all half done.
- One prompt at a time below on-time work: a waiting request that is neither on-time RT nor
  on-time deadline work is admitted only when no such request is left mid-prompt (Sarathi's
  "continue the partial prefill first"). Prefill cost is linear, so several half-done prompts
  gain nothing, but each holds a seat and has claimed KV for a prompt not computed yet: with
  chunks trimmed by the guard and the progress rule, up to 120 BE prompts were half done at once
  in the diagnosis (docs/scheduling.md) and their growth preempted 70 BE requests (fcfs: 0).
- A prompt one can hold: such a request is admitted only when the free blocks hold its whole
  known tokens (`kv_reserve`: the blocks beyond its first chunk stay free), so its later chunks
  never have to take blocks from the requests already running.
"""

from __future__ import annotations

import math

from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.policy.slo_watch import SloWatch, is_lost, note_admission, note_progress
from scheduler_svc.core.policy.step_guard import StepGuard
from scheduler_svc.core.request import Request, RequestStatus, ServiceClass
from scheduler_svc.core.step_draft import StepDraft

_RT = ServiceClass.REAL_TIME
_DL = ServiceClass.DEADLINE


def may_take_seat_of(beneficiary: Request, victim: Request, victim_watch: SloWatch, now: float,
                     hold_s: float) -> bool:
    """Whether a waiting on-time RT request may take `victim`'s seat at `max_num_seqs` (the
    caller checks that it is on time). RT seats are never taken, nor those of deadline work that
    can still meet its deadline, of aged requests, or of requests re-admitted less than `hold_s`
    ago (a restored victim preempted again thrashes).
    And only a seat of work whose KV is no larger than the prompt it makes room for: its
    checkpoint and restore move at most what the beneficiary's prefill computes, and a long
    best-effort request, whose checkpoint the host tier may not hold, keeps its seat."""
    if victim.service_class is _RT or victim.num_computed_tokens > beneficiary.num_prompt_tokens:
        return False
    if victim_watch.aged or (victim.service_class is _DL and not is_lost(victim, victim_watch, now, 0.0)):
        return False  # (checked now: the policy's ranking may have last looked steps ago)
    return now - victim_watch.admitted_at >= hold_s


def growth_may_wait(req: Request, watch: SloWatch, guard: StepGuard, horizon_steps: float) -> bool:
    """Whether an on-time RT request short of KV for its next chunk should wait for blocks
    (requests finishing, victims draining) instead of preempting: while its next token keeps
    `horizon_steps` mean steps of slack after this step, a step's wait costs it nothing, and a
    victim taken now costs a checkpoint and a restore, or a recompute once the host tier is full.
    When the slack runs short it preempts as before."""
    if req.service_class is not _RT or watch.lost:
        return False
    remaining = max(0, req.num_tokens - req.num_computed_tokens)
    slack = req.next_token_deadline_s() - guard.start_s - guard.prefill_s(remaining)
    return slack >= horizon_steps * guard.mean_step_s


def on_time(req: Request, watch: SloWatch) -> bool:
    """RT or deadline work that can still meet its SLO (as last ranked)."""
    return req.service_class is not ServiceClass.BEST_EFFORT and not watch.lost


class SloStep:
    """Per-step state of those rules; the policy calls it from its hooks."""

    __slots__ = ("guard", "min_prefill_chunk", "stream_reserve_tpots", "slack_bank_tpots", "bank_fill_pace",
                 "bank_spares_deadline_work", "block_size", "_forced", "_partial", "_last")

    def __init__(self, guard: StepGuard, min_prefill_chunk: int, stream_reserve_tpots: float,
                 slack_bank_tpots: float = 0.0, bank_fill_pace: float = 0.5,
                 bank_spares_deadline_work: bool = False) -> None:
        if min_prefill_chunk < 1 or stream_reserve_tpots < 0 or slack_bank_tpots < 0:
            raise ValueError("min_prefill_chunk >= 1, stream_reserve_tpots >= 0 and slack_bank_tpots >= 0")
        if not 0 < bank_fill_pace <= 1:
            raise ValueError(f"0 < bank_fill_pace <= 1 (got {bank_fill_pace})")
        self.guard = guard
        self.min_prefill_chunk = min_prefill_chunk
        self.stream_reserve_tpots = stream_reserve_tpots
        self.slack_bank_tpots = slack_bank_tpots
        self.bank_fill_pace = bank_fill_pace
        self.bank_spares_deadline_work = bank_spares_deadline_work
        self._forced = False  # a chunk got min_prefill_chunk beyond the guard in this step
        self._partial: dict[str, Request] = {}  # admitted, not on time, prompt not computed yet
        self.block_size = 0  # the core's (bind); 0: unknown, no whole-prompt reserve
        self._last: tuple[str, int] = ("", 0)  # the last limit() answer: (request id, tokens)

    def bind(self, config: SchedulerConfig) -> None:
        self.block_size = config.block_size

    def begin_step(self, draft: StepDraft) -> None:
        self.guard.begin_step(draft)
        self._forced = False

    def _prompt_in_progress(self) -> bool:
        partial = self._partial
        for rid, r in list(partial.items()):
            if r.status is not RequestStatus.RUNNING or r.num_computed_tokens >= r.num_prompt_tokens:
                del partial[rid]
        return bool(partial)

    def limit(self, req: Request, watch: SloWatch, num_tokens: int, is_decode: bool, draft: StepDraft,
              may_force: bool) -> int:
        """Tokens `req` gets (see the module docstring); `may_force`: it is aged (or promoted)."""
        tokens = self._limit(req, watch, num_tokens, is_decode, draft, may_force)
        self._last = (req.request_id, tokens)
        return tokens

    def kv_reserve(self, req: Request, watch: SloWatch) -> int:
        """Blocks a waiting request must leave free when admitted: below on-time work, those of
        its known tokens beyond the chunk it gets now (its `limit` answer, asked just before)."""
        if on_time(req, watch) or not self.block_size:
            return 0
        rid, chunk = self._last
        first = req.num_computed_tokens + (chunk if rid == req.request_id else 0)
        size = self.block_size
        return max(0, -(-req.num_tokens // size) - -(-first // size))

    def _limit(self, req: Request, watch: SloWatch, num_tokens: int, is_decode: bool, draft: StepDraft,
               may_force: bool) -> int:
        timely = on_time(req, watch)
        rt_on_time = timely and req.service_class is _RT
        if rt_on_time and is_decode:
            return num_tokens
        if not timely and req.status is not RequestStatus.RUNNING and self._prompt_in_progress():
            return 0
        guard = self.guard
        spared = timely if self.bank_spares_deadline_work else rt_on_time
        deadline = draft.tightest_deadline_s if spared else draft.filler_deadline_s
        if rt_on_time and req.num_computed_tokens + num_tokens >= req.num_tokens:
            own = min(deadline, req.next_token_deadline_s())
            if guard.fit(req, num_tokens, is_decode, draft, own) == num_tokens:
                return num_tokens
        fits = guard.fit(req, num_tokens, is_decode, draft, deadline)
        floor = min(num_tokens, self.min_prefill_chunk)
        if fits < floor and (rt_on_time or may_force) and not self._forced:
            self._forced = True
            return floor
        return fits

    def on_scheduled(self, req: Request, watch: SloWatch, is_decode: bool, sample: bool, draft: StepDraft) -> None:
        note_admission(req, watch, draft.now)
        note_progress(watch, draft.now)
        timely = on_time(req, watch)
        if not is_decode and not sample and not timely:
            self._partial[req.request_id] = req
        if timely and req.service_class is _RT:
            # The token this step samples (or, for a prefill chunk, the first token still due);
            # a stream's also at its pace, keeping `stream_reserve_tpots` TPOTs of its slack.
            index = req.num_scheduled_outputs - 1 if sample else req.num_scheduled_outputs
            if is_decode:
                tpot = req.slo.tpot_ms / 1000.0  # type: ignore[operator]
                due = req.token_deadline_s(index)
                if self.guard.note(due, draft, tpot, self.stream_reserve_tpots * tpot) and self.slack_bank_tpots:
                    start = self.guard.start_s
                    if due - start - tpot < self.slack_bank_tpots * tpot:  # below its bank: let it grow
                        draft.note_filler_deadline(start + self.bank_fill_pace * tpot)
            else:
                self.guard.note(req.token_deadline_s(index), draft, math.inf)
