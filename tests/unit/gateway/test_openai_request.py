"""OpenAI bodies -> GenerateInput: fields, SLO precedence, typed errors; and docs/openai_api.md
names exactly the fields the code accepts, ignores and rejects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.core.openai_request import (
    CHAT_ACCEPTED,
    COMPLETIONS_ACCEPTED,
    IGNORED,
    REJECTED_UNLESS_DEFAULT,
    STREAM_OPTIONS_IGNORED,
    RealTimeDefaults,
    parse_chat,
    parse_completion,
)
from gateway.core.types import ServiceClass
from llmserve.errors import InvalidRequestError

RT = RealTimeDefaults(ttft_ms=2000.0, tpot_ms=200.0)
DOC = (Path(__file__).resolve().parents[3] / "docs" / "openai_api.md").read_text()


def test_completion_fields_map_to_the_request() -> None:
    parsed = parse_completion({"model": "m", "prompt": "Hi", "max_tokens": 5, "temperature": 0, "top_p": 0.5,
                               "seed": 3, "stop": "###", "top_k": -1, "ignore_eos": True, "priority": -2,
                               "request_id": "r1", "stream": True, "stream_options": {"include_usage": True},
                               "user": "u", "logprobs": None}, {}, RT)
    s, inp = parsed.inp.sampling, parsed.inp
    assert (inp.text, inp.request_id, s.max_tokens, s.temperature, s.top_p, s.seed, s.stop, s.top_k, s.ignore_eos) == (
        "Hi", "r1", 5, 0.0, 0.5, 3, ("###",), 0, True)
    assert parsed.stream and parsed.include_usage and parsed.model == "m" and parsed.ignored == ("user",)
    assert inp.slo.service_class == 0 and inp.slo.priority == -2  # no SLO: the server default, with the priority
    assert parse_completion({"prompt": [[1, 2, 3]]}, {}, RT).inp.token_ids == (1, 2, 3)


def test_chat_fills_the_context_unless_told() -> None:
    parsed = parse_chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                  {"type": "text", "text": "b"}]}]}, {}, RT)
    assert parsed.inp.messages[0].content == "ab" and parsed.inp.sampling.fill_context
    told = parse_chat({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "max_completion_tokens": 4}, {}, RT)
    assert told.inp.sampling.max_tokens == 4 and not told.inp.sampling.fill_context


def test_slo_precedence() -> None:
    headers = {"x-slo-ttft-ms": "500", "x-slo-tpot-ms": "50"}
    body = parse_completion({"prompt": "x", "slo": {"class": "deadline", "deadline_ms": 9000}}, headers, RT).inp.slo
    assert (body.service_class, body.deadline_ms, body.ttft_ms) == (ServiceClass.DEADLINE, 9000.0, None)
    from_headers = parse_completion({"prompt": "x"}, headers, RT).inp.slo
    assert (from_headers.service_class, from_headers.ttft_ms, from_headers.tpot_ms) == (ServiceClass.REAL_TIME, 500.0, 50.0)
    partial = parse_completion({"prompt": "x"}, {"x-llm-d-slo-ttft-ms": "700"}, RT).inp.slo
    assert (partial.ttft_ms, partial.tpot_ms) == (700.0, 200.0)
    deadline = parse_completion({"prompt": "x"}, {"x-slo-deadline-ms": "3000"}, RT).inp.slo
    assert deadline.service_class == ServiceClass.DEADLINE


@pytest.mark.parametrize(("body", "headers", "message"), [
    ({"prompt": 5}, {}, "prompt must be a string or a list of token ids"),
    ({"prompt": ["a", "b"]}, {}, "batch of 2 prompts"),
    ({"prompt": "x", "max_tokens": True}, {}, "max_tokens must be an integer"),
    ({"prompt": "x", "max_tokens": -1}, {}, "max_tokens is -1"),
    ({"prompt": "x", "temperature": "hot"}, {}, "temperature must be a number"),
    ({"prompt": "x", "n": 3}, {}, "n is 3"),
    ({"prompt": "x", "logprobs": 1}, {}, "logprobs is not supported"),
    ({"prompt": "x", "presence_penalty": 0.5}, {}, "presence_penalty is not supported"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, {}, "only allowed with stream=true"),
    ({"prompt": "x", "slo": {"class": "rt"}}, {}, "slo.class is 'rt'"),
    ({"prompt": "x", "slo": {"klass": "rt"}}, {}, "slo.klass is not an SLO field"),
    ({"prompt": "x"}, {"x-slo-ttft-ms": "soon"}, "x-slo-ttft-ms header"),
    ({"prompt": "x"}, {"x-slo-ttft-ms": "-3"}, "milliseconds > 0"),
    ({"prompt": "x", "stop": ["a"] * 17}, {}, "at most 16"),
    ({"prompt": "x", "seed": 2**70}, {}, "64-bit"),
    ({"prompt": "x", "top_k": -5}, {}, "top_k is -5"),
])
def test_bad_fields_are_named(body: dict, headers: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        parse_completion(body, headers, RT)


def test_bad_chat_messages_are_named() -> None:
    for messages, message in (("hi", "messages must be a list"), ([{"role": 1, "content": "x"}], "role must be a string"),
                              ([{"role": "user", "content": "x", "tool_calls": []}], "tool_calls is not supported")):
        with pytest.raises(InvalidRequestError, match=re.escape(message)):
            parse_chat({"messages": messages}, {}, RT)


def test_the_doc_names_every_field_in_its_list() -> None:
    accepted = DOC[DOC.index("## Accepted"):DOC.index("## Ignored")]
    ignored = DOC[DOC.index("## Ignored"):DOC.index("## Rejected")]
    rejected = DOC[DOC.index("## Rejected"):DOC.index("## Answers")]
    for name in {*COMPLETIONS_ACCEPTED, *CHAT_ACCEPTED} - {"stream_options"}:
        assert f"`{name}`" in accepted, name
    for name in (*IGNORED, *(f"stream_options.{o}" for o in STREAM_OPTIONS_IGNORED)):
        assert f"`{name}`" in ignored, name
    for name in REJECTED_UNLESS_DEFAULT:
        assert f"`{name}`" in rejected, name
