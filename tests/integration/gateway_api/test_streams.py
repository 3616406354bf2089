"""Good input and the gateway's limits: streamed deltas that decode to the tokens, usage, the
default and explicit SLOs, seeds, stop strings, Cancel, client disconnects, duplicate ids, model
info, metrics, the admission limit and a graceful drain, and last the scheduler lost for good."""

from __future__ import annotations

import asyncio

import pytest

from gateway.client import GatewayClient
from gateway.config import GatewayConfig
from gateway.server import start_gateway
from llmserve.errors import CapacityError, ConflictError, UnavailableError
from llmserve.runtime.channel import open_channel
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.integration.gateway_api.calls import CANCELLED, LENGTH, STOP, Stack, collect, ids_of, req, text_of

pytestmark = pytest.mark.asyncio(loop_scope="package")


# ---- good input --------------------------------------------------------------------------------

async def test_stream_decodes_to_its_tokens_with_usage_on_the_last_message(stack: Stack, client: GatewayClient) -> None:
    prompt = "The capital of France is"
    responses = await collect(client, prompt, max_tokens=10, temperature=0.0, ignore_eos=True, request_id="usage-1",
                              service_class="best_effort")
    assert all(r.request_id == "usage-1" for r in responses)
    assert all(r.finish_reason == 0 and not r.HasField("usage") for r in responses[:-1])
    last = responses[-1]
    assert last.finish_reason == LENGTH
    ids = ids_of(responses)
    assert len(ids) == 10 and all(0 <= t < stack.vocab_size for t in ids)
    assert text_of(responses) == stack.tokenizer.decode(ids, skip_special_tokens=True)
    usage = last.usage
    assert usage.prompt_tokens == len(stack.tokenizer.encode(prompt))
    assert usage.completion_tokens == 10
    assert usage.ttft_ms > 0 and usage.mean_tpot_ms > 0
    assert usage.slo_attained  # best-effort, finished


async def test_a_bare_request_runs_under_the_default_slo_and_says_so(stack: Stack) -> None:
    async with open_channel(stack.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        responses = [r async for r in stub.Generate(gateway_pb2.GenerateRequest(text="Hello"))]
    last = responses[-1]
    assert last.finish_reason in (LENGTH, STOP) and last.usage.completion_tokens >= 1
    assert last.slo.service_class == common_pb2.SERVICE_CLASS_REAL_TIME
    assert (last.slo.ttft_ms, last.slo.tpot_ms) == (2000.0, 200.0)  # GatewayConfig's defaults
    assert not any(r.HasField("slo") for r in responses[:-1])


async def test_the_last_response_names_an_explicit_slo(client: GatewayClient) -> None:
    responses = await collect(client, "Hi", max_tokens=2, service_class="deadline", deadline_ms=90_000.0, priority=4)
    slo = responses[-1].slo
    assert (slo.service_class, slo.deadline_ms, slo.priority) == (common_pb2.SERVICE_CLASS_DEADLINE, 90_000.0, 4)
    assert not slo.HasField("ttft_ms")


async def test_chat_template_is_applied(stack: Stack, client: GatewayClient) -> None:
    responses = await collect(client, "Hi!", max_tokens=2, temperature=0.0, ignore_eos=True, apply_chat_template=True)
    rendered = stack.tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, tokenize=False)
    assert responses[-1].usage.prompt_tokens == len(stack.tokenizer.encode(rendered, add_special_tokens=False))


async def test_seed_makes_sampling_reproducible_and_unset_seeds_differ(client: GatewayClient) -> None:
    options = dict(max_tokens=4, temperature=1.0, ignore_eos=True)
    a = ids_of(await collect(client, "Once upon a time", seed=1234, **options))
    b = ids_of(await collect(client, "Once upon a time", seed=1234, **options))
    assert a == b
    # Each unseeded request gets its own random seed: over a 49k vocabulary at temperature 1, two
    # 4-token samples agree by chance with negligible probability.
    unseeded = [tuple(ids_of(await collect(client, "Once upon a time", **options))) for _ in range(2)]
    assert unseeded[0] != unseeded[1]


async def test_stop_string_ends_the_stream_before_it(stack: Stack, client: GatewayClient) -> None:
    options = dict(max_tokens=16, temperature=0.0, ignore_eos=True)
    full = await collect(client, "The capital of France is", **options)
    text = text_of(full)
    # A 3-character stop string whose first occurrence is mid-text (the output may repeat itself).
    cuts = [c for c in range(len(text) // 2, len(text) - 2) if text.find(text[c : c + 3]) > 0]
    assert cuts, f"no usable stop string in {text!r}"
    stop = text[cuts[0] : cuts[0] + 3]
    first = text.find(stop)
    stopped = await collect(client, "The capital of France is", stop=[stop], **options)
    assert stopped[-1].finish_reason == STOP
    assert text_of(stopped) == text[:first]
    assert stopped[-1].usage.completion_tokens < 16
    assert await stack.idle()  # the scheduler aborted the rest


async def test_cancel_rpc_ends_the_stream_with_cancelled(stack: Stack, client: GatewayClient) -> None:
    stream = client.generate("Count to a thousand:", request_id="to-cancel", max_tokens=500, ignore_eos=True)
    first = await stream.__anext__()
    assert first.request_id == "to-cancel"
    assert await client.cancel("to-cancel") is True
    rest = [r async for r in stream]
    assert rest[-1].finish_reason == CANCELLED
    assert not rest[-1].usage.slo_attained
    assert await client.cancel("to-cancel") is False
    assert await client.cancel("never-existed") is False
    assert await stack.idle()


async def test_client_disconnect_aborts_the_request(stack: Stack) -> None:
    async with open_channel(stack.address) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).Generate(req(max_tokens=500, ignore_eos=True))
        await call.read()
        call.cancel()
    assert await stack.idle()
    assert len(stack.gateway.service.registry) == 0  # type: ignore[union-attr]


async def test_duplicate_running_id_is_already_exists(client: GatewayClient) -> None:
    stream = client.generate("Hello", request_id="dup", max_tokens=200, ignore_eos=True)
    await stream.__anext__()
    with pytest.raises(ConflictError, match="'dup' is already running"):
        await collect(client, "Hello", request_id="dup")
    await stream.aclose()


async def test_model_info(stack: Stack, client: GatewayClient) -> None:
    info = await client.model_info()
    assert info.vocab_size == stack.vocab_size == 49152
    assert info.max_context_length == stack.max_context
    assert info.has_chat_template and info.num_workers == 1 and info.kv_block_size == 16
    assert info.scheduling_policy == "fcfs"
    assert stack.tokenizer.eos_token_id in info.eos_token_ids


async def test_finished_requests_are_counted_in_metrics(stack: Stack, client: GatewayClient) -> None:
    registry = stack.gateway.service.metrics.registry  # type: ignore[union-attr]
    labels = {"service_class": "real_time", "finish_reason": "length"}
    before = registry.get_sample_value("llmserve_requests_total", labels) or 0.0
    await collect(client, "Hi", max_tokens=2, ignore_eos=True, service_class="real_time", ttft_ms=60_000.0, tpot_ms=60_000.0)
    assert registry.get_sample_value("llmserve_requests_total", labels) == before + 1
    assert (registry.get_sample_value("llmserve_slo_attained_total", {"service_class": "real_time"}) or 0) >= 1


async def test_busy_gateway_answers_resource_exhausted_and_drains_gracefully(stack: Stack) -> None:
    config = GatewayConfig(scheduler_addr=stack.scheduler.address, max_concurrent_requests=1, http_address="")
    small = await start_gateway(config, tokenizer=stack.tokenizer)
    try:
        async with GatewayClient(small.address) as c:
            running = c.generate("Hello", max_tokens=24, ignore_eos=True)
            await running.__anext__()
            with pytest.raises(CapacityError, match="limit of 1 concurrent requests"):
                await collect(c, "Hello")
            # Drain: the running stream finishes normally, new calls are refused.
            stopping = asyncio.create_task(small.stop(grace_s=30.0))
            rest = [r async for r in running]
            assert rest[-1].finish_reason == LENGTH and rest[-1].usage.completion_tokens == 24
            await stopping
            with pytest.raises(UnavailableError):
                await collect(c, "Hello", timeout_s=2.0)
    finally:
        await small.stop(0)


# Runs last (file order): it stops the module's scheduler.
async def test_losing_the_scheduler_for_good_is_unavailable_to_clients(stack: Stack, client: GatewayClient) -> None:
    stream = client.generate("Hello", max_tokens=500, ignore_eos=True)
    await stream.__anext__()
    await stack.scheduler.stop(0)
    loop = asyncio.get_running_loop()
    lost = loop.time()
    with pytest.raises(UnavailableError, match="scheduler"):
        async for _ in stream:
            pass
    # The stream waited for the scheduler to come back (scheduler_outage_s) before it failed.
    assert loop.time() - lost >= 0.9
    with pytest.raises(UnavailableError, match="scheduler"):
        await collect(client, "Hello")
    assert len(stack.gateway.service.registry) == 0  # type: ignore[union-attr]
