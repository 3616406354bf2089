"""Domain values of the gateway. `*Input` types are what the client sent (unchecked, unset fields
as None); the others are validated, with defaults filled in. `ServiceClass` and `FinishReason`
are the shared enums (`llmserve.types`, numbered as the protos)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.types import FinishReason, ServiceClass

__all__ = ["Delta", "FinishReason", "GenerateInput", "ModelLimits", "PreparedRequest", "Sampling", "SamplingInput",
           "ServiceClass", "Slo", "SloInput", "Usage", "Workflow"]


@dataclass(frozen=True)
class SamplingInput:
    """SamplingParams as sent; None means the field was unset."""

    max_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class SloInput:
    """Slo as sent. `service_class` stays a raw int so that unknown enum values can be reported."""

    service_class: int = 0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    deadline_ms: float | None = None
    priority: int = 0


@dataclass(frozen=True)
class Workflow:
    """Workflow membership (passed through to the scheduler after checking)."""

    workflow_id: str = ""
    application: str = ""
    stage: int = 0
    depends_on: tuple[str, ...] = ()
    workflow_deadline_ms: float | None = None
    workflow_start_unix_s: float | None = None


@dataclass(frozen=True)
class GenerateInput:
    """A GenerateRequest as sent. Exactly one of `text` / `token_ids` is set for a well-formed one."""

    request_id: str = ""
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    sampling: SamplingInput = SamplingInput()
    slo: SloInput = SloInput()
    tenant: str = ""
    workflow: Workflow | None = None
    apply_chat_template: bool = False


@dataclass(frozen=True)
class ModelLimits:
    """What the served model accepts (from the scheduler's WorkerInfo)."""

    model_name: str
    max_context_length: int
    vocab_size: int


@dataclass(frozen=True)
class Sampling:
    """Validated sampling parameters: every default filled in, the seed always set."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    ignore_eos: bool


@dataclass(frozen=True)
class Slo:
    """A validated SLO: real-time has ttft/tpot, deadline has deadline_ms (all > 0 when set)."""

    service_class: ServiceClass
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    deadline_ms: float | None = None
    priority: int = 0


@dataclass(frozen=True)
class PreparedRequest:
    """A validated, tokenized request, ready for Scheduler.Submit."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: Sampling
    slo: Slo
    tenant: str
    workflow: Workflow | None
    arrival_unix_s: float


@dataclass(frozen=True)
class Usage:
    """Token counts and measured latencies of a finished request (milliseconds)."""

    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    mean_tpot_ms: float
    slo_attained: bool


@dataclass(frozen=True)
class Delta:
    """One chunk for the client: text and token ids added since the previous one; the last chunk
    has `finish_reason` != NONE and `usage`."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason = FinishReason.NONE
    usage: Usage | None = None
    error_message: str = ""

    @property
    def finished(self) -> bool:
        return self.finish_reason != FinishReason.NONE
