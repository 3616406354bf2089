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
