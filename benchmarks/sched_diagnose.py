"""Why a policy loses on one cell of the generalization suite: counters and a per-step trace.

    .venv/bin/python benchmarks/sched_diagnose.py balanced-tight-long-poisson-s1 2 bros [--trace steps.jsonl]

Runs the cell as the suite does (benchmarks/sched_suite) and reports, from the plans, the results
and thin wrappers around the core's step-building methods (observation only, no decision is
changed):
- step times: simulated vs what the policy's step guard predicted for the plan it built (bros,
  tempo), and steps that ended after the tightest RT deadline the guard had noted;
- preemptions by victim and beneficiary class, whether the beneficiary was a promoted (aged)
  request, victims preempted again soon after they were re-admitted, KV recomputed by class;
- admission: why a step stopped admitting (a preemption happened, `limit_tokens` gave 0, no KV,
  `max_num_seqs` seats full) while requests waited;
- aging: steps where a promoted non-RT request got tokens while an RT request whose next token
  was still attainable got none;
- RT misses: late first token (TTFT) vs a late later token (TPOT), and how late.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sched_suite.workloads import suite_specs  # noqa: E402
from llmserve.types import is_decode  # noqa: E402
from scheduler_svc.core.step_builder import StepBuilder  # noqa: E402
from scheduler_svc.core.request import RequestStatus, ServiceClass  # noqa: E402
from scheduler_svc.sim import transform  # noqa: E402
from scheduler_svc.sim.cost_model import load_cost_model  # noqa: E402
from scheduler_svc.sim.metrics import summarize  # noqa: E402
from scheduler_svc.sim.service_gain import service_gain  # noqa: E402
from scheduler_svc.sim.simulator import SimConfig, Simulation  # noqa: E402
from scheduler_svc.sim.workload import REAL_TIME  # noqa: E402

RT = ServiceClass.REAL_TIME
_NAME = {ServiceClass.REAL_TIME: "rt", ServiceClass.DEADLINE: "dl", ServiceClass.BEST_EFFORT: "be"}
RECENT_STEPS = 20  # a victim re-admitted fewer steps ago than this counts as "just restored"


class Probe:
    """Wraps one Simulation's core; collects the counters of the module docstring."""

    def __init__(self, sim: Simulation, trace_path: str = "") -> None:
        self.sim, self.core, self.policy = sim, sim.core, sim.core.policy
        self.c: collections.Counter[str] = collections.Counter()
        self.plans: dict[int, dict] = {}
        self.admitted_step: dict[str, int] = {}
        self.preempted_count: collections.Counter[str] = collections.Counter()
        self.trace = open(trace_path, "w", encoding="utf-8") if trace_path else None  # noqa: SIM115
        self.rel_errors: list[float] = []
        self._wrap()

    # ---- wrappers (observe, then call the original) ------------------------------------------
    def _wrap(self) -> None:
        """Wraps the core's step-building methods (`StepBuilder`, one per plan: patched on the
        class for this run, restored by `close`), the core's schedule and the policy's begin_step."""
        self._originals = (StepBuilder._try_admit, StepBuilder._make_room, StepBuilder._free_seat)
        self._state: dict = {"draft": None, "closed": None}  # this step's draft, why admission closed
        self._wrap_admission()
        self._wrap_preemption()
        self._wrap_schedule()

    def _wrap_admission(self) -> None:
        """Notes why a step first stopped admitting."""
        try_admit, state = StepBuilder._try_admit, self._state

        def admit(step, ticket, start):  # noqa: ANN001
            before = (step.preempted_any, len(step.victims))
            ok = try_admit(step, ticket, start)
            if not ok and state["closed"] is None:
                if before[0] and ticket.promoted_at is None:
                    why = "after_preemption"
                elif len(step.victims) > before[1] or step.preempted_any != before[0]:
                    why = "kv_after_preempting"
                else:
                    why = "limit_or_kv"
                state["closed"] = f"{why}:{_NAME[ticket.req.service_class]}"
            return ok

        StepBuilder._try_admit = admit  # type: ignore[method-assign]

    def _wrap_preemption(self) -> None:
        """Counts every victim of `_make_room` and `_free_seat` with its beneficiary."""
        make_room, free_seat, probe = StepBuilder._make_room, StepBuilder._free_seat, self

        def new_victims(step, call):  # noqa: ANN001
            n = len(step.victims)
            drained = {t.req.request_id for t in step.running if t.preempt_when_drained}
            ok = call()
            victims = [t for t in step.victims[n:]]
            victims += [t for t in step.running if t.preempt_when_drained and t.req.request_id not in drained]
            return ok, victims

        def room(step, beneficiary, need, reserve, start, admission):  # noqa: ANN001
            ok, victims = new_victims(step, lambda: make_room(step, beneficiary, need, reserve, start, admission))
            for v in victims:
                probe._preempted(v, beneficiary, "admission" if admission else "running", step.draft.step_id)
            return ok

        def seat(step, beneficiary, start):  # noqa: ANN001
            ok, victims = new_victims(step, lambda: free_seat(step, beneficiary, start))
            for v in victims:
                probe._preempted(v, beneficiary, "seat", step.draft.step_id)
            return ok

        StepBuilder._make_room = room  # type: ignore[method-assign]
        StepBuilder._free_seat = seat  # type: ignore[method-assign]

    def _wrap_schedule(self) -> None:
        """Keeps each step's draft (policy.begin_step) and records each plan's composition."""
        core, policy, probe, state = self.core, self.policy, self, self._state
        schedule, begin_step = core.schedule, policy.begin_step

        def begin(draft):  # noqa: ANN001
            state["draft"] = draft
            begin_step(draft)

        def plan_step():
            state["closed"] = None
            waiting_before = len(core.waiting_requests())
            waiting_rt = sum(1 for r in core.waiting_requests() if r.service_class is RT)
            plan = schedule()
            draft = state["draft"]
            if plan.is_empty() or draft is None:
                return plan
            info = {"t": draft.now, "waiting": waiting_before, "waiting_rt": waiting_rt, "running": len(core.running_requests()),
                    "budget_left": draft.token_budget, "closed": state["closed"],
                    "tightest": draft.tightest_deadline_s}
            guard = getattr(policy, "guard", None)  # bros and tempo (policy/step_guard.py)
            if guard is not None:
                info["pred_s"] = guard.predict(draft)
                info["start_s"] = guard.start_s
            probe._composition(plan, info)
            probe.plans[plan.step_id] = info
            return plan

        policy.begin_step = begin  # type: ignore[method-assign]
        core.schedule = plan_step  # type: ignore[method-assign]

    def close(self) -> None:
        """Puts the core's methods back."""
        StepBuilder._try_admit, StepBuilder._make_room, StepBuilder._free_seat = self._originals  # type: ignore[method-assign]

    def _preempted(self, victim, beneficiary, path: str, step_id: int) -> None:  # noqa: ANN001
        """`victim`, `beneficiary`: the core's tickets of the two requests."""
        c = self.c
        vid = victim.req.request_id
        vc, bc = _NAME[victim.req.service_class], _NAME[beneficiary.req.service_class]
        c[f"preempt:{path}:{bc}->{vc}"] += 1
        if beneficiary.promoted_at is not None:
            c[f"preempt_by_promoted:{bc}->{vc}"] += 1
        self.preempted_count[vid] += 1
        if self.preempted_count[vid] == 2:
            c[f"victims_preempted_twice_or_more:{vc}"] += 1
        admitted = self.admitted_step.get(vid)
        if admitted is not None and step_id - admitted < RECENT_STEPS and self.preempted_count[vid] > 1:
            c[f"victim_just_readmitted:{vc}"] += 1

    def _composition(self, plan, info: dict) -> None:  # noqa: ANN001
        core, c = self.core, self.c
        got: dict[str, int] = {s.request_id: s.num_tokens for s in plan.scheduled}
        comp = collections.Counter()
        promoted_non_rt = False
        for s in plan.scheduled:
            req = core.get_request(s.request_id)
            if req is None:
                continue
            kind = "dec" if is_decode(s.num_computed_tokens, s.num_tokens, req.num_prompt_tokens) else "pre"
            comp[f"{_NAME[req.service_class]}_{kind}"] += s.num_tokens
            ticket = core.ticket(s.request_id)
            if ticket is not None and ticket.promoted_at is not None and req.service_class is not RT:
                promoted_non_rt = True
                comp["promoted_non_rt_tokens"] += s.num_tokens
        for new in plan.new_requests:
            self.admitted_step.setdefault(new.request_id, -1)
            self.admitted_step[new.request_id] = plan.step_id
        info.update(comp)
        for k, v in comp.items():
            c[f"tokens:{k}"] += v
        now = info["t"]
        if info["closed"]:
            c[f"admission_closed:{info['closed']}"] += 1
        if len(core.running_requests()) >= core.config.max_num_seqs and core.waiting_requests():
            c["steps_at_seat_cap_with_waiting"] += 1
        if promoted_non_rt:
            c["steps_with_promoted_non_rt_work"] += 1
            starved_rt = 0
            for req in [*core.running_requests(), *core.waiting_requests()]:
                if req.service_class is RT and req.request_id not in got and not req.is_finished:
                    if req.next_token_deadline_s() > now:
                        starved_rt += 1
            if starved_rt:
                c["steps_promoted_non_rt_while_on_time_rt_waited"] += 1
                c["on_time_rt_requests_left_out_by_promotion"] += starved_rt

    # ---- results ------------------------------------------------------------------------------
    def on_step(self, plan, result, step_s: float, now: float) -> None:  # noqa: ANN001
        info = self.plans.pop(plan.step_id, None)
        if info is None:
            return
        c = self.c
        c["steps"] += 1
        c["step_s_total"] += step_s
        end = now + step_s
        info["step_s"], info["end"] = step_s, end
        if "pred_s" in info and step_s > 0:
            self.rel_errors.append((step_s - info["pred_s"]) / step_s)
            pred_end = info["start_s"] + info["pred_s"]
            if end > info["tightest"] + 1e-9:
                c["steps_past_tightest_rt_deadline"] += 1
                c["... of which predicted on time" if pred_end <= info["tightest"] + 1e-9 else
                  "... of which predicted late (min chunk / decodes always taken)"] += 1
            if now > info["start_s"] + 1e-3:
                c["steps_started_>1ms_later_than_the_guard_assumed"] += 1
        if self.trace is not None:
            self.trace.write(json.dumps({"step": plan.step_id, **info}) + "\n")

    def report(self, result) -> dict:  # noqa: ANN001
        c = self.c
        out = {k: c[k] for k in sorted(c)}
        if self.rel_errors:
            errs = sorted(self.rel_errors)
            out["cost_model_rel_error_p50"] = errs[len(errs) // 2]
            out["cost_model_underestimates_>10%"] = sum(1 for e in errs if e > 0.10) / len(errs)
        ttft_miss = tpot_miss = 0
        late_by: list[float] = []
        for rec in result.records:
            r = rec.request
            if r.cls != REAL_TIME or rec.rt_attained():
                continue
            if not rec.token_times or rec.token_times[0] - rec.arrival_s > r.ttft_ms / 1000.0 + 1e-9:
                ttft_miss += 1
            else:
                tpot_miss += 1
                worst = max(t - rec.arrival_s - (r.ttft_ms + i * r.tpot_ms) / 1000.0 for i, t in enumerate(rec.token_times))
                late_by.append(worst)
        out["rt_missed_ttft"], out["rt_missed_later_token"] = ttft_miss, tpot_miss
        if late_by:
            late_by.sort()
            out["rt_later_token_late_by_p50_s"] = late_by[len(late_by) // 2]
        if self.trace is not None:
            self.trace.close()
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", help="a suite workload name, e.g. balanced-tight-long-poisson-s1")
    p.add_argument("load", type=float)
    p.add_argument("policy")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--cost-model", default="h100_llama3_8b")
    p.add_argument("--trace", default="", help="write one JSON line per step here")
    p.add_argument("--option", action="append", default=[], help="policy option KEY=VALUE (Python literal)")
    args = p.parse_args(argv)
    seed = int(args.workload.rsplit("-s", 1)[1])
    spec = next((s for s in suite_specs((seed,)) if s.name == args.workload), None)
    if spec is None:
        raise SystemExit(f"no suite workload named {args.workload!r}")
    import ast

    options = {k: ast.literal_eval(v) for k, _, v in (o.partition("=") for o in args.option)}
    requests = transform.scale_rate(spec.build(args.duration), args.load)
    cost = load_cost_model(args.cost_model)
    sim = Simulation(requests, args.policy, cost, SimConfig.from_cost_model(cost, policy_options=options))
    probe = Probe(sim, args.trace)
    sim._on_step = probe.on_step
    try:
        result = sim.run()
    finally:
        probe.close()
    metrics = summarize(result.records, result.stats, service_gain)
    keys = ("rt_slo_attainment", "deadline_slo_attainment", "workflow_slo_attainment", "be_throughput_tok_s",
            "be_throughput_run_tok_s", "rt_ttft_p99_ms", "rt_tpot_p99_ms", "preemptions", "rt_preemptions",
            "be_preemptions", "be_preemptions_per_completed", "be_recomputed_tokens", "rt_recomputed_tokens",
            "host_tier_checkpoints", "host_tier_evictions", "host_tier_failed_restores", "kv_util_mean", "num_steps")
    print(json.dumps({"metrics": {k: metrics.get(k) for k in keys}, "diagnosis": probe.report(result)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
