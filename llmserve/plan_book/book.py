"""The plan book: a worker's per-request state and the one way to apply its plans (see the
package docstring for the order of the calls)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from llmserve.plan import BatchPlan, Grant, KvDelta, LeaseSpec, RestoreSpec, SampledToken
from llmserve.plan_book.checks import PlanError, PlanLimits, check_grants, check_new_requests, reject_chunk
from llmserve.plan_book.hits import admit_new, prefix_hits
from llmserve.plan_book.prefix_cache import WorkerPrefixCache
from llmserve.plan_book.state import Chunk, RequestState, StepWork
from llmserve.types import cdiv, is_decode


@dataclass(slots=True)
class _OpenStep:
    plan: BatchPlan
    leases: tuple[LeaseSpec, ...]
    released: tuple[str, ...]
    work: StepWork  # final once the restores are settled (`PlanBook.work`)
    restores: dict[str, int]  # resumed request -> tokens its checkpoint covers, in plan order
    restored: set[str] = field(default_factory=set)
    granted: bool = False
    settled: bool = False


class PlanBook:
    """The per-request state of one worker and the rules for applying its plans, in order, one
    step at a time."""

    def __init__(self, block_size: int, limits: PlanLimits, prefix: WorkerPrefixCache | None = None) -> None:
        """`prefix`: the worker's prefix cache (prefix_cache.py), which the book starts hits from
        and names computed prompt blocks in; None (the simulated worker, whose cache is its own):
        a claimed hit is taken at the plan's word (hits.py), nothing is cached here."""
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.limits = limits
        self.prefix = prefix
        self._states: dict[str, RequestState] = {}
        self._open: _OpenStep | None = None
        self._dropped_plan: BatchPlan | None = None  # drop() done, admit() due
        self._unreleased: list[str] = []  # ids whose leases wait for the next Apply

    # ---- queries ---------------------------------------------------------------------------------
    @property
    def states(self) -> Mapping[str, RequestState]:
        """Every request's state (read-only view)."""
        return MappingProxyType(self._states)

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(self._states)

    def state(self, request_id: str) -> RequestState:
        return self._states[request_id]

    def __len__(self) -> int:
        return len(self._states)

    @property
    def unreleased(self) -> tuple[str, ...]:
        """Requests gone whose leases the next Apply releases."""
        return tuple(self._unreleased)

    @property
    def open_plan(self) -> BatchPlan | None:
        return self._open.plan if self._open is not None else None

    # ---- phase 1: drop, validate, admit ------------------------------------------------------------
    def drop(self, plan: BatchPlan) -> list[RequestState]:
        """Drops the plan's finished and preempted requests (an unknown id is fine: its lease may
        still exist) and queues their leases for the next Apply; returns the states of the
        preempted ones, in plan order, for the caller to checkpoint. These drops stand even if
        `admit` then rejects the plan: the planner has already forgotten those requests."""
        if self._open is not None:
            raise PlanError(f"step {self._open.plan.step_id} is still open; finish or abort it first")
        states = self._states
        for request_id in plan.finished_request_ids:
            states.pop(request_id, None)
        dropped = []
        for request_id in plan.preempted_request_ids:
            state = states.pop(request_id, None)
            if state is not None:
                dropped.append(state)
        if plan.finished_request_ids or plan.preempted_request_ids:
            self._unreleased = list(dict.fromkeys(
                [*self._unreleased, *plan.finished_request_ids, *plan.preempted_request_ids]))
        self._dropped_plan = plan
        return dropped

    def admit(self, plan: BatchPlan) -> KvDelta:
        """Validates the plan against the worker's state (PlanError, nothing admitted), admits
        its new requests and opens the step; returns what to release and lease."""
        if self._dropped_plan is not plan:
            raise PlanError(f"step {plan.step_id}: drop(plan) must come before admit(plan)")
        self._dropped_plan = None
        new_by_id = check_new_requests(plan, self._states, self.limits)
        # Hot path (every scheduled request, every step): one pass that checks each chunk and
        # counts its blocks and tokens; nothing changes until the whole plan has passed.
        states = self._states
        get_state = states.get
        block_size = self.block_size
        max_len = self.limits.max_model_len
        lease_rows: list[tuple[str, int]] = []  # (request, blocks to lease)
        # Resumed requests: their checkpoint covers num_computed_tokens, past any cached prefix.
        restores = {new.request_id: new.num_computed_tokens for new in plan.new_requests
                    if new.num_computed_tokens > new.num_cached_tokens} if plan.new_requests else {}
        if self.prefix is not None:
            self.prefix.begin_step()
        hits = prefix_hits(self.prefix, plan.new_requests) if plan.new_requests else {}
        total = decode = resumed_tokens = kv_read = 0
        for rid, num_tokens, computed, sample in plan.scheduled:
            total += num_tokens
            state = get_state(rid)  # a new request is not in `states` (check_new_requests)
            if state is not None:
                num_known, worker_computed, held = len(state.token_ids), state.num_computed, len(state.block_table)
                num_prompt = state.num_prompt_tokens
            else:
                new = new_by_id.get(rid)
                if new is None:
                    raise PlanError(f"scheduled request {rid} is unknown to this worker (send it as a new request)",
                                    rid)
                num_known, worker_computed = len(new.token_ids), new.num_computed_tokens
                held = hits[rid][1] if rid in hits else 0  # cached device blocks it starts with
                num_prompt = new.num_prompt_tokens
            end = computed + num_tokens
            if computed != worker_computed or num_tokens < 1 or end > max_len or (
                    end != num_known if sample else end > num_known):
                reject_chunk(rid, num_tokens, computed, sample, worker_computed, num_known, max_len)
            if end > held * block_size:  # past what its blocks hold: lease the rest
                lease_rows.append((rid, cdiv(end, block_size) - held))
            if state is None and rid in restores:
                resumed_tokens += num_tokens  # counted once its restore is settled (work())
                continue
            if is_decode(computed, num_tokens, num_prompt):
                decode += 1
            kv_read += end
        if total > self.limits.max_num_batched_tokens:
            limit = self.limits.max_num_batched_tokens
            raise PlanError(f"{total} scheduled tokens exceed max_num_batched_tokens {limit}")
        recomputed = admit_new(states, plan.new_requests, hits, self.prefix, block_size, restores) \
            if plan.new_requests else 0
        leases = []
        for rid, extra in lease_rows:
            state = states[rid]
            leases.append(LeaseSpec(rid, state.service_class, extra, state.trace_context))
        released, self._unreleased = tuple(self._unreleased), []
        work = StepWork(total - decode - resumed_tokens + recomputed, decode, kv_read, recomputed)
        step = _OpenStep(plan, tuple(leases), released, work, restores, settled=not restores)
        self._open = step
        return KvDelta(released, step.leases, self.pending_restores() if restores else ())

    # ---- phase 2: grants, restores, the step's work, commit ----------------------------------------
    def grant(self, grants: Sequence[Grant]) -> None:
        """Extends block tables with the store's grants (one per lease, in order)."""
        step = self._require_open()
        leases = step.leases
        if step.granted:
            raise PlanError(f"step {step.plan.step_id}: grants were applied already")
        check_grants(leases, grants, self.limits.num_blocks)
        states = self._states
        for grant in grants:
            states[grant.request_id].block_table.extend(grant.block_ids)
        step.granted = True
        if self.prefix is not None:  # before anything is written: demotions out, promotions in
            self.prefix.after_grant(states)

    def restore(self, request_id: str, ok: bool) -> None:
        """Records whether a resumed request's checkpoint was copied into its first blocks (after
        those of its prefix hit). Not called, or `ok` false: the step recomputes those tokens (its
        chunk starts after its prefix hit, or at 0)."""
        step = self._require_open()
        num_tokens = step.restores.get(request_id)
        if num_tokens is None:
            raise PlanError(f"request {request_id} is not resumed from a checkpoint in step {step.plan.step_id}",
                            request_id)
        if step.settled:
            raise PlanError(f"step {step.plan.step_id}: its restores were settled already", request_id)
        if ok:
            self._states[request_id].num_computed = num_tokens
            step.restored.add(request_id)

    def pending_restores(self) -> tuple[RestoreSpec, ...]:
        """The open step's resumed requests not yet restored: the tokens their checkpoint covers,
        and the blocks their prefix hit put in place (the restore copies the rest)."""
        step = self._require_open()
        states, block_size = self._states, self.block_size
        # Until restored, a resumed request's count is what its hit put in place (admit_new: whole blocks).
        return tuple(RestoreSpec(rid, k, states[rid].num_computed // block_size)
                     for rid, k in step.restores.items() if rid not in step.restored)

    def work(self) -> StepWork:
        """The step's token accounting, final once its grants and restores are in."""
        step = self._require_open()
        work = step.work
        if step.settled:
            return work
        if step.leases and not step.granted:
            raise PlanError(f"step {step.plan.step_id}: its leases were never granted")
        # A resumed request's chunk starts where its restore left it: at the checkpoint, or after
        # its prefix hit (0 without one).
        states = self._states
        failed = []
        for rid, num_tokens, computed, _ in step.plan.scheduled:
            if rid in step.restores:
                state = states[rid]
                start, end = state.num_computed, computed + num_tokens
                if is_decode(start, end - start, state.num_prompt_tokens):
                    work.num_decode_seqs += 1
                else:
                    work.num_prefill_tokens += end - start
                work.num_kv_tokens_read += end
        for rid, num_tokens in step.restores.items():
            if rid not in step.restored:
                failed.append(rid)
                work.num_recomputed_tokens += num_tokens - states[rid].num_computed
        work.restore_failed_request_ids = tuple(failed)
        step.settled = True
        return work

    def chunks(self) -> list[Chunk]:
        """The open step's chunks in plan order (for a caller that computes them: the runner)."""
        step = self._require_open()
        self.work()
        states = self._states
        chunks = []
        for rid, num_tokens, computed, sample in step.plan.scheduled:
            state = states[rid]
            chunks.append(Chunk(state, state.num_computed, computed + num_tokens, sample))
        return chunks

    def commit(self, tokens: Sequence[int] | Callable[[RequestState], int]) -> tuple[SampledToken, ...]:
        """Closes the step: every chunk is computed, and each request that samples gets its
        token appended: `tokens` in plan order of those requests, or a function of the request's
        state (its `next_draw` is the token's output index). Returns (request_id, token) pairs in
        plan order."""
        step = self._require_open()
        if not step.settled:
            self.work()
        if callable(tokens):
            next_token = tokens
        else:
            num_sampling = sum(1 for item in step.plan.scheduled if item.sample)
            if len(tokens) != num_sampling:
                raise PlanError(f"{len(tokens)} sampled tokens for {num_sampling} sampling requests")
            it = iter(tokens)
            next_token = lambda state: next(it)  # noqa: E731 - one per sampling request, in order
        states = self._states
        sampled = []
        for rid, num_tokens, computed, sample in step.plan.scheduled:
            state = states[rid]
            state.num_computed = computed + num_tokens
            if sample:
                token = next_token(state)
                state.token_ids.append(token)
                state.next_draw += 1
                sampled.append((rid, token))
        if self.prefix is not None:
            name = self.prefix.name_computed
            for item in step.plan.scheduled:
                name(states[item.request_id])
        self._open = None
        return tuple(sampled)

    def _require_open(self) -> _OpenStep:
        if self._open is None:
            raise PlanError("no step is open: begin one with drop(plan) and admit(plan)")
        return self._open

    # ---- failure and shutdown ----------------------------------------------------------------------
    def abort(self, kv_applied: bool) -> tuple[str, ...]:
        """The open step failed. Drops every request it scheduled or admitted (the planner
        recomputes them) and queues their leases for the next release; when the Apply did not
        happen (`kv_applied` false), the step's own releases are queued again too. Returns the
        dropped ids (none when no step is open)."""
        step, self._open = self._open, None
        if step is None:
            return ()
        plan = step.plan
        dropped = list(dict.fromkeys([item.request_id for item in plan.scheduled]
                                     + [new.request_id for new in plan.new_requests]))
        for request_id in dropped:
            self._states.pop(request_id, None)
        carry = () if kv_applied else step.released
        self._unreleased = list(dict.fromkeys([*self._unreleased, *carry, *dropped]))
        return tuple(dropped)

    def reset(self) -> tuple[str, ...]:
        """Drops every request (the stream closed); returns every id whose lease to release."""
        ids: Iterable[str] = [*self._unreleased, *self._states]
        if self._open is not None:
            ids = [*ids, *self._open.released]
        self._states.clear()
        self._open = None
        self._dropped_plan = None
        self._unreleased = []
        return tuple(dict.fromkeys(ids))
