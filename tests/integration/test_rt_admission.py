"""Opt-in RT admission control (issue 9's target 5) over real services on 127.0.0.1:0: a
real-time request whose TTFT the scheduler's cost model predicts past its SLO is refused with
RESOURCE_EXHAUSTED, and the gateway relays the scheduler's message (predicted TTFT and SLO)
unchanged, on gRPC and as HTTP 429 on the OpenAI front; other classes are served as before."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
import pytest_asyncio

from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.integration.inprocess import Backend, http_base, running_backend

pytestmark = pytest.mark.asyncio(loop_scope="module")
# The scheduler's message, as the gateway relays it (behind its "scheduler: " origin).
REJECTED = re.compile(r"scheduler: predicted TTFT (\d+) ms exceeds the request's 1000 ms SLO: retry later or elsewhere")


def _overrun_s(predicted_ttft_ms: int) -> str:
    """The Retry-After a client gets: by how much the predicted TTFT passes the 1 s SLO, in whole
    seconds rounded up (the message's TTFT is rounded to the millisecond: allow for that)."""
    return str(max(1, math.ceil((predicted_ttft_ms - 1000 - 0.5) / 1000)))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:
    # A prior that prices each prompt token at 10 s: any prompt misses a 1 s TTFT, deterministically
    # (the online model refits from measured steps only after some have run).
    prior = tmp_path_factory.mktemp("cost") / "slow_prefill.json"
    prior.write_text(json.dumps({"a_s": 0.01, "b_s_per_prefill_token": 10.0, "c_s_per_decode_seq": 0.001,
                                 "d_s_per_kv_token": 0.0}))
    async with running_backend(policy="tempo", cost_model=str(prior), rt_admission_control=True) as backend:
        yield backend


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(backend: Backend) -> ServiceServer:
    return await backend.gateway()


async def test_grpc_relays_resource_exhausted_with_the_predicted_ttft(gateway: ServiceServer) -> None:
    rt = common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=1000.0, tpot_ms=200.0)
    async with open_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.Generate(gateway_pb2.GenerateRequest(text="Hello there", slo=rt)):
                pass
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        match = REJECTED.fullmatch(refused.value.details() or "")
        assert match, refused.value.details()
        assert int(match.group(1)) >= 10_000  # at least one prompt token at 10 s
        # The scheduler's retry-after (the predicted overrun), not the gateway's default second.
        trailing = dict(refused.value.trailing_metadata() or ())
        assert trailing.get("retry-after") == _overrun_s(int(match.group(1))), trailing
        be = common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT)
        served = [r async for r in stub.Generate(gateway_pb2.GenerateRequest(
            text="Hello there", slo=be, sampling=common_pb2.SamplingParams(max_tokens=2)))]
        assert served[-1].usage.completion_tokens >= 1


async def test_http_answers_429_with_the_same_message(gateway: ServiceServer, backend: Backend) -> None:
    body = {"prompt": "Hello there", "max_tokens": 4, "slo": {"class": "real_time", "ttft_ms": 1000, "tpot_ms": 200}}
    async with aiohttp.ClientSession(http_base(gateway)) as http:
        async with http.post("/v1/completions", json=body) as refused:
            assert refused.status == 429
            error = (await refused.json())["error"]
            retry_after = refused.headers.get("Retry-After")
    match = REJECTED.fullmatch(error["message"])
    assert match, error
    assert retry_after == _overrun_s(int(match.group(1)))
    assert error["type"] == "rate_limit_error"
    assert await backend.idle()
