"""Every bad GenerateRequest field is rejected with InvalidRequestError naming the field and the fix;
good requests get their defaults, id and seed."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from gateway.core.ids import SEED_BITS, new_request_id, random_seed
from gateway.core.prepare import prepare_request
from gateway.core.types import ChatMessage, GenerateInput, ModelLimits, SamplingInput, ServiceClass, Slo, SloInput, Workflow
from gateway.core.validate import DEFAULT_MAX_TOKENS
from llmserve.errors import InvalidRequestError

LIMITS = ModelLimits(model_name="tiny", max_context_length=64, vocab_size=300)
DEFAULT_SLO = Slo(ServiceClass.REAL_TIME, ttft_ms=2000.0, tpot_ms=200.0)
MAX_PROMPT_BYTES = 1000
BE = SloInput(service_class=ServiceClass.BEST_EFFORT)
RT = SloInput(service_class=ServiceClass.REAL_TIME, ttft_ms=500.0, tpot_ms=50.0)
GOOD = GenerateInput(token_ids=(5, 6, 7), slo=BE)


def prepare(inp: GenerateInput, tokenizer: Any, limits: ModelLimits = LIMITS) -> Any:
    return prepare_request(
        inp, tokenizer, limits, new_request_id=new_request_id, new_seed=lambda: 1234, arrival_unix_s=100.0,
        default_slo=DEFAULT_SLO, max_prompt_bytes=MAX_PROMPT_BYTES,
    )


def sampling(**kw: Any) -> SamplingInput:
    return SamplingInput(**kw)


# (case id, request, fragments the message must contain)
BAD_REQUESTS: list[tuple[str, GenerateInput, tuple[str, ...]]] = [
    ("no prompt", GenerateInput(slo=BE), ("prompt is empty", "`text` or `token_ids`")),
    ("empty text", GenerateInput(text="", slo=BE), ("text is empty",)),
    ("empty token ids", GenerateInput(token_ids=(), slo=BE), ("token_ids is empty",)),
    ("chat template on token ids", replace(GOOD, apply_chat_template=True), ("apply_chat_template needs a `text`",)),
    ("prompt fills context", replace(GOOD, token_ids=(1,) * 64), ("prompt has 64 tokens", "context is 64", "at most 63")),
    ("prompt longer than context", replace(GOOD, token_ids=(1,) * 100), ("prompt has 100 tokens",)),
    (
        "prompt + max_tokens over context",
        replace(GOOD, token_ids=(1,) * 60, sampling=sampling(max_tokens=10)),
        ("prompt (60 tokens) + sampling.max_tokens (10) = 70", "context of 64", "lower max_tokens to at most 4"),
    ),
    (
        "prompt + default max_tokens over context",
        replace(GOOD, token_ids=(1,) * 50),
        (f"sampling.max_tokens ({DEFAULT_MAX_TOKENS})", "at most 14"),
    ),
    ("negative max_tokens", replace(GOOD, sampling=sampling(max_tokens=-1)), ("max_tokens must be >= 1",)),
    ("negative temperature", replace(GOOD, sampling=sampling(temperature=-0.5)), ("sampling.temperature", ">= 0")),
    ("nan temperature", replace(GOOD, sampling=sampling(temperature=float("nan"))), ("sampling.temperature",)),
    ("top_p zero", replace(GOOD, sampling=sampling(top_p=0.0)), ("sampling.top_p is 0.0", "(0, 1]")),
    ("top_p above one", replace(GOOD, sampling=sampling(top_p=1.5)), ("sampling.top_p is 1.5",)),
    ("top_p negative", replace(GOOD, sampling=sampling(top_p=-0.1)), ("sampling.top_p",)),
    ("negative top_k", replace(GOOD, sampling=sampling(top_k=-3)), ("sampling.top_k is -3", ">= 0")),
    ("token id out of vocab", replace(GOOD, token_ids=(1, 300)), ("token_ids[1] = 300", "below 300")),
    ("huge token id", replace(GOOD, token_ids=(2**32 - 1,)), ("token_ids[0] = 4294967295",)),
    (
        "stop token id out of vocab",
        replace(GOOD, sampling=sampling(stop_token_ids=(2, 999))),
        ("sampling.stop_token_ids[1] = 999",),
    ),
    ("empty stop string", replace(GOOD, sampling=sampling(stop=("",))), ("sampling.stop[0] is empty",)),
    ("too many stop strings", replace(GOOD, sampling=sampling(stop=("x",) * 17)), ("sampling.stop has 17", "at most 16")),
    (
        "targets without a service class",
        GenerateInput(token_ids=(1,), slo=SloInput(ttft_ms=100.0)),
        ("slo.service_class is missing", "SERVICE_CLASS_REAL_TIME", "server's default SLO"),
    ),
    ("unknown service class", replace(GOOD, slo=SloInput(service_class=7)), ("slo.service_class = 7", "not a known")),
    (
        "real-time without ttft",
        replace(GOOD, slo=SloInput(service_class=ServiceClass.REAL_TIME, tpot_ms=50.0)),
        ("slo.ttft_ms must be > 0 for real-time",),
    ),
    (
        "real-time without tpot",
        replace(GOOD, slo=SloInput(service_class=ServiceClass.REAL_TIME, ttft_ms=500.0)),
        ("slo.tpot_ms must be > 0 for real-time",),
    ),
    ("real-time zero ttft", replace(GOOD, slo=replace(RT, ttft_ms=0.0)), ("slo.ttft_ms must be > 0",)),
    ("real-time negative tpot", replace(GOOD, slo=replace(RT, tpot_ms=-5.0)), ("slo.tpot_ms is -5.0", ">= 0")),
    (
        "deadline without deadline_ms",
        replace(GOOD, slo=SloInput(service_class=ServiceClass.DEADLINE)),
        ("slo.deadline_ms must be > 0 for deadline",),
    ),
    (
        "deadline zero deadline_ms",
        replace(GOOD, slo=SloInput(service_class=ServiceClass.DEADLINE, deadline_ms=0.0)),
        ("slo.deadline_ms must be > 0",),
    ),
    ("best-effort negative ttft", replace(GOOD, slo=replace(BE, ttft_ms=-1.0)), ("slo.ttft_ms is -1.0",)),
    ("best-effort negative deadline", replace(GOOD, slo=replace(BE, deadline_ms=-100.0)), ("slo.deadline_ms is -100.0",)),
    ("infinite tpot", replace(GOOD, slo=replace(RT, tpot_ms=float("inf"))), ("slo.tpot_ms is inf", "finite")),
    (
        "negative workflow deadline",
        replace(GOOD, workflow=Workflow(workflow_id="wf1", workflow_deadline_ms=-1.0)),
        ("workflow.workflow_deadline_ms is -1.0",),
    ),
    (
        "odd workflow dependency id",
        replace(GOOD, workflow=Workflow(workflow_id="wf1", depends_on=("ok", "not ok"))),
        ("workflow.depends_on[1]",),
    ),
    ("request id too long", replace(GOOD, request_id="a" * 129), ("request_id is 129 characters long", "at most 128")),
    ("request id with space", replace(GOOD, request_id="my request"), ("request_id 'my request' has characters",)),
    ("request id with slash", replace(GOOD, request_id="a/b"), ("request_id 'a/b'",)),
    ("request id non-ascii", replace(GOOD, request_id="reqé"), ("request_id 'reqé'",)),
    ("tenant too long", replace(GOOD, tenant="t" * 300), ("tenant is 300 characters long",)),
    ("tenant with a control character", replace(GOOD, tenant="acme\x1b[2J"), ("tenant 'acme\\x1b[2J' has characters",)),
    ("tenant with a newline", replace(GOOD, tenant="a\nb"), ("tenant", "letters, digits")),
    (
        "10k stop token ids",
        replace(GOOD, sampling=sampling(stop_token_ids=(1,) * 10_000)),
        ("sampling.stop_token_ids has 10000 ids", "at most 256"),
    ),
    (
        "10k workflow dependencies",
        replace(GOOD, workflow=Workflow(workflow_id="wf1", depends_on=("a",) * 10_000)),
        ("workflow.depends_on has 10000 ids", "at most 256"),
    ),
    (
        "workflow application with control characters",
        replace(GOOD, workflow=Workflow(workflow_id="wf1", application="co\x00de")),
        ("workflow.application",),
    ),
    ("text over the byte cap", GenerateInput(text="x" * (MAX_PROMPT_BYTES + 1), slo=BE), ("text is over 1000 bytes",)),
    ("multi-byte text over the byte cap", GenerateInput(text="é" * 501, slo=BE), ("text is over 1000 bytes",)),
    (
        "chat messages over the byte cap",
        GenerateInput(messages=(ChatMessage("user", "x" * 600), ChatMessage("user", "y" * 600)), slo=BE),
        ("messages is over 1000 bytes",),
    ),
    ("no chat messages", GenerateInput(messages=(), slo=BE), ("messages is empty",)),
    ("unknown chat role", GenerateInput(messages=(ChatMessage("wizard", "hi"),), slo=BE), ("messages[0].role is 'wizard'",)),
]


@pytest.mark.parametrize(("inp", "fragments"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_is_rejected_with_a_message_naming_the_fix(
    inp: GenerateInput, fragments: tuple[str, ...], tiny_tokenizer: Any
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        prepare(inp, tiny_tokenizer)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_text_prompt_too_long_after_tokenization(tiny_tokenizer: Any) -> None:
    text = "hello world " * 40
    n = len(tiny_tokenizer.encode(text))
    assert n >= 64
    with pytest.raises(InvalidRequestError, match=f"prompt has {n} tokens"):
        prepare(GenerateInput(text=text, slo=BE), tiny_tokenizer)


def test_defaults_are_filled_and_seed_assigned(tiny_tokenizer: Any) -> None:
    req = prepare(GOOD, tiny_tokenizer)
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed) == (DEFAULT_MAX_TOKENS, 1.0, 1.0, 0, 1234)
    assert req.slo.service_class is ServiceClass.BEST_EFFORT
    assert req.prompt_token_ids == (5, 6, 7)
    assert req.arrival_unix_s == 100.0


def test_explicit_values_are_kept(tiny_tokenizer: Any) -> None:
    inp = replace(
        GOOD,
        request_id="req-1.a:b_c",
        slo=RT,
        sampling=sampling(max_tokens=8, temperature=0.0, top_p=0.9, top_k=5, seed=7, stop=("###",)),
    )
    req = prepare(inp, tiny_tokenizer)
    assert req.request_id == "req-1.a:b_c"
    assert (req.sampling.max_tokens, req.sampling.temperature, req.sampling.top_p, req.sampling.seed) == (8, 0.0, 0.9, 7)
    assert req.sampling.stop == ("###",)
    assert (req.slo.ttft_ms, req.slo.tpot_ms) == (500.0, 50.0)


def test_prompt_that_exactly_fills_context_with_max_tokens_is_accepted(tiny_tokenizer: Any) -> None:
    req = prepare(replace(GOOD, token_ids=(1,) * 60, sampling=sampling(max_tokens=4)), tiny_tokenizer)
    assert len(req.prompt_token_ids) == 60


def test_empty_request_id_gets_uuid_hex(tiny_tokenizer: Any) -> None:
    ids = {prepare(GOOD, tiny_tokenizer).request_id for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_random_seed_is_63_bit_and_varies() -> None:
    rng = random.Random(0)
    seeds = [random_seed(rng) for _ in range(100)]
    assert all(0 <= s < 2**SEED_BITS for s in seeds)
    assert len(set(seeds)) == 100
    assert max(seeds) > 2**62  # the top bit is used


def test_a_request_without_an_slo_runs_under_the_server_default(tiny_tokenizer: Any) -> None:
    req = prepare(GenerateInput(token_ids=(5, 6), slo=SloInput(priority=-3)), tiny_tokenizer)
    assert req.slo == replace(DEFAULT_SLO, priority=-3)  # the request's priority is kept


def test_an_oversized_prompt_is_refused_before_the_tokenizer_sees_it() -> None:
    class Exploding:
        chat_template = None

        def encode(self, *args: Any, **kwargs: Any) -> list[int]:
            raise AssertionError("tokenized an oversized prompt")

    with pytest.raises(InvalidRequestError, match="over 1000 bytes"):
        prepare(GenerateInput(text="x" * 10 * MAX_PROMPT_BYTES, slo=BE), Exploding())


def test_chat_without_max_tokens_fills_the_context(smol_tokenizer: Any) -> None:
    limits = ModelLimits(model_name="smol", max_context_length=512, vocab_size=49152)
    inp = GenerateInput(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")), slo=BE,
                        sampling=SamplingInput(fill_context=True))
    req = prepare(inp, smol_tokenizer, limits)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in smol_tokenizer.decode(req.prompt_token_ids)
    assert req.sampling.max_tokens == 512 - len(req.prompt_token_ids)
