"""What the worker reports about itself. The plan and result messages are the shared ones
(`llmserve.plan`), applied by the shared plan book (`llmserve.plan_book`)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.step_cost import StepCostFit


@dataclass(frozen=True)
class StepCalibration:
    """The step-time model the worker fitted at start, and how long the timing took."""

    fit: StepCostFit
    seconds: float


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
    step_cost: StepCalibration | None = None  # None: calibration off or failed


@dataclass(frozen=True)
class FinishPhases:
    """Where a `finish_step` spent its time besides the forward pass and sampling (ns):
    `prepare_ns` everything before the forward (grants, restores, the chunks, the inputs), of it
    `inputs_ns` building the model's input tensors and `restore_ns` copying checkpoints in; and
    after sampling `commit_ns` (the tokens into the book, the step's timing) and
    `lazy_checkpoint_ns` (copying full blocks of running requests out for the host tier)."""

    prepare_ns: int = 0
    inputs_ns: int = 0
    restore_ns: int = 0
    commit_ns: int = 0
    lazy_checkpoint_ns: int = 0
