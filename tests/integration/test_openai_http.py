"""The OpenAI-compatible HTTP front over real services on 127.0.0.1:0, with the `openai` package as
the client (completions and chat, streamed and not, usage, errors) and raw HTTP for the SSE
framing, the SLO sources, disconnects, /health, /metrics (the vllm:* gauges) and /v1/models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio

from gateway.config import GatewayConfig
from gateway.server import start_gateway
from llmserve.runtime.server import ServiceServer
from llmserve_stack.launch import free_port
from tests.integration.inprocess import Backend, http_base, running_backend, start_backend

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as backend:
        yield backend


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(backend: Backend) -> ServiceServer:
    return await backend.gateway(stats_interval_s=0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(gateway: ServiceServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=http_base(gateway) + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(gateway: ServiceServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(http_base(gateway)) as session:
        yield session


def model_name(gateway: ServiceServer) -> str:
    return gateway.service.model.limits.model_name  # type: ignore[union-attr]


GREEDY: dict[str, Any] = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}


# ---- the openai client -----------------------------------------------------------------------------
async def test_completion_with_usage_and_the_default_slo(client: openai.AsyncOpenAI, gateway: ServiceServer) -> None:
    result = await client.completions.create(model=model_name(gateway), prompt="The capital of France is",
                                             max_tokens=6, **GREEDY)
    choice = result.choices[0]
    assert choice.finish_reason == "length" and choice.text
    assert result.usage.completion_tokens == 6 and result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + 6
    assert result.id.startswith("cmpl-") and result.object == "text_completion"
    extension = result.model_extra["llmserve"]
    assert extension["service_class"] == "real_time"
    assert extension["slo"] == {"class": "real_time", "ttft_ms": 2000.0, "tpot_ms": 200.0, "priority": 0}


async def test_a_resent_conversation_reports_its_cached_prompt_tokens(client: openai.AsyncOpenAI,
                                                                       gateway: ServiceServer) -> None:
    """Prefix caching (on by default): the second turn resends the first; the blocks the first
    turn's prompt filled come from the cache, as OpenAI's usage.prompt_tokens_details says."""
    turn = [{"role": "user", "content": "Name three rivers of Europe and say where each one rises, " * 3}]
    first = await client.chat.completions.create(model=model_name(gateway), messages=turn, max_tokens=4, **GREEDY)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    turn += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And their lengths?"}]
    second = await client.chat.completions.create(model=model_name(gateway), messages=turn, max_tokens=4, **GREEDY)
    cached = second.usage.prompt_tokens_details.cached_tokens
    block = 16  # the in-process worker's block size
    assert cached >= first.usage.prompt_tokens // block * block - block and cached % block == 0
    assert 0 < cached < second.usage.prompt_tokens


async def test_streamed_completion_equals_the_unstreamed_one(client: openai.AsyncOpenAI, gateway: ServiceServer) -> None:
    whole = await client.completions.create(model=model_name(gateway), prompt="Once upon a time", max_tokens=8, **GREEDY)
    stream = await client.completions.create(model=model_name(gateway), prompt="Once upon a time", max_tokens=8,
                                             stream=True, stream_options={"include_usage": True}, **GREEDY)
    chunks = [chunk async for chunk in stream]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text


async def test_chat_completion_applies_the_template(client: openai.AsyncOpenAI, gateway: ServiceServer,
                                                    backend: Backend) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    result = await client.chat.completions.create(model=model_name(gateway), messages=messages, max_tokens=3, **GREEDY)
    rendered = backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert result.usage.prompt_tokens == len(backend.tokenizer.encode(rendered, add_special_tokens=False))
    assert result.choices[0].message.role == "assistant" and result.choices[0].finish_reason == "length"
    assert result.object == "chat.completion"


async def test_streamed_chat_sends_the_role_first_and_usage_last(client: openai.AsyncOpenAI, gateway: ServiceServer) -> None:
    stream = await client.chat.completions.create(
        model=model_name(gateway), messages=[{"role": "user", "content": "Count: 1, 2,"}], max_completion_tokens=5,
        stream=True, stream_options={"include_usage": True}, **GREEDY)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-2].model_extra["llmserve"]["service_class"] == "real_time"


async def test_sampling_extras_seed_top_k_and_priority(client: openai.AsyncOpenAI, gateway: ServiceServer) -> None:
    options = dict(model=model_name(gateway), prompt="Hello", max_tokens=5, temperature=1.0, seed=42,
                   extra_body={"top_k": 20, "ignore_eos": True, "priority": -5, "request_id": "extras-1"})
    a = await client.completions.create(**options)
    b = await client.completions.create(**options)
    assert a.choices[0].text == b.choices[0].text  # same seed, same tokens
    assert a.model_extra["llmserve"]["slo"]["priority"] == -5 and a.id == "cmpl-extras-1"


async def test_errors_in_openai_shape(client: openai.AsyncOpenAI, gateway: ServiceServer) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.completions.create(model=model_name(gateway), prompt="Hi", temperature=-1.0)
    assert bad.value.status_code == 400 and "temperature" in bad.value.message
    assert bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError, match="not served here"):
        await client.completions.create(model="gpt-9", prompt="Hi")
    with pytest.raises(openai.BadRequestError, match="logprobs is not supported"):
        await client.completions.create(model=model_name(gateway), prompt="Hi", logprobs=2)
    with pytest.raises(openai.BadRequestError, match="n=1"):
        await client.completions.create(model=model_name(gateway), prompt="Hi", n=2)
    with pytest.raises(openai.BadRequestError, match="prompt has"):
        await client.completions.create(model=model_name(gateway), prompt=[1] * 9000)


async def test_a_full_gateway_answers_429_with_retry_after(backend: Backend) -> None:
    small = await backend.gateway(max_concurrent_requests=1)
    async with aiohttp.ClientSession(http_base(small)) as http:
        body = {"prompt": "Hello", "max_tokens": 64, "ignore_eos": True, "stream": True}
        async with http.post("/v1/completions", json=body) as running:
            await running.content.readline()  # the stream is running
            async with http.post("/v1/completions", json={"prompt": "Hi"}) as refused:
                assert refused.status == 429 and refused.headers["Retry-After"] == "1"
                error = (await refused.json())["error"]
                assert error["type"] == "rate_limit_error" and "limit of 1 concurrent" in error["message"]
    async with openai.AsyncOpenAI(base_url=http_base(small) + "/v1", api_key="x", max_retries=0) as client:
        async with aiohttp.ClientSession(http_base(small)) as http:
            async with http.post("/v1/completions", json=body) as running:
                await running.content.readline()
                with pytest.raises(openai.RateLimitError):
                    await client.completions.create(model=model_name(small), prompt="Hi")


async def test_work_the_scheduler_sheds_is_429_with_retry_after() -> None:
    """A full scheduler queue (here: one waiting request per worker) sheds best-effort work with
    RESOURCE_EXHAUSTED: HTTP clients and the inference gateway's picker get 429 and back off."""
    shedding = await start_backend(max_num_waiting=1)
    try:
        gateway = await shedding.gateway()
        async with aiohttp.ClientSession(http_base(gateway), connector=aiohttp.TCPConnector(limit=0)) as http:
            body = {"prompt": "Count:", "max_tokens": 200, "ignore_eos": True, "stream": True,
                    "slo": {"class": "best_effort"}}
            responses = await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(16)))
            shed = [r for r in responses if r.status == 429]
            assert shed and all(r.status in (200, 429) for r in responses), [r.status for r in responses]
            for r in shed:
                error = (await r.json())["error"]
                assert r.headers["Retry-After"] == "1" and "scheduler:" in error["message"]
                assert error["type"] == "rate_limit_error"
            for r in responses:
                r.close()
        assert await shedding.idle()
    finally:
        await shedding.stop()


async def test_503_while_the_gateway_starts() -> None:
    http_port = free_port()
    config = GatewayConfig(scheduler_addr=f"127.0.0.1:{free_port()}", scheduler_timeout_s=30.0,
                           http_address=f"127.0.0.1:{http_port}")
    starting = asyncio.create_task(start_gateway(config, tokenizer=object()))
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{http_port}") as http:
            for _ in range(100):
                try:
                    async with http.get("/health") as health:
                        assert health.status == 503 and (await health.json())["status"] == "starting"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the HTTP front never answered while the gateway started")
            async with http.post("/v1/completions", json={"prompt": "Hi"}) as response:
                assert response.status == 503 and "starting" in (await response.json())["error"]["message"]
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)


# ---- raw HTTP --------------------------------------------------------------------------------------
async def _events(response: aiohttp.ClientResponse) -> list[bytes]:
    raw = await response.read()
    assert raw.endswith(b"\n\n")
    return raw.split(b"\n\n")[:-1]


async def test_sse_framing(http: aiohttp.ClientSession) -> None:
    body = {"prompt": "Hello", "max_tokens": 4, "stream": True, "temperature": 0, "ignore_eos": True}
    async with http.post("/v1/completions", json=body, headers={"x-request-id": "sse-1"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "sse-1"
        events = await _events(response)
    assert all(e.startswith(b"data: ") for e in events)
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["id"] == "cmpl-sse-1" and "usage" not in c for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


async def test_slo_from_the_body_wins_over_headers_which_win_over_the_default(http: aiohttp.ClientSession) -> None:
    async def slo_of(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        async with http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1, **body}, headers=headers) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["llmserve"]["slo"]

    headers = {"x-slo-ttft-ms": "900", "x-slo-tpot-ms": "90"}
    body_slo = {"slo": {"class": "deadline", "deadline_ms": 45000}}
    assert await slo_of(body_slo, headers) == {"class": "deadline", "deadline_ms": 45000.0, "priority": 0}
    assert await slo_of({}, headers) == {"class": "real_time", "ttft_ms": 900.0, "tpot_ms": 90.0, "priority": 0}
    # The inference gateway may send only a TTFT: the TPOT is the server's default.
    assert (await slo_of({}, {"x-llm-d-slo-ttft-ms": "700"}))["tpot_ms"] == 200.0
    assert (await slo_of({}, {"x-slo-class": "best_effort"}))["class"] == "best_effort"
    assert (await slo_of({"priority": 3}, {}))["class"] == "real_time"  # the default, with the priority
    async with http.post("/v1/completions", json={"prompt": "Hi", "slo": {"class": "real_time"}}) as r:
        assert r.status == 400 and "slo.ttft_ms must be > 0" in (await r.json())["error"]["message"]
    async with http.post("/v1/completions", json={"prompt": "Hi"}, headers={"x-slo-class": "urgent"}) as r:
        assert r.status == 400 and "x-slo-class" in (await r.json())["error"]["message"]


async def test_ignored_fields_are_named_and_bad_bodies_are_400(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1, "user": "u1", "frob": 1}) as r:
        assert r.status == 200 and r.headers["x-llmserve-ignored"] == "user,frob"
    async with http.post("/v1/completions", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and "not valid JSON" in (await r.json())["error"]["message"]
    async with http.post("/v1/completions", json=["a list"]) as r:
        assert r.status == 400 and "JSON object" in (await r.json())["error"]["message"]
    async with http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}) as r:
        assert r.status == 400 and "text only" in (await r.json())["error"]["message"]
    async with http.get("/v1/nothing-here") as r:
        assert r.status == 404 and "error" in await r.json()


async def test_a_client_that_disconnects_mid_stream_frees_its_request(gateway: ServiceServer, backend: Backend) -> None:
    async with aiohttp.ClientSession(http_base(gateway)) as session:
        body = {"prompt": "Count to a thousand:", "max_tokens": 400, "ignore_eos": True, "stream": True}
        response = await session.post("/v1/completions", json=body)
        await response.content.readline()
        response.close()  # drops the connection
    assert await backend.idle()
    assert len(gateway.service.registry) == 0  # type: ignore[union-attr]


async def test_health_models_and_the_picker_gauges(http: aiohttp.ClientSession, gateway: ServiceServer) -> None:
    async with http.get("/health") as r:
        assert r.status == 200
    async with http.get("/v1/models") as r:
        models = await r.json()
    assert models["data"][0]["id"] == model_name(gateway) and models["data"][0]["max_model_len"] == 8192
    body = {"prompt": "Count to a thousand:", "max_tokens": 300, "ignore_eos": True, "stream": True}
    async with http.post("/v1/completions", json=body) as running:
        await running.content.readline()
        await asyncio.sleep(0.5)  # more than the 0.2 s refresh
        async with http.get("/metrics") as r:
            text = await r.text()
    samples = {line.split("{")[0]: line for line in text.splitlines() if line.startswith("vllm:")}
    assert float(samples["vllm:num_requests_running"].split()[-1]) >= 1
    assert 0 < float(samples["vllm:kv_cache_usage_perc"].split()[-1]) <= 1
    assert float(samples["vllm:num_requests_waiting"].split()[-1]) >= 0
    assert 'block_size="16"' in samples["vllm:cache_config_info"] and 'num_gpu_blocks="256"' in samples["vllm:cache_config_info"]
    assert "llmserve_requests_total" in text  # beside the llmserve metrics
