"""The workload format: one request a line of JSONL.

Fields (missing optional fields mean "none"):
    id             unique string
    arrival_s      arrival time, seconds from the start of the workload. For a call with
                   `depends_on` it is the call's nominal (trace) time; the simulator releases it
                   only when every dependency has finished plus `think_s`
    prompt_tokens  prompt length (>= 1)
    output_tokens  TRUE output length (>= 1): seen only by the simulated model / the live replay's
                   `max_tokens`, never by a scheduling policy
    class          "real_time" | "deadline" | "best_effort"
    ttft_ms, tpot_ms   real-time SLO (required for real_time)
    deadline_ms    end-to-end deadline after arrival (required for deadline)
    priority       static priority, lower runs first (default 0)
    tenant         tenant / application name
    workflow_id    workflow (collective request) membership
    depends_on     ids of earlier calls of the same workload this call waits for
    think_s        client/tool time between the last dependency finishing and this call (default 0)
    stage          0-based stage of the call in its workflow
    application    workflow application kind (e.g. "coding")
    workflow_deadline_ms  end-to-end deadline of the whole workflow, after its first call arrived
    hash_ids       the trace's ids of the prompt's blocks (equal ids on equal prefixes: reusable KV),
                   e.g. Mooncake's or the Claude Code traces'; the simulator's prefix cache runs on them
    hash_block_tokens  tokens per block of `hash_ids` (Mooncake 512, Claude Code 64)
    hash_scope     where the ids are unique ("" : the whole trace; the Claude Code traces' ids are
                   per session); part of the cache's salt with the tenant
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REAL_TIME = "real_time"
DEADLINE = "deadline"
BEST_EFFORT = "best_effort"
CLASSES = (REAL_TIME, DEADLINE, BEST_EFFORT)


class WorkloadError(ValueError):
    """A workload line is malformed; the message names the line and the field to fix."""


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of a workload (see the module docstring for field meanings)."""

    id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    cls: str
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    deadline_ms: float | None = None
    priority: int = 0
    tenant: str = ""
    workflow_id: str | None = None
    depends_on: tuple[str, ...] = field(default_factory=tuple)
    think_s: float = 0.0
    stage: int = 0
    application: str = ""
    workflow_deadline_ms: float | None = None
    hash_ids: tuple[int, ...] = field(default_factory=tuple)
    hash_block_tokens: int = 0
    hash_scope: str = ""

    def validate(self) -> None:
        """Raises WorkloadError when a field is out of range or a required SLO field is missing."""
        where = f"request {self.id!r}"
        if not self.id:
            raise WorkloadError("a request has an empty 'id'")
        if self.cls not in CLASSES:
            raise WorkloadError(f"{where}: 'class' must be one of {CLASSES}, got {self.cls!r}")
        if self.arrival_s < 0:
            raise WorkloadError(f"{where}: 'arrival_s' must be >= 0, got {self.arrival_s}")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise WorkloadError(f"{where}: 'prompt_tokens' and 'output_tokens' must be >= 1")
        if self.cls == REAL_TIME and not (self.ttft_ms and self.ttft_ms > 0 and self.tpot_ms and self.tpot_ms > 0):
            raise WorkloadError(f"{where}: a real_time request needs 'ttft_ms' > 0 and 'tpot_ms' > 0")
        if self.cls == DEADLINE and not (self.deadline_ms and self.deadline_ms > 0):
            raise WorkloadError(f"{where}: a deadline request needs 'deadline_ms' > 0")
        if self.think_s < 0:
            raise WorkloadError(f"{where}: 'think_s' must be >= 0")
        if self.id in self.depends_on:
            raise WorkloadError(f"{where}: 'depends_on' names the request itself")
        if self.hash_ids and self.hash_block_tokens < 1:
            raise WorkloadError(f"{where}: 'hash_ids' need 'hash_block_tokens' >= 1")

    def to_json(self) -> dict:
        """The JSONL object, with `cls` written as "class" and unset optional fields left out."""
        raw = asdict(self)
        out: dict = {"class": raw.pop("cls")}
        for key, value in raw.items():
            if value is None or (key in ("depends_on", "hash_ids") and not value):
                continue
            if key in ("tenant", "application", "hash_scope") and value == "":
                continue
            if key in ("think_s", "stage", "priority", "hash_block_tokens") and value == 0:
                continue
            out[key] = list(value) if key in ("depends_on", "hash_ids") else value
        return {"id": out.pop("id"), "arrival_s": out.pop("arrival_s"), **out}

    @staticmethod
    def from_json(obj: dict, line_no: int = 0) -> WorkloadRequest:
        """Parses one JSONL object; raises WorkloadError naming the line on a bad field."""
        try:
            req = WorkloadRequest(
                id=str(obj["id"]),
                arrival_s=float(obj["arrival_s"]),
                prompt_tokens=int(obj["prompt_tokens"]),
                output_tokens=int(obj["output_tokens"]),
                cls=str(obj["class"]),
                ttft_ms=_opt_float(obj.get("ttft_ms")),
                tpot_ms=_opt_float(obj.get("tpot_ms")),
                deadline_ms=_opt_float(obj.get("deadline_ms")),
                priority=int(obj.get("priority") or 0),
                tenant=str(obj.get("tenant") or ""),
                workflow_id=None if obj.get("workflow_id") in (None, "") else str(obj["workflow_id"]),
                depends_on=tuple(str(d) for d in (obj.get("depends_on") or ())),
                think_s=float(obj.get("think_s") or 0.0),
                stage=int(obj.get("stage") or 0),
                application=str(obj.get("application") or ""),
                workflow_deadline_ms=_opt_float(obj.get("workflow_deadline_ms")),
                hash_ids=tuple(int(h) for h in (obj.get("hash_ids") or ())),
                hash_block_tokens=int(obj.get("hash_block_tokens") or 0),
                hash_scope=str(obj.get("hash_scope") or ""),
            )
        except KeyError as exc:
            raise WorkloadError(f"line {line_no}: missing required field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise WorkloadError(f"line {line_no}: bad value ({exc})") from None
        try:
            req.validate()
        except WorkloadError as exc:
            raise WorkloadError(f"line {line_no}: {exc}") from None
        return req


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def read_workload(path: str | Path) -> list[WorkloadRequest]:
    """Reads and validates a JSONL workload (blank lines skipped), sorted by arrival time.

    Raises WorkloadError on a malformed line, a duplicate id or a dependency on an unknown id.
    """
    requests: list[WorkloadRequest] = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}: line {line_no}: not JSON ({exc.msg})") from None
            requests.append(WorkloadRequest.from_json(obj, line_no))
    check_workload(requests)
    return sorted(requests, key=lambda r: (r.arrival_s, r.id))


def check_workload(requests: Iterable[WorkloadRequest]) -> None:
    """Raises WorkloadError on duplicate ids or dependencies on ids not in the workload."""
    seen: set[str] = set()
    reqs = list(requests)
    for req in reqs:
        if req.id in seen:
            raise WorkloadError(f"duplicate request id {req.id!r}")
        seen.add(req.id)
    for req in reqs:
        for dep in req.depends_on:
            if dep not in seen:
                raise WorkloadError(f"request {req.id!r} depends on unknown id {dep!r}")


def write_workload(path: str | Path, requests: Iterable[WorkloadRequest]) -> int:
    """Writes requests as JSONL sorted by arrival; returns how many were written."""
    rows = sorted(requests, key=lambda r: (r.arrival_s, r.id))
    check_workload(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for req in rows:
            fh.write(json.dumps(req.to_json(), separators=(",", ":")) + "\n")
    return len(rows)


def iter_classes(requests: Iterable[WorkloadRequest]) -> Iterator[str]:
    """The distinct classes present, in CLASSES order."""
    present = {r.cls for r in requests}
    return (c for c in CLASSES if c in present)
