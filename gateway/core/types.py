"""Domain values of the gateway. `*Input` types are what the client sent (unchecked, unset fields
as None); the others are validated, with defaults filled in. `ServiceClass` and `FinishReason`
are the shared enums (`llmserve.types`, numbered as the protos)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.types import FinishReason, ServiceClass

__all__ = ["Caller", "ChatMessage", "Delta", "FinishReason", "GenerateInput", "ModelLimits", "PreparedRequest",
           "Sampling", "SamplingInput", "SchedulerSnapshot", "ServiceClass", "Slo", "SloInput", "Usage", "Workflow"]


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
    # Unset max_tokens runs to the end of the context instead of the default 16 (OpenAI's chat
    # completions, as vLLM serves them).
    fill_context: bool = False


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
class ChatMessage:
    """One message of a chat conversation (the HTTP front's chat completions)."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerateInput:
    """A request as sent through either front. Exactly one of `text` / `token_ids` / `messages`
    is set for a well-formed one (`messages` always gets the chat template)."""

    request_id: str = ""
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    messages: tuple[ChatMessage, ...] | None = None
    sampling: SamplingInput = SamplingInput()
    slo: SloInput = SloInput()
    tenant: str = ""
    workflow: Workflow | None = None
    apply_chat_template: bool = False


@dataclass(frozen=True)
class Caller:
    """Who sent a request. With API keys on, `tenant` is the key's and `authenticated` is true:
    request ids, Cancel and duplicate-id checks are then scoped to that tenant. Without keys (a
    local single-user run) every caller shares one scope and `tenant` is whatever the request says."""

    tenant: str = ""
    authenticated: bool = False

    @property
    def scope(self) -> str:
        return self.tenant if self.authenticated else ""


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
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from the prefix cache


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


@dataclass(frozen=True)
class SchedulerSnapshot:
    """The scheduler's queue and KV figures at one moment (`taken_s`, on the gateway's clock)."""

    num_waiting: int
    num_running: int
    kv_blocks_used: int
    kv_blocks_total: int
    block_size: int
    num_workers: int
    taken_s: float

    @property
    def kv_usage(self) -> float:
        """The fraction of KV blocks leased, 0-1."""
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0
