"""Bounds on what the gateway accepts: strings and repeated fields, the prompt byte cap checked
before tokenizing, the transport's limit, HTTP body caps, and tokenization off the event loop (a
huge prompt stalls no stream and no health check)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import gateway_pb2_grpc
from tests.integration.gateway_security.calls import StallWatch, req, status_of
from tests.integration.inprocess import Backend, http_base

pytestmark = pytest.mark.asyncio(loop_scope="package")


# ---- input hardening -----------------------------------------------------------------------------------
async def test_bounds_on_strings_and_repeated_fields(secured: ServiceServer) -> None:
    cases = [
        (req(stop_token_ids=[1] * 10_000), "sampling.stop_token_ids has 10000 ids: send at most 256"),
        (req(tenant="tenant-a\x1b[31m"), "tenant"),
        (req(prompt=[1] * 10_000), "prompt has 10000 tokens"),
    ]
    deps = req()
    deps.workflow.workflow_id = "wf"
    deps.workflow.depends_on.extend(["x"] * 10_000)
    cases.append((deps, "workflow.depends_on has 10000 ids: send at most 256"))
    async with open_channel(secured.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for request, fragment in cases:
            err = await status_of(stub, request)
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED), err
            assert fragment in err.details(), err.details()


async def test_huge_prompts_are_refused_cheaply_and_stall_nothing(backend: Backend) -> None:
    gateway = await backend.gateway()
    async with open_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        # Over the byte cap, under the transport's: INVALID_ARGUMENT naming the cap, no tokenizing.
        err = await status_of(stub, req("x" * (2 * 2**20)), ())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "over 1048576 bytes" in err.details()
        # Over the transport's limit: refused before it is parsed.
        err = await status_of(stub, req("x" * (8 * 2**20)), ())
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # (The gateway's memory under rejected 8-24 MB prompts is measured in its own process:
        # tests/e2e/test_gateway_memory.py.)

        # Prompts under the cap that take the tokenizer ~0.5 s each: four at once, while a stream
        # runs and health is checked. Tokenized on the loop they would stall both for seconds.
        big = "The quick brown fox jumps over the lazy dog. " * (2**20 // 46)
        stream = stub.Generate(req("Count:", max_tokens=200, ignore_eos=True))
        await stream.read()
        watch = StallWatch(stream, health)
        watch.start()
        t0 = time.perf_counter()
        refused = await asyncio.gather(*(status_of(stub, req(big), ()) for _ in range(4)))
        tokenizing_s = time.perf_counter() - t0
        await watch.stop()
    assert all(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt has" in e.details() for e in refused)
    assert tokenizing_s > 0.5  # the prompts did cost the tokenizer real time ...
    # ... off the loop: tokenized on it, the four would block it (and every stream and health
    # check) for the whole time, one after another. The worker shares this process and these two
    # cores with the tokenizer, so a stream slows down; it must not stop.
    assert max(watch.lags) < 0.5, f"the event loop stalled {max(watch.lags):.2f} s over {tokenizing_s:.2f} s of tokenizing"
    assert max(watch.health_s) < 0.5, f"health stalled {max(watch.health_s):.2f} s over {tokenizing_s:.2f} s of tokenizing"
    assert watch.gaps and max(watch.gaps) < 0.75 * tokenizing_s, f"a stream stalled {max(watch.gaps):.2f} s of {tokenizing_s:.2f} s"


async def test_http_body_and_prompt_caps(backend: Backend) -> None:
    gateway = await backend.gateway(max_prompt_bytes=4096)
    async with aiohttp.ClientSession(http_base(gateway)) as http:
        async with http.post("/v1/completions", json={"prompt": "x" * 5000}) as r:
            assert r.status == 400 and "over 4096 bytes" in (await r.json())["error"]["message"]
        async with http.post("/v1/completions", data=b"{" + b" " * (4 * 2**20) + b"}",
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413 and "error" in await r.json()

