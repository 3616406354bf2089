"""The README's first requests, run as written against a live in-process stack (its addresses
swapped for this stack's ports): the curl lines, the `openai` snippet and the Python SDK snippet."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from llmserve.runtime.server import ServiceServer
from tests.integration.inprocess import Backend, start_backend

pytestmark = pytest.mark.asyncio(loop_scope="module")
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway() -> AsyncIterator[ServiceServer]:
    backend: Backend = await start_backend()
    try:
        yield await backend.gateway()
    finally:
        await backend.stop()


def _local(text: str, gateway: ServiceServer) -> str:
    http_port = gateway.service.http_port  # type: ignore[union-attr]
    return text.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}").replace("127.0.0.1:50051", gateway.address)


async def _run(argv: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_curl_requests(gateway: ServiceServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    (block,) = [b for b in blocks("bash") if "curl -s" in b]
    commands = [c for c in block.replace("\\\n", " ").splitlines() if c.strip().startswith("curl")]
    assert len(commands) == 2
    completion = await _run(shlex.split(_local(commands[0], gateway)))
    assert '"finish_reason":"length"' in completion and '"completion_tokens":16' in completion
    streamed = await _run(shlex.split(_local(commands[1], gateway)))
    assert streamed.startswith("data: {") and streamed.rstrip().endswith("data: [DONE]")


async def test_the_python_snippets(gateway: ServiceServer) -> None:
    snippets = blocks("python")
    openai_snippet = next(b for b in snippets if "from openai import OpenAI" in b)
    sdk_snippet = next(b for b in snippets if "GatewayClient(" in b)
    assert (await _run([sys.executable, "-c", _local(openai_snippet, gateway)])).strip()
    out = await _run([sys.executable, "-c", _local(sdk_snippet, gateway)])
    assert "model_name" in out and "scheduling_policy" in out


def _grpcurl_commands() -> list[list[str]]:
    (block,) = [b for b in blocks("bash") if "grpcurl " in b]
    return [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.strip().startswith("grpcurl")]


def _reflect_and_call(address: str, describe: str, method_path: str, body: str) -> tuple[list[str], list[str], list[dict]]:
    """What grpcurl does with the README's two lines, with nothing but server reflection: the
    services listed, `describe` resolved to its methods, the JSON body parsed into the request type
    found by reflection (proto3 JSON mapping, as grpcurl's), the call made with messages built from
    those descriptors (a pool of its own: not the generated stubs), the responses as JSON."""
    import grpc
    from google.protobuf import json_format, message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = DescriptorPool(database)
        described = pool.FindServiceByName(describe)
        service_name, _, method_name = method_path.rpartition("/")
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        assert method.server_streaming
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_stream(f"/{service_name}/{method_name}", request_serializer=request_type.SerializeToString,
                                    response_deserializer=response_type.FromString)
        responses = [json_format.MessageToDict(r) for r in call(json_format.Parse(body, request_type()), timeout=120)]
    return services, [m.name for m in described.methods], responses


async def test_the_grpcurl_requests(gateway: ServiceServer) -> None:
    describe, generate = _grpcurl_commands()
    if shutil.which("grpcurl") is not None:  # as printed, where grpcurl is installed
        assert "rpc Generate" in await _run(shlex.split(_local(shlex.join(describe), gateway)))
        assert '"finishReason"' in await _run(shlex.split(_local(shlex.join(generate), gateway)))
    # And the same protocol steps with reflection alone (this machine has no grpcurl binary).
    assert describe[:2] == ["grpcurl", "-plaintext"] and generate[:3] == ["grpcurl", "-plaintext", "-d"]
    address = _local(describe[2], gateway)
    assert _local(generate[4], gateway) == address
    services, methods, responses = await asyncio.to_thread(_reflect_and_call, address, describe[4], generate[5],
                                                           generate[3])
    assert describe[4] in services and "grpc.health.v1.Health" in services
    assert {"Generate", "Cancel", "GetModelInfo"} <= set(methods)
    text = "".join(r.get("text", "") for r in responses)
    final = responses[-1]
    assert text.strip(), responses
    assert final.get("finishReason") == "FINISH_REASON_LENGTH", final
    assert final["usage"]["completionTokens"] == 16, final
