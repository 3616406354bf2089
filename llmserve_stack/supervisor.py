"""Runs a stack of service processes: starts them in order, waits for each to be healthy, tells
when one exits on its own, and stops all of them (reverse order, SIGTERM then SIGKILL) on request,
leaving no process behind. Exits are events (a watcher thread per process resolves a future), not
polls."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from llmserve.runtime.channel import wait_healthy
from llmserve_stack.die_with_parent import command_dying_with_parent
from llmserve_stack.launch import ServiceSpec

logger = logging.getLogger(__name__)


@dataclass
class RunningService:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    exited: asyncio.Future[int]  # the exit code, once the process has exited (for any reason)


def _watch_exit(process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future of the running loop that gets `process`'s exit code when it exits. A thread per
    process blocks in wait(): the executor of asyncio.to_thread has too few threads to hold one per
    service of a large stack."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()

    def resolve(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    def wait() -> None:
        code = process.wait()
        try:
            loop.call_soon_threadsafe(resolve, code)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=wait, name=f"exit-watch-{process.pid}", daemon=True).start()
    return exited


class Stack:
    """The processes of one stack. Use `async with Stack(specs) as stack:`."""

    def __init__(self, specs: Sequence[ServiceSpec], log_dir: str | None = None, stop_grace_s: float = 15.0) -> None:
        self.specs = list(specs)
        self.log_dir = log_dir
        self.stop_grace_s = stop_grace_s
        self.running: list[RunningService] = []

    async def start(self) -> None:
        """Starts each service and waits until it is SERVING before starting the next one."""
        try:
            for spec in self.specs:
                self._spawn(spec)
                await self._wait_ready(self.running[-1])
        except BaseException:
            await self.stop()
            raise

    def _spawn(self, spec: ServiceSpec) -> None:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        stdout: int | object = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            stdout = open(os.path.join(self.log_dir, f"{spec.name}.log"), "ab")  # noqa: SIM115 (lives with the process)
        # No preexec_fn: it would fork this gRPC-running process (die_with_parent says why not).
        process = subprocess.Popen(
            command_dying_with_parent(spec.argv()),
            env=env,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT if self.log_dir else None,
        )
        self.running.append(RunningService(spec, process, _watch_exit(process)))
        logger.info("started %s (pid %d) on %s", spec.name, process.pid, spec.address)

    async def _wait_ready(self, service: RunningService) -> None:
        healthy = asyncio.create_task(wait_healthy(service.spec.address, timeout_s=service.spec.ready_timeout_s,
                                                   tls=service.spec.probe_tls))
        await asyncio.wait({healthy, service.exited}, return_when=asyncio.FIRST_COMPLETED)
        if not healthy.done():
            healthy.cancel()
            await asyncio.gather(healthy, return_exceptions=True)
            raise RuntimeError(
                f"{service.spec.name} exited with code {service.exited.result()} before it was healthy"
                + (f" (log: {self.log_dir}/{service.spec.name}.log)" if self.log_dir else "")
            )
        await healthy

    async def wait_exit(self) -> RunningService:
        """Waits until a running service exits on its own and returns it (the caller decides: stop
        the stack, or restart that service)."""
        if not self.running:
            raise RuntimeError("no service is running")
        watched = {service.exited: service for service in self.running}
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        return next(watched[future] for future in watched if future in done)

    async def stop(self) -> None:
        """Stops services in reverse start order: SIGTERM (they drain), then SIGKILL after the grace."""
        for service in reversed(self.running):
            if not service.exited.done():
                service.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(service.exited), self.stop_grace_s)
                except asyncio.TimeoutError:
                    logger.warning("%s did not stop in %.0fs: killing it", service.spec.name, self.stop_grace_s)
                    service.process.kill()
                    await service.exited
        self.running.clear()

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
