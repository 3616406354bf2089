"""The scheduler core of one worker: the public face of the pieces that do its jobs.

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

Who does what:

    roster.py        every request's ticket, queues, ledger, steps in flight; the moves between states
    ticket.py        the core's private per-request bookkeeping (never on the public `Request`)
    planner.py       one plan: orderings (aging, re-keys), then the plan from the step and the notes
    step_builder.py  one step: tokens for running requests, admissions, victims for KV and seats
    plan_notes.py    what happened between plans that the next plan (or update) must report
    results.py       step results: sampled tokens, stop checks, failed steps, checkpoint reports
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmserve.errors import CapacityError, InvalidRequestError
from scheduler_svc.core.admission import RtAdmission
from scheduler_svc.core.block_ledger import BlockLedger
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.clock import Clock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import BatchPlan, RequestOutput, StepResult
from scheduler_svc.core.planner import StepPlanner
from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.prefix_view import PrefixCacheView
from scheduler_svc.core.request import FinishReason, Request, ServiceClass
from scheduler_svc.core.results import ResultHandler, final_output
from scheduler_svc.core.roster import Roster
from scheduler_svc.core.ticket import Ticket


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


class Scheduler:
    """Plans steps for one worker. See the module docstring and `schedule()`."""

    def __init__(self, config: SchedulerConfig, policy: Policy, clock: Clock,
                 checkpoints: CheckpointBook | None = None, prefix: PrefixCacheView | None = None) -> None:
        """`checkpoints`: the (shared) book of host-tier checkpoints; None preempts by recompute only.
        `prefix`: the worker's prefix cache (core/prefix_view.py); None: every prompt is computed."""
        self._prefix = prefix
        self.config = config
        self.checkpoints = checkpoints
        self.policy = policy
        policy.bind(config)
        self.clock = clock
        self._roster = Roster(config, policy, clock, checkpoints)
        self._planner = StepPlanner(self._roster, policy, config, checkpoints, prefix)
        self._results = ResultHandler(self._roster, policy, clock, config, checkpoints)
        self._admission = RtAdmission(config, policy) if config.rt_admission_control else None

    # ---- requests in ---------------------------------------------------------------------------
    def add_request(self, req: Request, *, new_arrival: bool = False) -> None:
        """Queues a request (new, or evicted from another worker's core with its known tokens).

        Raises InvalidRequestError (duplicate id, empty prompt, too long for the context or the
        KV pool) or CapacityError (the waiting queue is full; with `rt_admission_control`, a
        `new_arrival` real-time request whose predicted TTFT exceeds its SLO: admission.py).
        """
        req.prompt_token_ids = tuple(req.prompt_token_ids)
        self._check_new(req)
        now = self.clock.now()
        if req.arrival_s <= 0:
            req.arrival_s = now
        # Priced from here on past its cached prefix (looked up again at admission).
        req.num_cached_tokens = self._prefix.cached_tokens(req) if self._prefix is not None else 0
        if new_arrival and self._admission is not None:
            self._admission.check(req, self._roster, now)
        self._roster.add(req, now)

    @property
    def last_ttft_forecast_s(self) -> float | None:
        """With `rt_admission_control`: the predicted TTFT (seconds after arrival) of the last
        real-time request `add_request` checked, admitted or not (for measuring the forecast)."""
        return self._admission.last_forecast_s if self._admission is not None else None

    def _check_new(self, req: Request) -> None:
        cfg = self.config
        if req.request_id in self._roster.requests:
            raise InvalidRequestError(f"request_id {req.request_id!r} is already queued on this worker")
        if not req.prompt_token_ids:
            raise InvalidRequestError("prompt_token_ids is empty: send at least one token")
        vocab = cfg.vocab_size
        if vocab:
            for field, ids in (("prompt_token_ids", req.prompt_token_ids), ("output_token_ids", req.output_token_ids)):
                if ids and (max(ids) >= vocab or min(ids) < 0):  # C-speed scans; the loop names the first
                    bad = next(t for t in ids if not 0 <= t < vocab)
                    raise InvalidRequestError(f"{field} holds token id {bad}, outside the model's vocabulary "
                                              f"[0, {vocab}): send ids the model's tokenizer gives")
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
        if len(self._roster.waiting) >= cfg.max_num_waiting:
            raise CapacityError(f"{len(self._roster.waiting)} requests are already waiting on this worker: "
                                "retry later")

    def abort_request(self, request_id: str) -> bool:
        """Aborts an unfinished request; True if it was. Its CANCELLED output comes with the next
        `update()` (or `take_outputs()`); if it was admitted, the next plan lists it as finished."""
        t = self._roster.requests.get(request_id)
        if t is None or t.req.is_finished:
            return False
        self._roster.finish(t, FinishReason.CANCELLED, self.clock.now())
        self._roster.notes.note_output(final_output(t.req, ()))
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
        return self._planner.plan(self.clock.now())

    # ---- results -------------------------------------------------------------------------------
    def update(self, result: StepResult) -> list[RequestOutput]:
        """Applies one step's result (steps in order); returns the token events it produced,
        at most one per request, plus any pending CANCELLED events."""
        if self._prefix is not None and (result.cached_block_hashes or result.evicted_block_hashes
                                         or result.demoted_block_hashes):
            # The worker's cache report (core/prefix_mirror.py), the live one's and the simulated one's.
            self._prefix.observe(result.cached_block_hashes, result.evicted_block_hashes,  # type: ignore[attr-defined]
                                 result.demoted_block_hashes)
        return self._results.update(result)

    def fail_step(self, step_id: int, error: str, rejected_request_id: str = "") -> list[RequestOutput]:
        """The worker failed this step (e.g. the KV store refused its leases): its requests lose
        their KV and go back to waiting with every known token (recompute); none is lost. Tokens
        of their later steps already in flight are discarded. `rejected_request_id`: the request
        the worker found at fault in an invalid plan; one named in `MAX_PLAN_REJECTIONS` such
        failures ends with an error (results.py) instead of failing more steps."""
        return self._results.fail_step(step_id, error, rejected_request_id)

    def take_outputs(self) -> list[RequestOutput]:
        """Events produced outside update() (CANCELLED after an abort), for a caller with no
        step in flight."""
        return self._roster.notes.take_outputs()

    def evict_all(self) -> list[Request]:
        """Takes every unfinished request out (the worker died): each comes back reset to its
        known tokens, ready for `add_request` on another core. In-flight steps are forgotten."""
        return self._roster.evict_all(self.clock.now())

    # ---- queries -------------------------------------------------------------------------------
    @property
    def ledger(self) -> BlockLedger:
        """The local mirror of the worker's KV pool (read it; the core alone allocates)."""
        return self._roster.ledger

    @property
    def num_steps(self) -> int:
        return self._results.num_steps

    @property
    def num_preemptions(self) -> int:
        return self._roster.num_preemptions

    @property
    def num_failed_steps(self) -> int:
        return self._results.num_failed_steps

    @property
    def num_inflight_steps(self) -> int:
        return len(self._roster.inflight)

    def has_unfinished_requests(self) -> bool:
        return bool(self._roster.running) or len(self._roster.waiting) > 0

    def cached_tokens(self, req: Request) -> int:
        """Leading prompt tokens of `req` this worker's prefix cache holds (0 without one): routing."""
        return self._prefix.cached_tokens(req) if self._prefix is not None else 0

    def outstanding_tokens(self) -> int:
        """Routing load: prompt tokens plus output tokens still allowed, over unfinished requests."""
        return self._roster.outstanding

    def get_request(self, request_id: str) -> Request | None:
        t = self._roster.requests.get(request_id)
        return t.req if t is not None else None

    def ticket(self, request_id: str) -> Ticket | None:
        """The core's private bookkeeping of a request (tests, debugging): read it, never write it."""
        return self._roster.requests.get(request_id)

    def stats(self) -> SchedulerStats:
        roster = self._roster
        return SchedulerStats(
            policy=self.policy.name, num_waiting=len(roster.waiting), num_running=len(roster.running),
            num_steps=self.num_steps, num_preemptions=roster.num_preemptions,
            num_failed_steps=self.num_failed_steps, num_inflight_steps=len(roster.inflight),
            num_free_blocks=roster.ledger.num_free, kv_blocks_by_class=roster.ledger.used_by_class())

    def waiting_requests(self) -> list[Request]:
        return [t.req for t in self._roster.waiting]

    def running_requests(self) -> list[Request]:
        return [t.req for t in self._roster.running.values()]

    def pending_checkpoint_drops(self) -> tuple[str, ...]:
        """Ids whose host-tier checkpoint drop the next plan will carry (not sent yet)."""
        return self._roster.notes.pending_drops
