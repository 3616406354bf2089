"""Field checks of a GenerateRequest. Each check raises InvalidRequestError whose message names the
field and says what to fix; the prompt-length checks run after tokenization (`check_prompt_ids`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from llmserve.errors import InvalidRequestError

from gateway.core.types import (
    GenerateInput,
    ModelLimits,
    Sampling,
    SamplingInput,
    ServiceClass,
    Slo,
    SloInput,
    Workflow,
)

DEFAULT_MAX_TOKENS = 16
MAX_REQUEST_ID_LENGTH = 128
MAX_TENANT_LENGTH = 256
MAX_APPLICATION_LENGTH = 128
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
MAX_STOP_TOKEN_IDS = 256
MAX_DEPENDS_ON = 256
MAX_CHAT_MESSAGES = 4096
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
# Ids travel in logs, metrics labels and URLs: keep them to a safe alphabet.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]+")
# Tenants and application names travel in logs and accounting: no control characters, no spaces.
_LABEL_PATTERN = re.compile(r"[A-Za-z0-9._:@/+\-]+")


def check_request_id(request_id: str, field: str = "request_id") -> None:
    """Empty is allowed (the gateway assigns one); otherwise at most 128 safe characters."""
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidRequestError(
            f"{field} is {len(request_id)} characters long: use at most {MAX_REQUEST_ID_LENGTH} "
            "(or leave it empty to get an assigned id)"
        )
    if request_id and not _REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidRequestError(
            f"{field} {request_id!r} has characters other than letters, digits and . _ : -: "
            "use only those (or leave it empty to get an assigned id)"
        )


def check_label(value: str, field: str, max_length: int) -> None:
    """A tenant or application name: at most `max_length` characters of a safe alphabet."""
    if len(value) > max_length:
        raise InvalidRequestError(f"{field} is {len(value)} characters long: use at most {max_length}")
    if value and not _LABEL_PATTERN.fullmatch(value):
        raise InvalidRequestError(
            f"{field} {value[:64]!r} has characters other than letters, digits and . _ : @ / + -: use only those"
        )


def check_prompt_bytes(inp: GenerateInput, max_bytes: int) -> None:
    """The prompt text (or the chat messages' contents together) is at most `max_bytes` UTF-8
    bytes. Runs before anything else looks at the text, so an oversized prompt costs no tokenizing."""
    if inp.text is not None:
        size, field = _utf8_size(inp.text, max_bytes), "text"
    elif inp.messages is not None:
        if len(inp.messages) > MAX_CHAT_MESSAGES:
            raise InvalidRequestError(f"messages has {len(inp.messages)} entries: send at most {MAX_CHAT_MESSAGES}")
        size, field = 0, "messages"
        for message in inp.messages:
            size += _utf8_size(message.content, max_bytes - size)
            if size > max_bytes:
                break
    else:
        return
    if size > max_bytes:
        raise InvalidRequestError(f"{field} is over {max_bytes} bytes: send a prompt of at most {max_bytes} "
                                  "bytes (UTF-8)")


def _utf8_size(text: str, limit: int) -> int:
    """Bytes of `text` in UTF-8, or more than `limit` without encoding a text that is surely longer."""
    if len(text) > limit:  # every character is at least one byte
        return limit + 1
    return len(text.encode("utf-8", "surrogatepass"))


def check_prompt_present(inp: GenerateInput) -> None:
    """The prompt is set and non-empty, and the chat template is only asked for with text."""
    if inp.messages is not None:
        if not inp.messages:
            raise InvalidRequestError("messages is empty: send at least one message")
        for i, message in enumerate(inp.messages):
            if message.role not in CHAT_ROLES:
                raise InvalidRequestError(
                    f"messages[{i}].role is {message.role[:32]!r}: use one of {', '.join(CHAT_ROLES)}")
        return
    if inp.text is None and inp.token_ids is None:
        raise InvalidRequestError("prompt is empty: set `text` or `token_ids`")
    if inp.text is not None and inp.text == "":
        raise InvalidRequestError("text is empty: send a non-empty prompt")
    if inp.token_ids is not None and len(inp.token_ids) == 0:
        raise InvalidRequestError("token_ids is empty: send at least one prompt token id")
    if inp.apply_chat_template and inp.text is None:
        raise InvalidRequestError(
            "apply_chat_template needs a `text` prompt: send the message as text, or send token_ids "
            "with apply_chat_template=false"
        )


def check_token_ids(token_ids: Sequence[int], vocab_size: int, field: str) -> None:
    """Every id is below the vocabulary size."""
    for i, token_id in enumerate(token_ids):
        if token_id >= vocab_size:
            raise InvalidRequestError(
                f"{field}[{i}] = {token_id} is not in the vocabulary: token ids must be below {vocab_size}"
            )


def validate_sampling(s: SamplingInput, vocab_size: int, new_seed: Callable[[], int]) -> Sampling:
    """Checks ranges and fills the defaults; `new_seed()` gives the seed when the request sets none."""
    if s.max_tokens < 0:
        raise InvalidRequestError(f"sampling.max_tokens is {s.max_tokens}: max_tokens must be >= 1 (0 or unset means {DEFAULT_MAX_TOKENS})")
    temperature = 1.0 if s.temperature is None else s.temperature
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidRequestError(f"sampling.temperature is {temperature}: use a value >= 0 (0 means greedy)")
    top_p = 1.0 if s.top_p is None else s.top_p
    if not math.isfinite(top_p) or not 0.0 < top_p <= 1.0:
        raise InvalidRequestError(f"sampling.top_p is {top_p}: use a value in (0, 1] (1 turns nucleus sampling off)")
    if s.top_k < 0:
        raise InvalidRequestError(f"sampling.top_k is {s.top_k}: use a value >= 0 (0 turns top-k off)")
    if len(s.stop) > MAX_STOP_STRINGS:
        raise InvalidRequestError(f"sampling.stop has {len(s.stop)} strings: send at most {MAX_STOP_STRINGS}")
    for i, stop in enumerate(s.stop):
        if not stop:
            raise InvalidRequestError(f"sampling.stop[{i}] is empty: remove it or give a non-empty string")
        if len(stop) > MAX_STOP_LENGTH:
            raise InvalidRequestError(f"sampling.stop[{i}] is {len(stop)} characters long: use at most {MAX_STOP_LENGTH}")
    if len(s.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        raise InvalidRequestError(
            f"sampling.stop_token_ids has {len(s.stop_token_ids)} ids: send at most {MAX_STOP_TOKEN_IDS}"
        )
    check_token_ids(s.stop_token_ids, vocab_size, "sampling.stop_token_ids")
    return Sampling(
        # A fill_context request gets its max_tokens once the prompt's length is known.
        max_tokens=s.max_tokens or (0 if s.fill_context else DEFAULT_MAX_TOKENS),
        temperature=temperature,
        top_p=top_p,
        top_k=s.top_k,
        seed=new_seed() if s.seed is None else s.seed,
        stop=s.stop,
        stop_token_ids=s.stop_token_ids,
        ignore_eos=s.ignore_eos,
    )


def _check_duration(value: float | None, field: str) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise InvalidRequestError(f"{field} is {value}: durations must be finite and >= 0 milliseconds")


def validate_slo(s: SloInput, default: Slo) -> Slo:
    """No SLO at all (no class, no targets) is the server's `default` (with the request's priority);
    otherwise the class is set and known, and the class's required targets are present and > 0."""
    known = {c.value for c in ServiceClass if c != ServiceClass.UNSPECIFIED}
    if s.service_class == ServiceClass.UNSPECIFIED:
        if s.ttft_ms is None and s.tpot_ms is None and s.deadline_ms is None:
            return Slo(default.service_class, default.ttft_ms, default.tpot_ms, default.deadline_ms, s.priority)
        raise InvalidRequestError(
            "slo.service_class is missing: set SERVICE_CLASS_REAL_TIME, SERVICE_CLASS_DEADLINE or "
            "SERVICE_CLASS_BEST_EFFORT with the targets, or send no SLO targets to run under the server's default SLO"
        )
    if s.service_class not in known:
        raise InvalidRequestError(
            f"slo.service_class = {s.service_class} is not a known ServiceClass: use REAL_TIME (1), DEADLINE (2) or BEST_EFFORT (3)"
        )
    for name in ("ttft_ms", "tpot_ms", "deadline_ms"):
        _check_duration(getattr(s, name), f"slo.{name}")
    service_class = ServiceClass(s.service_class)
    if service_class == ServiceClass.REAL_TIME:
        for name in ("ttft_ms", "tpot_ms"):
            value = getattr(s, name)
            if value is None or value <= 0:
                raise InvalidRequestError(f"slo.{name} must be > 0 for real-time requests: set a target in milliseconds")
    if service_class == ServiceClass.DEADLINE and (s.deadline_ms is None or s.deadline_ms <= 0):
        raise InvalidRequestError("slo.deadline_ms must be > 0 for deadline requests: set the deadline in milliseconds after arrival")
    return Slo(service_class, s.ttft_ms, s.tpot_ms, s.deadline_ms, s.priority)


def validate_workflow(w: Workflow | None) -> None:
    """Ids are well-formed and the workflow deadline, when set, is a non-negative duration."""
    if w is None:
        return
    check_request_id(w.workflow_id, "workflow.workflow_id")
    check_label(w.application, "workflow.application", MAX_APPLICATION_LENGTH)
    if len(w.depends_on) > MAX_DEPENDS_ON:
        raise InvalidRequestError(f"workflow.depends_on has {len(w.depends_on)} ids: send at most {MAX_DEPENDS_ON}")
    for i, dep in enumerate(w.depends_on):
        check_request_id(dep, f"workflow.depends_on[{i}]")
    _check_duration(w.workflow_deadline_ms, "workflow.workflow_deadline_ms")
    if w.workflow_start_unix_s is not None and (not math.isfinite(w.workflow_start_unix_s) or w.workflow_start_unix_s < 0):
        raise InvalidRequestError(f"workflow.workflow_start_unix_s is {w.workflow_start_unix_s}: use Unix seconds >= 0 or leave it unset")


def check_tenant(tenant: str) -> None:
    check_label(tenant, "tenant", MAX_TENANT_LENGTH)


def check_prompt_ids(prompt_ids: Sequence[int], max_tokens: int, limits: ModelLimits, field: str) -> None:
    """The (tokenized) prompt is non-empty, in the vocabulary, and leaves room for max_tokens."""
    n, context = len(prompt_ids), limits.max_context_length
    if n == 0:
        raise InvalidRequestError(f"{field} tokenizes to no tokens: send a non-empty prompt")
    if n < context:  # a prompt too long for the context is reported as such, without a vocabulary scan
        check_token_ids(prompt_ids, limits.vocab_size, field)
    if n >= context:
        raise InvalidRequestError(
            f"prompt has {n} tokens but the model's context is {context} tokens: "
            f"shorten the prompt to at most {context - 1} tokens"
        )
    if n + max_tokens > context:
        raise InvalidRequestError(
            f"prompt ({n} tokens) + sampling.max_tokens ({max_tokens}) = {n + max_tokens} exceeds the "
            f"model's context of {context} tokens: lower max_tokens to at most {context - n} or shorten the prompt"
        )
