"""OpenAI-compatible request bodies (`/v1/completions`, `/v1/chat/completions`) -> GenerateInput.

Every body field is in exactly one of three lists: accepted (mapped to the request), ignored with a
warning (harmless metadata; the front logs it and names it in the `x-llmserve-ignored` response
header), or rejected with 400 unless it has its default value (a feature this server does not
have: silently serving without it would change the answer). A field in none of the lists is
ignored with a warning too, as vLLM does.

The SLO comes from one of three sources, first match wins as a whole:
1. the body's `slo` object: `{"class": "real_time"|"deadline"|"best_effort", "ttft_ms", "tpot_ms",
   "deadline_ms"}`;
2. the headers `x-slo-class`, `x-slo-ttft-ms` / `x-llm-d-slo-ttft-ms`, `x-slo-tpot-ms` /
   `x-llm-d-slo-tpot-ms`, `x-slo-deadline-ms` (the Kubernetes inference gateway's names); TTFT or
   TPOT without a class means real_time, and a real-time target the headers leave out takes the
   server's default for it;
3. none: the server's default SLO.
`priority` (vLLM's meaning: lower is more urgent, default 0) applies whatever the source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmserve.errors import InvalidRequestError

from gateway.core.types import ChatMessage, GenerateInput, SamplingInput, ServiceClass, SloInput

COMMON_ACCEPTED = ("model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "seed", "stop", "n",
                   "top_k", "ignore_eos", "priority", "request_id", "slo")
COMPLETIONS_ACCEPTED = (*COMMON_ACCEPTED, "prompt")
CHAT_ACCEPTED = (*COMMON_ACCEPTED, "messages", "max_completion_tokens")
IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort", "modalities")
# Field -> its default; any other value is rejected.
REJECTED_UNLESS_DEFAULT: dict[str, Any] = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
    "suffix": (None, ""), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0), "logit_bias": (None, {}), "min_tokens": (None, 0), "min_p": (None, 0, 0.0),
    "tools": (None, []), "functions": (None, []), "tool_choice": (None, "none"), "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}), "audio": (None,), "prediction": (None,),
    "web_search_options": (None,), "guided_json": (None,), "guided_regex": (None,), "guided_choice": (None,),
}
STREAM_OPTIONS_ACCEPTED = ("include_usage",)
STREAM_OPTIONS_IGNORED = ("continuous_usage_stats", "include_obfuscation")
SLO_FIELDS = ("class", "ttft_ms", "tpot_ms", "deadline_ms")
SLO_CLASSES = {c.label: c for c in ServiceClass if c is not ServiceClass.UNSPECIFIED}
MAX_STOP_SEQUENCES = 16


@dataclass(frozen=True)
class RealTimeDefaults:
    """The targets a header SLO of class real_time gets for what its headers leave out."""

    ttft_ms: float
    tpot_ms: float


@dataclass(frozen=True)
class OpenAIRequest:
    """A parsed body: the request, how to answer it, and the fields that were ignored."""

    inp: GenerateInput
    model: str | None
    stream: bool
    include_usage: bool
    ignored: tuple[str, ...]


def parse_completion(body: Any, headers: Mapping[str, str], rt: RealTimeDefaults) -> OpenAIRequest:
    """`POST /v1/completions`: `prompt` is a string or token ids (or a list of one of them)."""
    body = _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list) and all(_is_int(t) for t in prompt):
        if any(t < 0 for t in prompt):
            raise InvalidRequestError("prompt token ids must be >= 0")
        token_ids = tuple(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        raise InvalidRequestError(f"prompt is a batch of {len(prompt)} prompts: send one prompt per request")
    else:
        raise InvalidRequestError("prompt must be a string or a list of token ids")
    return _parse(body, headers, rt, COMPLETIONS_ACCEPTED, text=text, token_ids=token_ids, fill_context=False,
                  max_tokens=_int(body, "max_tokens", minimum=0))


def parse_chat(body: Any, headers: Mapping[str, str], rt: RealTimeDefaults) -> OpenAIRequest:
    """`POST /v1/chat/completions`: `messages` with string content or text parts. Without
    `max_tokens`/`max_completion_tokens` the completion may fill the context (vLLM's rule)."""
    body = _object(body)
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise InvalidRequestError("messages must be a list of {role, content} objects")
    messages = tuple(_message(m, i) for i, m in enumerate(raw))
    max_tokens = _int(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", minimum=1)
    return _parse(body, headers, rt, CHAT_ACCEPTED, messages=messages, fill_context=max_tokens is None,
                  max_tokens=max_tokens)


def _parse(body: Mapping[str, Any], headers: Mapping[str, str], rt: RealTimeDefaults, accepted: tuple[str, ...], *,
           text: str | None = None, token_ids: tuple[int, ...] | None = None,
           messages: tuple[ChatMessage, ...] | None = None, fill_context: bool,
           max_tokens: int | None) -> OpenAIRequest:
    ignored = [name for name in body if name not in accepted and name not in REJECTED_UNLESS_DEFAULT]
    for name, defaults in REJECTED_UNLESS_DEFAULT.items():
        if name in body and not any(body[name] == d and type(body[name]) is type(d) for d in defaults) and \
                not (body[name] is None):
            raise InvalidRequestError(f"{name} is not supported by this server: leave it unset")
    n = _int(body, "n", minimum=1)
    if n not in (None, 1):
        raise InvalidRequestError(f"n is {n}: this server returns one choice per request (n=1)")
    stream = _bool(body, "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequestError("stream_options must be an object")
        if not stream:
            raise InvalidRequestError("stream_options is only allowed with stream=true")
        include_usage = _bool(options, "include_usage", "stream_options.include_usage")
        ignored += [f"stream_options.{k}" for k in options if k not in STREAM_OPTIONS_ACCEPTED]
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("model must be a string")
    request_id = body.get("request_id") or headers.get("x-request-id") or ""
    if not isinstance(request_id, str):
        raise InvalidRequestError("request_id must be a string")
    inp = GenerateInput(
        request_id=request_id,
        text=text,
        token_ids=token_ids,
        messages=messages,
        sampling=SamplingInput(
            max_tokens=max_tokens or 0,
            temperature=_float(body, "temperature"),
            top_p=_float(body, "top_p"),
            top_k=_top_k(body),
            seed=_int(body, "seed", minimum=0),
            stop=_stop(body),
            ignore_eos=_bool(body, "ignore_eos"),
            fill_context=fill_context,
        ),
        slo=_slo(body, headers, rt, _int(body, "priority") or 0),
    )
    return OpenAIRequest(inp, model, stream, include_usage, tuple(ignored))


# ---- SLO -----------------------------------------------------------------------------------------
def _slo(body: Mapping[str, Any], headers: Mapping[str, str], rt: RealTimeDefaults, priority: int) -> SloInput:
    raw = body.get("slo")
    if raw is not None:
        if not isinstance(raw, dict):
            raise InvalidRequestError("slo must be an object {class, ttft_ms, tpot_ms, deadline_ms}")
        unknown = [k for k in raw if k not in SLO_FIELDS]
        if unknown:
            raise InvalidRequestError(f"slo.{unknown[0]} is not an SLO field: use {', '.join(SLO_FIELDS)}")
        name = raw.get("class")
        if not isinstance(name, str):
            raise InvalidRequestError(f"slo.class is missing: set one of {', '.join(SLO_CLASSES)}")
        return SloInput(service_class=int(_class(name, "slo.class")), ttft_ms=_float(raw, "ttft_ms", "slo.ttft_ms"),
                        tpot_ms=_float(raw, "tpot_ms", "slo.tpot_ms"),
                        deadline_ms=_float(raw, "deadline_ms", "slo.deadline_ms"), priority=priority)
    ttft = _header_ms(headers, "x-slo-ttft-ms", "x-llm-d-slo-ttft-ms")
    tpot = _header_ms(headers, "x-slo-tpot-ms", "x-llm-d-slo-tpot-ms")
    deadline = _header_ms(headers, "x-slo-deadline-ms")
    name = headers.get("x-slo-class")
    if name is None and ttft is None and tpot is None and deadline is None:
        return SloInput(priority=priority)  # the server's default
    if name is not None:
        service_class = _class(name, "the x-slo-class header")
    elif ttft is not None or tpot is not None:
        service_class = ServiceClass.REAL_TIME
    else:
        service_class = ServiceClass.DEADLINE
    if service_class == ServiceClass.REAL_TIME:
        ttft = rt.ttft_ms if ttft is None else ttft
        tpot = rt.tpot_ms if tpot is None else tpot
    return SloInput(service_class=int(service_class), ttft_ms=ttft, tpot_ms=tpot, deadline_ms=deadline,
                    priority=priority)


def _class(name: str, where: str) -> ServiceClass:
    known = SLO_CLASSES.get(name.strip().lower())
    if known is None:
        raise InvalidRequestError(f"{where} is {name[:32]!r}: use one of {', '.join(SLO_CLASSES)}")
    return known


def _header_ms(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                number = float(value)
            except ValueError:
                raise InvalidRequestError(
                    f"the {name} header is {value[:32]!r}: send milliseconds as a number") from None
            if not math.isfinite(number) or number <= 0:
                raise InvalidRequestError(f"the {name} header is {value[:32]!r}: send milliseconds > 0")
            return number
    return None


# ---- typed fields --------------------------------------------------------------------------------
def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


def _message(raw: Any, i: int) -> ChatMessage:
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"messages[{i}] must be an object {{role, content}}")
    role, content = raw.get("role"), raw.get("content")
    if not isinstance(role, str):
        raise InvalidRequestError(f"messages[{i}].role must be a string")
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError(f"messages[{i}].content[{j}] must be a text part {{type: text, text}}: "
                                          "this server takes text only")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise InvalidRequestError(f"messages[{i}].content must be a string or a list of text parts")
    for key in raw:
        if key not in ("role", "content", "name"):
            raise InvalidRequestError(f"messages[{i}].{key} is not supported by this server (text messages only)")
    return ChatMessage(role, content)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(body: Mapping[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise InvalidRequestError(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{name} is {value}: use a value >= {minimum}")
    if abs(value) >= 2**63:
        raise InvalidRequestError(f"{name} is out of range: use a 64-bit signed integer")
    return value


def _float(body: Mapping[str, Any], name: str, field: str | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{field or name} must be a number")
    return float(value)


def _bool(body: Mapping[str, Any], name: str, field: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{field or name} must be true or false")
    return value


def _top_k(body: Mapping[str, Any]) -> int:
    value = _int(body, "top_k")
    if value is None or value == -1:  # vLLM spells "off" -1
        return 0
    if value < 0:
        raise InvalidRequestError(f"top_k is {value}: use a value >= 1, or 0 or -1 for off")
    return value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > MAX_STOP_SEQUENCES:
            raise InvalidRequestError(f"stop has {len(value)} sequences: send at most {MAX_STOP_SEQUENCES}")
        return tuple(value)
    raise InvalidRequestError("stop must be a string or a list of strings")
