"""Step-time cost model: `a + b·prefill_tokens + c·decode_seqs + d·kv_tokens_read` seconds.

The coefficients live in a JSON file `{"name", "a_s", "b_s_per_prefill_token",
"c_s_per_decode_seq", "d_s_per_kv_token", "source", ...}` made by `calibrate` (fitted from the
worker's StepTiming rows) or written by hand from published numbers (profiles/*.json).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class StepShape:
    """The sizes of one step that the cost model prices."""

    prefill_tokens: int
    decode_seqs: int
    kv_tokens_read: int


@dataclass(frozen=True)
class CostModel:
    """Linear step-time model (seconds). `extra` keeps the JSON's other fields (source, fit stats)."""

    a_s: float
    b_s_per_prefill_token: float
    c_s_per_decode_seq: float
    d_s_per_kv_token: float
    name: str = "custom"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.a_s <= 0:
            raise ValueError(f"cost model {self.name!r}: the fixed step cost a_s must be > 0 (got {self.a_s})")
        if min(self.b_s_per_prefill_token, self.c_s_per_decode_seq, self.d_s_per_kv_token) < 0:
            raise ValueError(f"cost model {self.name!r}: per-unit costs must be >= 0")

    def step_time(self, prefill_tokens: int, decode_seqs: int, kv_tokens_read: int) -> float:
        """Predicted wall time of one step, seconds."""
        return (self.a_s + self.b_s_per_prefill_token * prefill_tokens + self.c_s_per_decode_seq * decode_seqs
                + self.d_s_per_kv_token * kv_tokens_read)

    def to_json(self) -> dict:
        raw = asdict(self)
        extra = raw.pop("extra")
        return {"name": raw.pop("name"), **raw, **extra}

    @staticmethod
    def from_json(obj: dict) -> CostModel:
        keys = ("a_s", "b_s_per_prefill_token", "c_s_per_decode_seq", "d_s_per_kv_token")
        missing = [k for k in keys if k not in obj]
        if missing:
            raise ValueError(f"cost model JSON lacks {missing}")
        extra = {k: v for k, v in obj.items() if k not in (*keys, "name")}
        return CostModel(*(float(obj[k]) for k in keys), name=str(obj.get("name", "custom")), extra=extra)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def load_cost_model(path_or_name: str | Path) -> CostModel:
    """Loads a cost model from a JSON path, or a bundled profile by name (e.g. "h100_llama3_8b")."""
    path = Path(path_or_name)
    if not path.exists():
        bundled = PROFILES_DIR / f"{path_or_name}.json"
        if not bundled.exists():
            names = sorted(p.stem for p in PROFILES_DIR.glob("*.json"))
            raise FileNotFoundError(f"cost model {str(path_or_name)!r} is neither a file nor a bundled profile {names}")
        path = bundled
    return CostModel.from_json(json.loads(path.read_text(encoding="utf-8")))
