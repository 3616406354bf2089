"""llmserve_stack.supervisor: a service that dies before it is healthy fails the start at once
(not after its ready timeout), `wait_exit` returns the service that exited on its own, a service
that exits on its own is restarted on its address while the others keep running, repeated fast
failures give up, and `llmserve up`'s wait ends on a stop signal or on that give-up."""

from __future__ import annotations

import asyncio
import time

import pytest

from kvstore_svc.config import KvStoreConfig
from llmserve.runtime.channel import wait_healthy
from llmserve.settings import values_env
from llmserve_stack.cli import _serve_until_stopped
from llmserve_stack.launch import ServiceSpec, free_port
from llmserve_stack.restarts import RestartPolicy
from llmserve_stack.supervisor import RunningService, Stack

FAST = RestartPolicy(max_restarts=2, window_s=120.0, first_backoff_s=0.05, max_backoff_s=0.2)


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


async def test_up_waits_for_a_stop_or_a_give_up() -> None:
    async with Stack([_kvstore()]) as stack:
        stop = asyncio.Event()
        stop_wait = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(_serve_until_stopped(stack, stop_wait, FAST))
        await asyncio.sleep(0.2)
        assert not serving.done()
        stop.set()
        assert await asyncio.wait_for(serving, 10.0) == 0
        stop_wait = asyncio.create_task(asyncio.Event().wait())
        serving = asyncio.create_task(_serve_until_stopped(stack, stop_wait, RestartPolicy(max_restarts=0)))
        stack.running[0].process.terminate()
        assert await asyncio.wait_for(serving, 10.0) == 1
        assert stop_wait.cancelled() or stop_wait.done()


async def _back(stack: Stack, old: RunningService) -> RunningService:
    """The process that replaced `old` in the stack, once it is healthy."""
    for _ in range(600):
        service = next(s for s in stack.running if s.spec.name == old.spec.name)
        if service is not old and not service.exited.done():
            await wait_healthy(service.spec.address, timeout_s=60.0)
            return service
        await asyncio.sleep(0.05)
    raise AssertionError(f"{old.spec.name} was not restarted")


async def test_a_service_that_exits_is_restarted_on_its_address_and_the_others_keep_running() -> None:
    async with Stack([_kvstore("a"), _kvstore("b")]) as stack:
        a, b = stack.running
        stop = asyncio.get_running_loop().create_future()
        supervising = asyncio.create_task(stack.supervise(stop, FAST))
        b.process.kill()
        again = await _back(stack, b)
        assert again.spec.address == b.spec.address and again.process.pid != b.process.pid
        assert stack.running[0] is a and a.process.poll() is None  # untouched
        # Killed again (still inside the budget): back again.
        again.process.kill()
        third = await _back(stack, again)
        assert third.process.pid not in (b.process.pid, again.process.pid)
        stop.set_result(None)
        assert await asyncio.wait_for(supervising, 10.0) == 0
        processes = [s.process for s in stack.running]
    assert all(p.poll() is not None for p in processes)  # stop() left nothing behind


async def test_repeated_fast_failures_give_up() -> None:
    async with Stack([_kvstore()]) as stack:
        stop = asyncio.get_running_loop().create_future()
        supervising = asyncio.create_task(stack.supervise(stop, FAST))
        service = stack.running[0]
        for _ in range(FAST.max_restarts):
            service.process.kill()
            service = await _back(stack, service)
        service.process.kill()  # one exit more than the budget, inside its window
        assert await asyncio.wait_for(supervising, 10.0) == 1
        assert stack.running[0] is service  # not restarted


async def test_a_stop_during_the_backoff_ends_supervision_without_a_restart() -> None:
    slow = RestartPolicy(max_restarts=3, first_backoff_s=30.0, max_backoff_s=30.0)
    async with Stack([_kvstore()]) as stack:
        stop = asyncio.get_running_loop().create_future()
        supervising = asyncio.create_task(stack.supervise(stop, slow))
        dead = stack.running[0]
        dead.process.kill()
        await asyncio.wait_for(asyncio.shield(dead.exited), 10.0)
        await asyncio.sleep(0.2)
        stop.set_result(None)
        assert await asyncio.wait_for(supervising, 5.0) == 0
        assert stack.running[0] is dead
