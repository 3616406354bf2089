"""The gateway's memory in its own process under oversized prompts: nine rejected 8-24 MB prompts
(the probe that once took a gateway from 0.36 to 4.2 GB) are refused by the transport's size limit
before they are parsed, round after round, and the gateway's RSS stays flat. No scheduler is
needed: the size limit answers before the request reaches any handler."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest

from gateway.client import build_request
from llmserve.runtime.channel import open_channel
from llmserve.v1 import gateway_pb2_grpc
from llmserve_stack.launch import free_port


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_rejected_huge_prompts_leave_the_gateway_flat() -> None:
    port = free_port()
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "--address", f"127.0.0.1:{port}",
                                "--scheduler-addr", f"127.0.0.1:{free_port()}", "--http-address", ""],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=60)
            stub = gateway_pb2_grpc.GatewayStub(channel)
            rss = []
            for _ in range(4):
                for size_mb in (8, 12, 16, 24, 8, 12, 16, 24, 8):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        async for _ in stub.Generate(build_request("y" * (size_mb * 2**20))):
                            pass
                    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                rss.append(_rss_mb(gateway.pid))
        # The first round overlaps the tokenizer's loading: the later ones are the steady state.
        rounded = [round(r) for r in rss]
        assert max(rss[2:]) - rss[1] < 150 and max(rss) < 1024, f"gateway RSS after each round: {rounded} MB"
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
