"""Collective (workflow) requests: split a workflow's end-to-end deadline across its stages by
matching it against the graphs of finished workflows (Tempo §2.7, simplified).

A workflow is a staged graph; each stage is summarised by one super-node (summed prompt and
output tokens of its calls, the artifact's default mode). When a workflow closes (no live call for
`idle_close_s`) its graph is stored per application with the *time share* of each stage: stage s
lasts from the end of stage s-1 (or the workflow start) to the last finish of its calls, divided
by the workflow's total time.

Matching: a live workflow that has reached stage S is compared with every stored graph of the
same application that has more than S stages; similarity = Σ over stages ≤ S of
`0.3·exp(−Δin²/2) + 0.7·exp(−Δout²/2)`, where Δ are differences of log2(1 + tokens) (the log
scale makes σ = 1 meaningful for token counts; an unknown output counts 0). The best graph gives
the cumulative share `ratio(s)` of stages ≤ s, and stage s's deadline is
`workflow_start + workflow_deadline × ratio(s)`. With no history, stages are assumed uniform over
`default_num_stages` (ratio = (s+1)/max(default_num_stages, s+1)).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from scheduler_svc.core.request import Request


@dataclass(frozen=True, slots=True)
class FinishedGraph:
    application: str
    stage_in: tuple[float, ...]  # log2(1 + prompt tokens) per stage
    stage_out: tuple[float, ...]  # log2(1 + output tokens) per stage
    cumulative_share: tuple[float, ...]  # share of the total time spent up to the end of stage s


@dataclass(slots=True)
class _Stage:
    in_tokens: int = 0
    out_tokens: int = 0
    num_live: int = 0
    end_s: float = 0.0


@dataclass(slots=True)
class _Workflow:
    application: str
    start_s: float
    deadline_ms: float | None
    stages: dict[int, _Stage] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    last_activity_s: float = 0.0


def _log(tokens: int) -> float:
    return math.log2(1 + tokens)


class WorkflowTracker:
    def __init__(self, default_num_stages: int = 4, idle_close_s: float = 30.0, max_graphs: int = 200) -> None:
        if default_num_stages < 1 or idle_close_s <= 0 or max_graphs < 1:
            raise ValueError("workflow tracker: default_num_stages >= 1, idle_close_s > 0, max_graphs >= 1")
        self.default_num_stages = default_num_stages
        self.idle_close_s = idle_close_s
        self._live: dict[str, _Workflow] = {}
        self._idle: dict[str, float] = {}  # workflow_id -> time it went idle, in that order
        self._graphs: dict[str, deque[FinishedGraph]] = {}
        self._max_graphs = max_graphs

    # ---- membership ----------------------------------------------------------------------------
    def on_added(self, req: Request, now: float) -> None:
        ref = req.workflow
        if ref is None:
            return
        wf = self._live.get(ref.workflow_id)
        if wf is None:
            start = ref.workflow_start_s if ref.workflow_start_s is not None else req.arrival_s
            wf = self._live[ref.workflow_id] = _Workflow(ref.application, start, ref.workflow_deadline_ms)
        self._idle.pop(ref.workflow_id, None)
        stage = wf.stages.setdefault(ref.stage, _Stage())
        if req.request_id not in wf.live:
            stage.in_tokens += req.num_prompt_tokens
            stage.num_live += 1
            wf.live.add(req.request_id)
        wf.last_activity_s = now

    def on_finished(self, req: Request, now: float) -> None:
        ref = req.workflow
        wf = self._live.get(ref.workflow_id) if ref is not None else None
        if wf is None or req.request_id not in wf.live:
            return
        wf.live.discard(req.request_id)
        stage = wf.stages[ref.stage]  # type: ignore[union-attr]
        stage.num_live -= 1
        if req.is_finished:
            stage.out_tokens += req.num_output_tokens
            stage.end_s = max(stage.end_s, now)
        wf.last_activity_s = now
        if not wf.live:
            self._idle[ref.workflow_id] = now  # type: ignore[union-attr]

    def close_idle(self, now: float) -> None:
        """Stores the graphs of workflows idle for `idle_close_s` (O(1) when none is due)."""
        while self._idle:
            wid, since = next(iter(self._idle.items()))
            if now - since < self.idle_close_s:
                return
            del self._idle[wid]
            wf = self._live.pop(wid, None)
            if wf is not None:
                self._store(wf)

    def _store(self, wf: _Workflow) -> None:
        order = sorted(s for s, st in wf.stages.items() if st.end_s > 0)
        if not order:
            return
        ends = [wf.stages[s].end_s for s in order]
        total = ends[-1] - wf.start_s
        if total <= 0:
            return
        shares = tuple(min(1.0, max(0.0, (end - wf.start_s) / total)) for end in ends)
        graph = FinishedGraph(
            wf.application,
            tuple(_log(wf.stages[s].in_tokens) for s in order),
            tuple(_log(wf.stages[s].out_tokens) for s in order),
            shares,
        )
        graphs = self._graphs.setdefault(wf.application, deque(maxlen=self._max_graphs))
        graphs.append(graph)

    # ---- deadlines -----------------------------------------------------------------------------
    def stage_ratio(self, req: Request) -> float:
        """Cumulative share of the workflow deadline available by the end of `req`'s stage."""
        ref = req.workflow
        assert ref is not None
        s = ref.stage
        best = self._best_match(ref.workflow_id, ref.application, s)
        if best is not None:
            return best.cumulative_share[s]
        return (s + 1) / max(self.default_num_stages, s + 1)

    def stage_deadline_s(self, req: Request) -> float | None:
        """Absolute deadline of `req`'s stage, or None when its workflow has no deadline."""
        ref = req.workflow
        if ref is None or ref.workflow_deadline_ms is None:
            return None
        wf = self._live.get(ref.workflow_id)
        start = wf.start_s if wf is not None else (ref.workflow_start_s or req.arrival_s)
        return start + ref.workflow_deadline_ms / 1000.0 * self.stage_ratio(req)

    def _best_match(self, workflow_id: str, application: str, stage: int) -> FinishedGraph | None:
        graphs = self._graphs.get(application)
        wf = self._live.get(workflow_id)
        if not graphs or wf is None:
            return None
        seen = [(s, st) for s, st in sorted(wf.stages.items()) if s <= stage]
        best, best_score = None, -1.0
        for graph in graphs:
            if len(graph.cumulative_share) <= stage:
                continue
            score = 0.0
            for s, st in seen:
                if s >= len(graph.stage_in):
                    break
                score += 0.3 * math.exp(-((_log(st.in_tokens) - graph.stage_in[s]) ** 2) / 2)
                if st.out_tokens and st.num_live == 0:
                    score += 0.7 * math.exp(-((_log(st.out_tokens) - graph.stage_out[s]) ** 2) / 2)
            if score > best_score:
                best, best_score = graph, score
        return best

    def live_members(self, workflow_id: str) -> set[str]:
        wf = self._live.get(workflow_id)
        return wf.live if wf is not None else set()

    def num_graphs(self, application: str) -> int:
        return len(self._graphs.get(application, ()))
