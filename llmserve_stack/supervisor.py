"""Runs a stack of service processes: starts them in order, waits for each to be healthy, restarts
one that exits on its own (`supervise`: same command, same address, with backoff; it gives up
after repeated fast failures, `llmserve_stack.restarts`), and stops all of them (reverse order,
SIGTERM then SIGKILL) on request, leaving no process behind. Exits are events (a watcher thread
per process resolves a future), not polls. The other services keep running while one restarts:
each of them rides out a peer's absence (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmserve.runtime.channel import wait_healthy
from llmserve_stack.die_with_parent import command_dying_with_parent
from llmserve_stack.launch import ServiceSpec
from llmserve_stack.restarts import RestartBudget, RestartPolicy

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
                self.running.append(self._spawn(spec))
                await self._wait_ready(self.running[-1])
        except BaseException:
            await self.stop()
            raise

    def _spawn(self, spec: ServiceSpec) -> RunningService:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        log = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            # Appended to: a restarted service's log goes on in the same file.
            log = open(os.path.join(self.log_dir, f"{spec.name}.log"), "ab")  # noqa: SIM115 (closed below)
        # No preexec_fn: it would fork this gRPC-running process (die_with_parent says why not).
        try:
            process = subprocess.Popen(
                command_dying_with_parent(spec.argv()),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
            )
        finally:
            if log is not None:
                log.close()  # the child has its own copy
        logger.info("started %s (pid %d) on %s", spec.name, process.pid, spec.address)
        return RunningService(spec, process, _watch_exit(process))

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

    async def supervise(self, stop: asyncio.Future[object], policy: RestartPolicy,
                        clock: Callable[[], float] = time.monotonic) -> int:
        """Restarts the services that exit on their own until `stop` is done (returns 0), or until
        one fails too often (`policy`; returns 1, the stack is left for the caller to stop). Each
        dead service restarts in its own task, so a scheduler restarting (it waits for every
        worker) never waits for a worker that is restarting too."""
        budgets = {spec.name: RestartBudget(policy) for spec in self.specs}
        restarting: dict[str, asyncio.Task[bool]] = {}
        try:
            while True:
                watched = {s.exited: s for s in self.running if s.spec.name not in restarting}
                await asyncio.wait({stop, *watched, *restarting.values()}, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    return 0
                for name, task in list(restarting.items()):
                    if task.done():
                        del restarting[name]
                        if not task.result():
                            return 1
                for exited, service in watched.items():
                    if exited.done():
                        name = service.spec.name
                        restarting[name] = asyncio.create_task(self._restart(service, budgets[name], clock),
                                                               name=f"restart-{name}")
        finally:
            for task in restarting.values():
                task.cancel()
            await asyncio.gather(*restarting.values(), return_exceptions=True)

    async def _restart(self, service: RunningService, budget: RestartBudget, clock: Callable[[], float]) -> bool:
        """Brings one dead service back on its address: True once it is healthy again, False when
        its budget says give up. Replaces it in `running` at once, so `stop` sees the new process."""
        name = service.spec.name
        while True:
            how = describe_exit(service.exited.result())
            delay = budget.on_exit(clock())
            if delay is None:
                logger.error("%s %s (%d exits within %.0fs, more than the %d restarts allowed): giving up", name,
                             how, budget.recent_exits, budget.policy.window_s, budget.policy.max_restarts)
                return False
            logger.warning("%s %s: restarting it in %.1fs on %s", name, how, delay, service.spec.address)
            await asyncio.sleep(delay)
            index = self.running.index(service)
            service = self.running[index] = self._spawn(service.spec)
            try:
                await self._wait_ready(service)
            except (RuntimeError, TimeoutError) as err:
                logger.warning("%s did not come back: %s", name, err)
                if not service.exited.done():
                    service.process.kill()
                    await service.exited
                continue
            logger.warning("%s is back (pid %d) on %s", name, service.process.pid, service.spec.address)
            return True

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


def describe_exit(code: int) -> str:
    """How a process ended, from its Popen return code (negative: killed by that signal)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
