"""Runs a stack of service processes: starts them in order, waits for each to be healthy, and
stops all of them (reverse order, SIGTERM then SIGKILL) on request, leaving no process behind."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from llmserve.runtime.channel import wait_healthy
from llmserve_stack.launch import ServiceSpec

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the supervisor dies, so even a
    SIGKILLed `llmserve up` leaves no orphaned service behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: best effort
        pass


@dataclass
class RunningService:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]


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
        process = subprocess.Popen(
            spec.argv(),
            env=env,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT if self.log_dir else None,
            preexec_fn=_die_with_parent,
        )
        self.running.append(RunningService(spec, process))
        logger.info("started %s (pid %d) on %s", spec.name, process.pid, spec.address)

    async def _wait_ready(self, service: RunningService) -> None:
        wait = asyncio.create_task(wait_healthy(service.spec.address, timeout_s=service.spec.ready_timeout_s))
        while not wait.done():
            if service.process.poll() is not None:
                wait.cancel()
                raise RuntimeError(
                    f"{service.spec.name} exited with code {service.process.returncode} before it was healthy"
                    + (f" (log: {self.log_dir}/{service.spec.name}.log)" if self.log_dir else "")
                )
            await asyncio.sleep(0.1)
        await wait

    def failed_service(self) -> RunningService | None:
        """The first service that exited on its own, if any."""
        for service in self.running:
            if service.process.poll() is not None:
                return service
        return None

    async def stop(self) -> None:
        """Stops services in reverse start order: SIGTERM (they drain), then SIGKILL after the grace."""
        for service in reversed(self.running):
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.to_thread(service.process.wait), self.stop_grace_s)
                except asyncio.TimeoutError:
                    logger.warning("%s did not stop in %.0fs: killing it", service.spec.name, self.stop_grace_s)
                    service.process.kill()
                    await asyncio.to_thread(service.process.wait)
        self.running.clear()

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
