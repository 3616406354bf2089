"""The one interface every scheduling policy implements.

The scheduler walks requests in the order of their keys (smaller first) and gives each the tokens
it lacks within the step's budgets; a policy changes *which* work runs only through these hooks,
so adding a policy never adds a branch to `Scheduler.schedule()`:

- `key(req, now)`: the ordering (required). Keys of one policy must be mutually comparable tuples.
- `running_key_ttl` / `waiting_key_ttl`: how often keys are recomputed (0: computed when the
  request enters a queue and kept; k: every k steps). Waiting keys of a ttl-0 policy must not
  depend on `now`, because they stay in a heap.
- `waiting_keys_only_worsen`: promise that a waiting request's key never improves with time
  (Tempo's density only decays while a request waits); the queue then re-keys lazily at its top.
  A policy whose keys may also improve (aging, in bros and tempo) sets `waiting_key_ttl` too:
  those improvements are picked up only by that periodic full re-key.
- `limit_tokens(...)`: trim (or zero) the tokens the next request would get this step (BROS's
  iteration-time guard).
- `on_scheduled(...)`: note what was added (tightest deadline in the step, ...).
- `admission_may_preempt(beneficiary, victim)`: whether a *waiting* request may take KV blocks
  from a running one to be admitted.
- `growth_may_preempt(beneficiary, victim)`: whether a *running* request short of KV may take
  them from a lower-ranked running one (default: always, as vLLM, so the best-ranked request
  always progresses). A policy may refuse pairs (tempo: best-effort work takes only from
  best-effort work that arrived after it); a beneficiary refused a victim that cannot get its
  blocks otherwise yields its own (it is preempted), so the request it spared can grow and the
  two never wait for each other's blocks.
- `growth_may_wait(beneficiary)`: whether that running request waits a step for free blocks
  instead of preempting anyone (default: never; bros and tempo: an on-time RT stream with slack
  to spare, `slo_step.growth_may_wait`).
- `preemption_mode(victim)`: RECOMPUTE (the default) or CHECKPOINT (the victim's KV is saved to
  the store's host tier and restored on re-admission, when the core has a checkpoint book; issue 4).
- `kv_reserve(req)`: blocks a waiting request must leave free when admitted (headroom for RT).
- `may_take_seats(req)` / `seat_may_preempt(req, victim)`: whether a waiting request may take a
  running one's seat at `max_num_seqs`, and whose (the step builder picks the fewest blocks).
- `bind(config)`: called once by the core with its worker's geometry (block size, pool size),
  for policies that reason about KV in blocks.
- `on_added` / `on_finished` / `observe_step`: learning hooks (length quantiles, step times).
- `forecast_first_token_s(work)`: seconds from now until a new request's first token, with
  `work` ahead of it, by the policy's cost model; None (the default) for policies without one.
  The opt-in RT admission control (core/admission.py) rejects on it.

What a policy sees of a request: the public `Request` (its SLO, tokens, token counts, status;
read-only for policies, except `policy_state`, the policy's own slot). The core's private
bookkeeping lives on its ticket (core/ticket.py); the two hooks that run for each request put in
a step, `limit_tokens` and `on_scheduled`, also get a `TicketView` of it, read-only, with exactly
two fields: `promoted_at` (aging) and `preempt_when_drained` (chosen as a victim while in flight,
so it will not be scheduled again before it is preempted). A policy may keep a view across steps
(pacing does, for one step) but never writes through it. The view is an explicit argument rather
than a lookup so that the per-request hot path stays free of dict lookups.

Anti-starvation (aging), common to every policy that sets `aging_s`: a request that has not been
scheduled for `aging_s` seconds (waiting or running) is *promoted*: from then on, until it
finishes (or moves to another core), it ranks ahead of every non-promoted request (promoted ones
in promotion order), it may take KV blocks and, at `max_num_seqs`, the seat of non-promoted
requests to be admitted, and it is never a victim of a non-promoted request; `limit_tokens` hooks
must not zero it (`ticket.promoted_at` tells them). Bound: a request that fits the pool alone is
scheduled again at most `aging_s` + 3 steps after it was last scheduled (or queued): promotion
happens at the first step planned `aging_s` after, and a victim with steps in flight frees its
blocks or seat once those (at most two) steps are back, unless requests promoted earlier still
fill the token budget, the seats or the pool.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.request import Request
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.work_ahead import WorkAhead


class PreemptionMode(enum.Enum):
    """What happens to a victim's KV."""

    RECOMPUTE = "recompute"  # dropped; the request comes back with every known token
    CHECKPOINT = "checkpoint"  # issue 4: saved to the store's host tier, restored on re-admission


class TicketView(Protocol):
    """The core's bookkeeping of one request, as policies may read it (see the module doc)."""

    @property
    def promoted_at(self) -> float | None:
        """When the request was promoted for starving past `aging_s`; None if it is not."""

    @property
    def preempt_when_drained(self) -> bool:
        """Chosen as a victim (or its step failed) while in flight: preempted once drained."""


class Policy(ABC):
    name: ClassVar[str] = ""
    running_key_ttl: ClassVar[int] = 0
    waiting_key_ttl: ClassVar[int] = 0
    waiting_keys_only_worsen: ClassVar[bool] = False

    def __init__(self, *, aging_s: float | None = None) -> None:
        if aging_s is not None and not aging_s > 0:
            raise ValueError(f"aging_s must be > 0 seconds or None (got {aging_s})")
        self.aging_s = aging_s

    @abstractmethod
    def key(self, req: Request, now: float) -> tuple:
        """Ordering key: smaller runs first."""

    def limit_tokens(self, req: Request, num_tokens: int, is_decode: bool, draft: StepDraft,
                     ticket: TicketView) -> int:
        """Tokens `req` may get this step, at most `num_tokens` (0 skips it this step)."""
        return num_tokens

    def on_scheduled(self, req: Request, num_tokens: int, is_decode: bool, sample: bool, draft: StepDraft,
                     ticket: TicketView) -> None:
        """Called after `req` was put in the step (`draft` already counts it)."""

    def begin_step(self, draft: StepDraft) -> None:
        """Called once per step before any request is considered."""

    def admission_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        return False

    def growth_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        return True

    def growth_may_wait(self, beneficiary: Request) -> bool:
        """Whether a running request short of KV for its chunk waits for free blocks this step
        instead of preempting anyone (it gets what the free blocks hold, or nothing)."""
        return False

    def preemption_mode(self, victim: Request) -> PreemptionMode:
        return PreemptionMode.RECOMPUTE

    def kv_reserve(self, req: Request) -> int:
        return 0

    def may_take_seats(self, beneficiary: Request) -> bool:
        """Whether a waiting request may take a running one's seat at `max_num_seqs` (then
        `seat_may_preempt` names the candidates); False, the default, keeps the walk cheap."""
        return False

    def seat_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        return False

    def bind(self, config: SchedulerConfig) -> None:
        """The core this policy plans for was built with `config` (called once, at construction)."""

    def on_added(self, req: Request, now: float) -> None:
        """A request entered this core (new, or moved from another worker's core)."""

    def on_finished(self, req: Request, now: float) -> None:
        """A request left this core: finished (its status says how) or evicted (still unfinished)."""

    def observe_step(self, timing: StepTiming | None, now: float) -> None:
        """A step's result arrived."""

    def forecast_first_token_s(self, work: WorkAhead) -> float | None:
        """Seconds from now until the first token of a request that has `work` ahead of it (its
        own prefill included); None: this policy has no cost model to say."""
        return None
