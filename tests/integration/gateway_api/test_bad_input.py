"""Bad input through the wire: every INVALID_ARGUMENT case with its message, and bad requests
never disturb a concurrent good one."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.client import GatewayClient
from llmserve.errors import InvalidRequestError
from llmserve.runtime.channel import open_channel
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.integration.gateway_api.calls import LENGTH, Stack, collect, ids_of, req

pytestmark = pytest.mark.asyncio(loop_scope="package")


def _bad_cases(vocab: int, context: int) -> list[tuple[str, gateway_pb2.GenerateRequest, tuple[str, ...]]]:
    no_prompt = gateway_pb2.GenerateRequest()
    no_prompt.slo.service_class = common_pb2.SERVICE_CLASS_BEST_EFFORT
    targets_only = gateway_pb2.GenerateRequest(text="Hello")
    targets_only.slo.ttft_ms = 100.0
    unknown_class = req()
    unknown_class.slo.service_class = 7  # type: ignore[assignment]
    return [
        ("no prompt", no_prompt, ("prompt is empty",)),
        ("empty text", req(prompt=""), ("text is empty",)),
        ("empty token ids", req(prompt=[]), ("token_ids is empty",)),
        ("token id out of vocabulary", req(prompt=[1, vocab]), (f"token_ids[1] = {vocab}", f"below {vocab}")),
        ("prompt fills the context", req(prompt=[1] * context), (f"prompt has {context} tokens", f"context is {context}")),
        (
            "prompt + max_tokens over the context",
            req(prompt=[1] * (context - 10), max_tokens=20),
            (f"= {context + 10} exceeds", "lower max_tokens to at most 10"),
        ),
        ("negative max_tokens", req(max_tokens=-1), ("max_tokens must be >= 1",)),
        ("negative temperature", req(temperature=-1.0), ("sampling.temperature",)),
        ("top_p zero", req(top_p=0.0), ("sampling.top_p", "(0, 1]")),
        ("top_p above one", req(top_p=1.01), ("sampling.top_p",)),
        ("negative top_k", req(top_k=-1), ("sampling.top_k is -1",)),
        ("stop token id out of vocabulary", req(stop_token_ids=[vocab + 5]), ("sampling.stop_token_ids[0]",)),
        ("empty stop string", req(stop=["ok", ""]), ("sampling.stop[1] is empty",)),
        ("targets without a class", targets_only, ("slo.service_class is missing",)),
        ("unknown service class", unknown_class, ("slo.service_class = 7",)),
        ("real-time without targets", req(service_class="real_time"), ("slo.ttft_ms must be > 0",)),
        ("real-time without tpot", req(service_class="real_time", ttft_ms=100.0), ("slo.tpot_ms must be > 0",)),
        ("real-time zero ttft", req(service_class="real_time", ttft_ms=0.0, tpot_ms=10.0), ("slo.ttft_ms must be > 0",)),
        ("deadline without deadline", req(service_class="deadline"), ("slo.deadline_ms must be > 0",)),
        ("negative slo value", req(deadline_ms=-5.0), ("slo.deadline_ms is -5.0",)),
        ("request id too long", req(request_id="x" * 200), ("request_id is 200 characters long",)),
        ("request id odd characters", req(request_id="id with spaces"), ("request_id 'id with spaces'",)),
        ("chat template on token ids", req(prompt=[1, 2], apply_chat_template=True), ("apply_chat_template needs a `text`",)),
    ]


async def test_every_bad_request_is_invalid_argument_with_its_fix(stack: Stack) -> None:
    cases = _bad_cases(stack.vocab_size, stack.max_context)
    async with open_channel(stack.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for name, request, fragments in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Generate(request):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            for fragment in fragments:
                assert fragment in (info.value.details() or ""), f"{name}: {fragment!r} not in {info.value.details()!r}"
    assert await stack.idle()  # nothing was submitted


async def test_bad_requests_do_not_disturb_a_concurrent_good_one(stack: Stack, client: GatewayClient) -> None:
    good = asyncio.create_task(collect(client, "The capital of France is", max_tokens=8, ignore_eos=True, temperature=0.0))
    rejected = 0
    for _ in range(2):
        for _, request, _ in _bad_cases(stack.vocab_size, stack.max_context):
            with pytest.raises(InvalidRequestError):
                async for _ in client.generate_request(request):
                    pass
            rejected += 1
    responses = await good
    assert rejected > 40
    assert responses[-1].finish_reason == LENGTH
    assert len(ids_of(responses)) == responses[-1].usage.completion_tokens == 8
