"""llmserve_stack.supervisor: a service that dies before it is healthy fails the start at once
(not after its ready timeout), `wait_exit` returns the service that exited on its own, and
`llmserve up`'s wait ends on that event or on a stop signal."""

from __future__ import annotations

import asyncio
import time

import pytest

from kvstore_svc.config import KvStoreConfig
from llmserve.settings import values_env
from llmserve_stack.cli import _serve_until_stopped
from llmserve_stack.launch import ServiceSpec, free_port
from llmserve_stack.supervisor import Stack


def _kvstore(name: str = "kvstore") -> ServiceSpec:
    address = f"127.0.0.1:{free_port()}"
    return ServiceSpec(name, "kvstore_svc", address, values_env(KvStoreConfig, address=address, log_format="text"),
                       ready_timeout_s=60.0)


async def test_a_service_that_dies_at_start_fails_the_start_at_once() -> None:
    stack = Stack([ServiceSpec("broken", "no_such_module_anywhere", f"127.0.0.1:{free_port()}", ready_timeout_s=120.0)])
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="broken exited with code 1 before it was healthy"):
        await stack.start()
    assert time.monotonic() - started < 30.0
    assert stack.running == []


async def test_wait_exit_returns_the_service_that_exited() -> None:
    async with Stack([_kvstore("a"), _kvstore("b")]) as stack:
        waiting = asyncio.create_task(stack.wait_exit())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        stack.running[1].process.kill()
        exited = await asyncio.wait_for(waiting, 10.0)
        assert exited.spec.name == "b" and exited.exited.result() == -9
        assert stack.running[0].process.poll() is None


async def test_up_waits_for_a_stop_or_an_exit() -> None:
    async with Stack([_kvstore()]) as stack:
        stop = asyncio.Event()
        stop_wait = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(_serve_until_stopped(stack, stop_wait))
        await asyncio.sleep(0.2)
        assert not serving.done()
        stop.set()
        assert await asyncio.wait_for(serving, 10.0) == 0
        stop_wait = asyncio.create_task(asyncio.Event().wait())
        serving = asyncio.create_task(_serve_until_stopped(stack, stop_wait))
        stack.running[0].process.terminate()
        assert await asyncio.wait_for(serving, 10.0) == 1
        assert stop_wait.cancelled() or stop_wait.done()
