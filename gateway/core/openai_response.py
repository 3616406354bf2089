"""OpenAI-compatible response bodies and stream chunks, built from gateway deltas.

Beside OpenAI's fields every final body (and the stream's finishing chunk) carries an `llmserve`
object: the request id, the class and SLO the request ran under (the server default when it set
none) and the measured TTFT, mean TPOT and whether the SLO was met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.core.types import Delta, FinishReason, Slo, Usage

# OpenAI's finish reasons; a request cancelled through the API ends "abort", as in vLLM.
FINISH_REASONS = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.CANCELLED: "abort",
                  FinishReason.ERROR: "error"}


@dataclass(frozen=True)
class Envelope:
    """What every body and chunk of one response repeats."""

    request_id: str
    model: str
    created: int
    chat: bool

    @property
    def id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.request_id

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: Delta, *, first: bool, slo: Slo, include_usage: bool) -> dict[str, Any]:
        """One stream chunk of text; the finishing one has `finish_reason` and `llmserve`.
        With `include_usage`, every chunk has `usage: null` (the usage comes in its own last chunk)."""
        reason = FINISH_REASONS.get(delta.finish_reason) if delta.finished else None
        if self.chat:
            content: dict[str, Any] = {"content": delta.text}
            if first:
                content = {"role": "assistant", **content}
            choice: dict[str, Any] = {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": delta.text, "logprobs": None, "finish_reason": reason}
        body = {**self._head(chunk=True), "choices": [choice]}
        if include_usage:
            body["usage"] = None
        if delta.finished:
            body["llmserve"] = llmserve_extension(self.request_id, slo, delta.usage)
        return body

    def usage_chunk(self, usage: Usage | None) -> dict[str, Any]:
        """`stream_options.include_usage`: the last chunk, with no choices and the full usage."""
        return {**self._head(chunk=True), "choices": [], "usage": openai_usage(usage)}

    def response(self, text: str, final: Delta, slo: Slo) -> dict[str, Any]:
        """The body of a non-streamed completion."""
        reason = FINISH_REASONS.get(final.finish_reason)
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {**self._head(chunk=False), "choices": [choice], "usage": openai_usage(final.usage),
                "llmserve": llmserve_extension(self.request_id, slo, final.usage)}


def openai_usage(usage: Usage | None) -> dict[str, int]:
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    cached = usage.cached_prompt_tokens if usage else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def llmserve_extension(request_id: str, slo: Slo, usage: Usage | None) -> dict[str, Any]:
    out: dict[str, Any] = {"request_id": request_id, "service_class": slo.service_class.label,
                           "slo": slo_body(slo)}
    if usage is not None:
        out.update(ttft_ms=usage.ttft_ms, mean_tpot_ms=usage.mean_tpot_ms, slo_attained=usage.slo_attained)
    return out


def slo_body(slo: Slo) -> dict[str, Any]:
    """An SLO as the `slo` object of a request body (unset targets left out)."""
    body: dict[str, Any] = {"class": slo.service_class.label}
    for name in ("ttft_ms", "tpot_ms", "deadline_ms"):
        value = getattr(slo, name)
        if value is not None:
            body[name] = value
    body["priority"] = slo.priority
    return body


# OpenAI's error `type` per HTTP status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "code", "param"}}`, OpenAI's shape."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code or status,
                      "param": None}}
