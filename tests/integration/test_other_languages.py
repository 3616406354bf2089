"""The TypeScript (Node) and Go examples under clients/, with their generated stubs, against a live
in-process stack: each streams a completion under a real-time SLO, cancels one request by id and
another by cancelling the call, and the stack ends idle. Skipped only where node (or a Go
toolchain) is truly absent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from llmserve.runtime.server import ServiceServer
from tests.clients import TS, go_build, npm_tool
from tests.integration.inprocess import Backend, running_backend

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as backend:
        yield backend


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(backend: Backend) -> ServiceServer:
    return await backend.gateway(http_address="")


async def _run(argv: list[str], cwd: Path) -> list[dict]:
    process = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, out.decode() + err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


def _check(steps: list[dict], finish_prefix: str) -> None:
    by_step = {s["step"]: s for s in steps}
    stream = by_step["stream"]
    assert stream["finish"] == f"{finish_prefix}LENGTH" and int(stream["completionTokens"]) == 12 and stream["text"]
    assert stream["sloClass"].endswith("REAL_TIME")
    assert by_step["cancel"]["cancelled"] is True and by_step["cancel"]["finish"] == f"{finish_prefix}CANCELLED"
    assert by_step["abort"]["aborted"] in ("canceled", True)


async def test_the_node_example(gateway: ServiceServer, backend: Backend) -> None:
    tsx = npm_tool("tsx")
    _check(await _run([tsx, "example.ts", gateway.address], TS), finish_prefix="")
    assert await backend.idle()


async def test_the_go_example(gateway: ServiceServer, backend: Backend, tmp_path: Path) -> None:
    binary = tmp_path / "example"
    await asyncio.to_thread(go_build, "example", binary, tmp_path)
    _check(await _run([str(binary), gateway.address], tmp_path), finish_prefix="FINISH_REASON_")
    assert await backend.idle()
