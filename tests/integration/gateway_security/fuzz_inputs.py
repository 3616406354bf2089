"""Hypothesis strategies for fuzzing both fronts: GenerateRequest messages (half hostile in every
field, half well-formed in most) and OpenAI-style HTTP bodies (and non-JSON bytes)."""

from __future__ import annotations

import json
from typing import Any

import grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from llmserve.v1 import gateway_pb2

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
OK_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.PERMISSION_DENIED}
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2))


@st.composite
def generate_requests(draw: st.DrawFn) -> gateway_pb2.GenerateRequest:
    """Half of the cases hostile in every field, half well-formed in most (so that the good path
    is fuzzed too: odd but valid text, seeds, stop strings)."""
    hostile = draw(st.booleans())

    def pick(benign: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild if hostile else benign)

    request = gateway_pb2.GenerateRequest(
        request_id=pick(st.from_regex(r"[a-z0-9]{0,12}", fullmatch=True), st.text(max_size=140)),
        tenant=pick(st.just(""), st.text(max_size=40)))
    if draw(st.booleans()):
        request.text = pick(st.text(min_size=1, max_size=200), st.text(max_size=200))
    else:
        request.token_ids.ids.extend(pick(st.lists(st.integers(0, 49151), min_size=1, max_size=40),
                                          st.lists(st.integers(0, 2**32 - 1), max_size=40)))
    s = request.sampling
    s.max_tokens = draw(st.integers(0, 4))  # output is not what is fuzzed: keep each case short
    s.top_k = pick(st.integers(0, 100), st.integers(0, 2**31 - 1))
    s.stop.extend(pick(st.lists(st.text(min_size=1, max_size=8), max_size=4), st.lists(st.text(max_size=8), max_size=4)))
    s.stop_token_ids.extend(pick(st.lists(st.integers(0, 49151), max_size=4), st.lists(st.integers(0, 2**32 - 1), max_size=4)))
    s.ignore_eos = draw(st.booleans())
    for name, benign in (("temperature", st.floats(0, 2)), ("top_p", st.floats(0.01, 1))):
        value = pick(st.one_of(st.none(), benign), floats)
        if value is not None:
            setattr(s, name, value)
    seed = draw(st.one_of(st.none(), st.integers(0, 2**64 - 1)))
    if seed is not None:
        s.seed = seed
    if hostile:
        request.slo.service_class = draw(st.integers(0, 5))  # type: ignore[assignment]
        for name in ("ttft_ms", "tpot_ms", "deadline_ms"):
            value = draw(floats)
            if value is not None:
                setattr(request.slo, name, value)
    else:
        request.slo.service_class = draw(st.sampled_from([0, 3]))  # type: ignore[assignment]
    request.slo.priority = draw(st.integers(-2**31, 2**31 - 1))
    request.apply_chat_template = draw(st.booleans()) and request.HasField("text")
    return request


def _json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=30))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                        max_leaves=12)


FIELDS = ("prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "stream",
          "stream_options", "slo", "priority", "request_id", "logprobs", "ignore_eos", "model")


@st.composite
def http_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
    if draw(st.integers(0, 9)) == 0:
        return path, draw(st.binary(max_size=300))  # not JSON at all
    body = draw(st.dictionaries(st.sampled_from(FIELDS), _json_values(), max_size=6))
    if draw(st.booleans()):
        body["prompt"] = draw(st.text(max_size=60))
        body["messages"] = [{"role": draw(st.sampled_from(["user", "system", "x"])), "content": draw(st.text(max_size=40))}]
    body["max_tokens"] = draw(st.integers(-1, 3))
    body.pop("model", None) if draw(st.booleans()) else None
    return path, json.dumps(body).encode()

