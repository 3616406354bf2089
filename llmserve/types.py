"""The vocabulary every service shares: service classes, finish reasons, sampling parameters,
step timings, and the two rules that must never differ between copies (the decode rule and the
seed of a request that came without one). Pure: stdlib only, no validation of user input (the
gateway owns those rules, `gateway/core/validate.py`; the internal services check contracts).

The enums are numbered exactly as `protos/llmserve/v1/common.proto`, so proto <-> domain is
`ServiceClass(value)` (see `service_class_of` for the check of unknown numbers).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass


class ServiceClass(enum.IntEnum):
    """How a request is treated, and which end of the KV pool its blocks come from
    (llmserve.v1.ServiceClass). UNSPECIFIED is never a valid class of an admitted request."""

    UNSPECIFIED = 0
    REAL_TIME = 1
    DEADLINE = 2
    BEST_EFFORT = 3

    @property
    def label(self) -> str:
        """`real_time`, `deadline`, `best_effort` (`unspecified`): metrics labels, messages."""
        return self.name.lower()


def service_class_of(value: int) -> ServiceClass | None:
    """The class numbered `value`, or None when the number is UNSPECIFIED or unknown."""
    try:
        service_class = ServiceClass(value)
    except ValueError:
        return None
    return None if service_class is ServiceClass.UNSPECIFIED else service_class


def service_class_named(label: str) -> ServiceClass:
    """The class whose `label` this is (`real_time`, `deadline`, `best_effort`)."""
    service_class = ServiceClass.__members__.get(label.upper())
    if service_class is None or service_class is ServiceClass.UNSPECIFIED:
        raise ValueError(f"unknown service class {label!r}: use real_time, deadline or best_effort")
    return service_class


class FinishReason(enum.IntEnum):
    """Why a request stopped (llmserve.v1.FinishReason); NONE (the proto's UNSPECIFIED) means
    it is still running."""

    NONE = 0
    STOP = 1
    LENGTH = 2
    CANCELLED = 3
    ERROR = 4


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How a request's tokens are chosen (common.proto SamplingParams, minus the stop strings,
    which stay at the gateway). Already checked by the gateway; nothing here validates.

    temperature 0 = greedy; top_k 0 = off; top_p 1 = off. Output token i of a request is drawn
    from the counter-based generator keyed by (seed, i); `seed` None means "derive it from the
    request id" (`derive_seed`), which only direct users of the cores (tests, the in-process
    engine) rely on: the gateway always sets one.
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def derive_seed(request_id: str) -> int:
    """The seed of a request that came without one: a hash of its id, so that a recomputed,
    resumed or moved request draws the same tokens on any worker."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "little")


@dataclass(frozen=True, slots=True)
class StepTiming:
    """Timings and sizes of one step (worker.proto StepTiming), as the worker measured them;
    they calibrate the simulator's cost model."""

    forward_ns: int = 0
    sample_ns: int = 0
    kv_ns: int = 0  # leasing: from the blocks held ahead, plus any store RPC waited for (the shell's)
    total_ns: int = 0  # plan received to result sent (the shell's)
    num_prefill_tokens: int = 0  # every computed token that is not a decode (is_decode)
    num_decode_seqs: int = 0
    num_kv_tokens_read: int = 0  # sum of the context lengths after the step
    # Host-tier traffic (bidirectional KV): bytes copied for checkpoints and restored, their wall
    # times, and tokens recomputed because a restore failed (included in num_prefill_tokens).
    checkpoint_bytes: int = 0
    restore_bytes: int = 0
    checkpoint_ns: int = 0
    restore_ns: int = 0
    num_recomputed_tokens: int = 0
    # Where the rest of the step went (the shell's): the plan's decoding and admission, building
    # the result, and the store RPCs the step waited for (0 when its blocks were held ahead).
    plan_decode_ns: int = 0
    encode_ns: int = 0
    kv_rpcs: int = 0


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for integers (b > 0): blocks needed for `a` tokens of `b` per block."""
    return -(a // -b)


def is_decode(start: int, num_tokens: int, num_prompt_tokens: int) -> bool:
    """THE decode rule: a chunk is a decode iff it computes exactly one token at or past the end
    of the prompt (the last sampled token). Anything else, a re-prefill of sampled tokens after a
    recompute included, is prefill work."""
    return num_tokens == 1 and start >= num_prompt_tokens
