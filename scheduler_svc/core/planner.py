"""Makes each plan: brings the orderings up to date (aging promotions, re-keys), lets a fresh
`StepBuilder` fill the step, and turns the result plus the plan notes into a `BatchPlan`.

Orderings: every request carries an effective key `(band, *policy key, seq)` on its ticket; band
0 holds promoted requests (in promotion order), band 1 everyone else. Running keys are recomputed
every `running_key_ttl` steps, waiting keys every `waiting_key_ttl` steps (the whole queue) or,
for policies whose waiting keys only worsen, lazily at the top of the queue (capped per step).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.prefix_view import PrefixCacheView
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import BatchPlan
from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.roster import Roster
from scheduler_svc.core.step_builder import StepBuilder
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.ticket import Ticket

_SORT_KEY = attrgetter("sched_key")
# At most this many lazy re-keys per step: when every waiting key decays at once, a full lazy
# pass would touch them all; beyond the cap the stored (optimistic) key stands until the
# policy's periodic full re-key.
_MAX_LAZY_REKEYS = 32


class StepPlanner:
    __slots__ = ("_roster", "_policy", "_config", "_checkpoints", "_prefix", "_last_rekey_step", "_limit_tokens",
                 "_on_scheduled")

    def __init__(self, roster: Roster, policy: Policy, config: SchedulerConfig,
                 checkpoints: CheckpointBook | None, prefix: PrefixCacheView | None = None) -> None:
        self._roster = roster
        self._prefix = prefix
        self._policy = policy
        self._config = config
        self._checkpoints = checkpoints
        self._last_rekey_step = 0
        # Hooks the policy does not override are skipped on the per-request hot path.
        overridden = lambda name: getattr(type(policy), name) is not getattr(Policy, name)  # noqa: E731
        self._limit_tokens = policy.limit_tokens if overridden("limit_tokens") else None
        self._on_scheduled = policy.on_scheduled if overridden("on_scheduled") else None

    def plan(self, now: float) -> BatchPlan:
        """The next plan (see `Scheduler.schedule`); an empty one takes no step id."""
        roster, policy, config = self._roster, self._policy, self._config
        step_id = roster.next_step_id
        finished_ids = roster.release_finished()
        if policy.aging_s is not None:
            roster.waiting.promote_starved(now, policy.aging_s, roster.promoted_key)
        if policy.waiting_key_ttl and step_id - self._last_rekey_step >= policy.waiting_key_ttl:
            roster.waiting.rekey(roster.make_key, now)
            self._last_rekey_step = step_id
        running = self._order_running(now, step_id)

        draft = StepDraft(now, step_id, len(roster.inflight), config.max_num_batched_tokens)
        policy.begin_step(draft)
        step = StepBuilder(draft, running, roster, policy, self._checkpoints, config.block_size,
                           self._limit_tokens, self._on_scheduled, self._prefix)
        refresh = self._lazy_refresh(now, step_id) if policy.waiting_keys_only_worsen else None
        step.fill(refresh, config.max_num_seqs)

        for victim in step.victims:  # queued only now, so that no victim is re-admitted in its own step
            roster.enqueue(victim, now)
        notes = roster.notes
        if not (step.scheduled or finished_ids or notes.has_ids_for_plan()):
            return BatchPlan(step_id)
        roster.next_step_id += 1
        roster.inflight[step_id] = step.entries
        preempted_ids, checkpoint_ids, drop_ids = notes.take_ids_for_plan()
        return BatchPlan(step_id, tuple(step.new_requests), tuple(step.scheduled), tuple(finished_ids),
                         preempted_ids, checkpoint_ids, drop_ids)

    def _order_running(self, now: float, step_id: int) -> list[Ticket]:
        """Running requests by effective key; promotes the starved, refreshes stale keys."""
        aging = self._policy.aging_s
        ttl = self._policy.running_key_ttl
        make_key = self._roster.make_key
        running = self._roster.running
        for t in running.values():
            if t.promoted_at is not None:
                continue
            if aging is not None and now - t.last_progress_s >= aging:
                t.promoted_at = now
                t.sched_key = (0, now, t.seq)
            elif ttl and step_id - t.key_step >= ttl:
                t.sched_key = make_key(t, now)
                t.key_step = step_id
        return sorted(running.values(), key=_SORT_KEY)

    def _lazy_refresh(self, now: float, step_id: int) -> Callable[[Ticket], tuple | None]:
        """The waiting queue's re-keying at its top, at most once per ticket and step and at most
        `_MAX_LAZY_REKEYS` per step (see `WaitingQueue.peek`)."""
        make_key = self._roster.make_key
        rekeys = [0]

        def refresh(t: Ticket) -> tuple | None:
            if t.key_step == step_id or rekeys[0] >= _MAX_LAZY_REKEYS:
                return None
            rekeys[0] += 1
            t.key_step = step_id
            t.sched_key = make_key(t, now)
            return t.sched_key

        return refresh
