"""The Gateway's public API over real services on 127.0.0.1:0: kvstore, one worker (SmolLM2,
CPU), the scheduler and the gateway, all in this process.

Bad input: every INVALID_ARGUMENT case through the wire, with its message, and a bad request never
disturbs a concurrent good one. Good input: streamed deltas that decode to the tokens, usage,
seeds, stop strings, Cancel, client disconnects, duplicate ids, the admission limit, model info,
metrics and a graceful drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio

from gateway.client import GatewayClient, build_request
from gateway.config import GatewayConfig
from gateway.server import start_gateway
from llmserve.errors import CapacityError, ConflictError, InvalidRequestError, UnavailableError
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from worker_svc import server as worker_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

LENGTH, STOP, CANCELLED = common_pb2.FINISH_REASON_LENGTH, common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_CANCELLED


@dataclass
class Stack:
    gateway: ServiceServer
    scheduler: ServiceServer
    servers: list[ServiceServer]
    tokenizer: Any
    vocab_size: int
    max_context: int

    @property
    def address(self) -> str:
        return self.gateway.address


async def _start_worker(kvstore_addr: str) -> ServiceServer:
    from worker_svc.config import WorkerConfig

    # Dummy (random) weights of the SmolLM2 architecture: loads in seconds; the gateway only needs
    # real token ids from the real vocabulary, not sensible text.
    config = WorkerConfig(model="default", load_format="dummy", warmup=False, kvstore_addr=kvstore_addr, worker_id="w0", num_kv_blocks=256,
                          block_size=16, max_num_batched_tokens=256, max_num_seqs=8, device="cpu", dtype="float32")
    return await worker_server.start_worker(config, "127.0.0.1:0")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    from kvstore_svc.config import KvStoreConfig
    from kvstore_svc.server import start_kvstore
    from llmserve.model_source import load_tokenizer, resolve_model
    from scheduler_svc.config import SchedulerServiceConfig
    from scheduler_svc.server import start_scheduler

    servers: list[ServiceServer] = []
    try:

        loading = asyncio.create_task(asyncio.to_thread(load_tokenizer, resolve_model("default")))
        kvstore = await start_kvstore(KvStoreConfig())
        servers.append(kvstore)
        worker = await _start_worker(kvstore.address)
        servers.append(worker)
        scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(worker.address,), kvstore_addr=kvstore.address))
        servers.append(scheduler)
        tokenizer = await loading
        # A lost scheduler is waited for 1 s (not the default minute) before streams fail: the
        # last test below loses it for good.
        gateway = await start_gateway(GatewayConfig(scheduler_addr=scheduler.address, max_concurrent_requests=64,
                                                    scheduler_outage_s=1.0, http_address="127.0.0.1:0"),
                                      tokenizer=tokenizer)
        servers.append(gateway)
        limits = gateway.service.model.limits  # type: ignore[union-attr]
        yield Stack(gateway, scheduler, servers, tokenizer, limits.vocab_size, limits.max_context_length)
    finally:
        for server in reversed(servers):
            await server.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(stack.address) as c:
        yield c


async def collect(client: GatewayClient, prompt: Any, **options: Any) -> list[gateway_pb2.GenerateResponse]:
    return [r async for r in client.generate(prompt, **options)]


def text_of(responses: list[gateway_pb2.GenerateResponse]) -> str:
    return "".join(r.text for r in responses)


def ids_of(responses: list[gateway_pb2.GenerateResponse]) -> list[int]:
    return [t for r in responses for t in r.token_ids]


async def scheduler_idle(stack: Stack, timeout_s: float = 5.0) -> bool:
    """Whether the scheduler holds no request (none waiting or running) within the timeout."""
    async with open_channel(stack.scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for _ in range(int(timeout_s / 0.05)):
            stats = await stub.GetStats(scheduler_pb2.GetStatsRequest())
            if stats.num_running == 0 and stats.num_waiting == 0:
                return True
            await asyncio.sleep(0.05)
    return False


# ---- bad input ---------------------------------------------------------------------------------

def _req(**kw: Any) -> gateway_pb2.GenerateRequest:
    return build_request(kw.pop("prompt", "Hello"), **{"service_class": "best_effort", **kw})


def _bad_cases(vocab: int, context: int) -> list[tuple[str, gateway_pb2.GenerateRequest, tuple[str, ...]]]:
    no_prompt = gateway_pb2.GenerateRequest()
    no_prompt.slo.service_class = common_pb2.SERVICE_CLASS_BEST_EFFORT
    targets_only = gateway_pb2.GenerateRequest(text="Hello")
    targets_only.slo.ttft_ms = 100.0
    unknown_class = _req()
    unknown_class.slo.service_class = 7  # type: ignore[assignment]
    return [
        ("no prompt", no_prompt, ("prompt is empty",)),
        ("empty text", _req(prompt=""), ("text is empty",)),
        ("empty token ids", _req(prompt=[]), ("token_ids is empty",)),
        ("token id out of vocabulary", _req(prompt=[1, vocab]), (f"token_ids[1] = {vocab}", f"below {vocab}")),
        ("prompt fills the context", _req(prompt=[1] * context), (f"prompt has {context} tokens", f"context is {context}")),
        (
            "prompt + max_tokens over the context",
            _req(prompt=[1] * (context - 10), max_tokens=20),
            (f"= {context + 10} exceeds", "lower max_tokens to at most 10"),
        ),
        ("negative max_tokens", _req(max_tokens=-1), ("max_tokens must be >= 1",)),
        ("negative temperature", _req(temperature=-1.0), ("sampling.temperature",)),
        ("top_p zero", _req(top_p=0.0), ("sampling.top_p", "(0, 1]")),
        ("top_p above one", _req(top_p=1.01), ("sampling.top_p",)),
        ("negative top_k", _req(top_k=-1), ("sampling.top_k is -1",)),
        ("stop token id out of vocabulary", _req(stop_token_ids=[vocab + 5]), ("sampling.stop_token_ids[0]",)),
        ("empty stop string", _req(stop=["ok", ""]), ("sampling.stop[1] is empty",)),
        ("targets without a class", targets_only, ("slo.service_class is missing",)),
        ("unknown service class", unknown_class, ("slo.service_class = 7",)),
        ("real-time without targets", _req(service_class="real_time"), ("slo.ttft_ms must be > 0",)),
        ("real-time without tpot", _req(service_class="real_time", ttft_ms=100.0), ("slo.tpot_ms must be > 0",)),
        ("real-time zero ttft", _req(service_class="real_time", ttft_ms=0.0, tpot_ms=10.0), ("slo.ttft_ms must be > 0",)),
        ("deadline without deadline", _req(service_class="deadline"), ("slo.deadline_ms must be > 0",)),
        ("negative slo value", _req(deadline_ms=-5.0), ("slo.deadline_ms is -5.0",)),
        ("request id too long", _req(request_id="x" * 200), ("request_id is 200 characters long",)),
        ("request id odd characters", _req(request_id="id with spaces"), ("request_id 'id with spaces'",)),
        ("chat template on token ids", _req(prompt=[1, 2], apply_chat_template=True), ("apply_chat_template needs a `text`",)),
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
    assert await scheduler_idle(stack)  # nothing was submitted


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
    assert await scheduler_idle(stack)  # the scheduler aborted the rest


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
    assert await scheduler_idle(stack)


async def test_client_disconnect_aborts_the_request(stack: Stack) -> None:
    async with open_channel(stack.address) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).Generate(_req(max_tokens=500, ignore_eos=True))
        await call.read()
        call.cancel()
    assert await scheduler_idle(stack)
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
