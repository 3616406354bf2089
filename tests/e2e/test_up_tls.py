"""`llmserve up --tls`, the real command, end to end: it makes a throwaway CA and a certificate per
service, every service starts over TLS (the supervisor's health checks present its own identity),
a client holding only the printed CA streams a completion (so does `llmserve generate --tls-ca`)
while plaintext is refused, every
internal port refuses a caller without the cluster identity, only the gateway binds `--host`, and
on SIGTERM the stack stops and the CA's folder, keys included, is gone."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.tls import Tls
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from llmserve_stack.launch import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def _line_matching(stream: asyncio.StreamReader, pattern: str, seen: list[str], timeout_s: float) -> re.Match:
    async def read() -> re.Match:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"llmserve up ended before printing {pattern!r}: {''.join(seen)}")
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    return await asyncio.wait_for(read(), timeout_s)


async def _health(address: str, tls: Tls | None) -> str:
    async with open_channel(address, tls=tls) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def test_llmserve_up_tls(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMSERVE_", "OTEL_"))}
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmserve_stack", "up", "--tls", "--port", str(port), "--workers", "1",
        "--load-format", "dummy", "--num-kv-blocks", "64", "--log-dir", str(tmp_path), "--log-format", "text",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert up.stdout is not None and up.stderr is not None
    printed: list[str] = []
    try:
        ca_file = Path((await _line_matching(up.stderr, r"throwaway CA: (\S+)", printed, 60)).group(1))
        gateway = (await _line_matching(up.stdout, r"gateway listening on (\S+)", printed, 600)).group(1)
        assert gateway == f"127.0.0.1:{port}"
        public = Tls.from_files(str(ca_file))

        request = gateway_pb2.GenerateRequest(
            text="The capital of France is", sampling=common_pb2.SamplingParams(max_tokens=4, temperature=0.0,
                                                                              ignore_eos=True),
            slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=60_000, tpot_ms=10_000))
        async with open_channel(gateway, tls=public) as channel:
            chunks = [c async for c in gateway_pb2_grpc.GatewayStub(channel).Generate(request, timeout=120)]
        assert sum(len(c.token_ids) for c in chunks) == 4
        async with open_channel(gateway) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in gateway_pb2_grpc.GatewayStub(channel).Generate(request, timeout=10):
                    pass
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        generate = [sys.executable, "-m", "llmserve_stack", "generate", "--address", gateway, "--max-tokens", "3", "Hi"]
        with_ca = await asyncio.create_subprocess_exec(*generate, "--tls-ca", str(ca_file), env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(with_ca.communicate(), 120)
        assert with_ca.returncode == 0, err.decode()
        without = await asyncio.create_subprocess_exec(*generate, env=env, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(without.communicate(), 120)
        assert without.returncode == 2 and "UNAVAILABLE" in err.decode()

        for name in ("kvstore", "worker-0", "scheduler"):
            log = (tmp_path / f"{name}.log").read_text()
            address = re.search(r"serving on (\d+\.\d+\.\d+\.\d+:\d+)", log).group(1)  # type: ignore[union-attr]
            assert address.startswith("127.0.0.1:"), (name, address)
            assert await _health(address, None) == "UNAVAILABLE", name  # plaintext
            assert await _health(address, public) == "UNAVAILABLE", name  # TLS, but no identity
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(up.wait(), 60)
    assert code == 0, "".join(printed) + (await up.stderr.read()).decode()
    assert not ca_file.parent.exists()
