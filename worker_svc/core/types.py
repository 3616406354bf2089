"""What the worker reports about itself. The plan and result messages are the shared ones
(`llmserve.plan`), applied by the shared plan book (`llmserve.plan_book`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerDescription:
    """What Worker.Describe reports (after the cache is sized)."""

    worker_id: str
    model_name: str
    vocab_size: int
    max_model_len: int
    eos_token_ids: tuple[int, ...]
    block_size: int
    num_blocks: int
    bytes_per_block: int
    dtype: str
    device: str
    max_num_batched_tokens: int
    max_num_seqs: int
