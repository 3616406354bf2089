"""Geometry and budgets of one worker, as the scheduler core plans for it."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.types import cdiv


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Frozen and validated. The KV geometry (block_size, num_blocks) must equal the worker's pool:
    the core's block ledger is an exact mirror of it."""

    num_blocks: int
    block_size: int = 16
    # Tokens computed per step across all requests (chunked prefills and decodes together).
    max_num_batched_tokens: int = 2048
    # Requests admitted at once (holding KV); also the most sequences in one step.
    max_num_seqs: int = 256
    # Longest sequence (prompt + output) the model accepts.
    max_model_len: int = 2048
    eos_token_ids: tuple[int, ...] = ()
    # The model's vocabulary: add_request refuses a token id at or past it (the worker would
    # refuse every plan that carries it). 0: unknown (a simulated model), not checked.
    vocab_size: int = 0
    # Requests waiting for admission before add_request raises CapacityError.
    max_num_waiting: int = 4096
    # Reject, at add_request, a new real-time request whose predicted TTFT (the policy's cost
    # model) exceeds its TTFT SLO (core/admission.py). Needs bros or tempo. Off: queue everything.
    rt_admission_control: bool = False

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "max_num_batched_tokens", "max_num_seqs", "max_model_len",
                     "max_num_waiting"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SchedulerConfig.{name} must be an integer >= 1 (got {value!r})")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ValueError(f"SchedulerConfig.vocab_size must be an integer >= 0 (got {self.vocab_size!r})")
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))

    @property
    def num_kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks holding `num_tokens` tokens of one request: ceil(num_tokens / block_size)."""
        return cdiv(num_tokens, self.block_size)
