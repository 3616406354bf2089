"""The one thread that does the worker's torch work: loading, warm-up, calibration and every
step's forward pass.

Why one thread and not `asyncio.to_thread`: the default executor hands each call to whichever of
its threads is free, and it starts a new one when the last is not yet marked idle, which is the
case when the loop submits step N+1 as soon as step N's result is set. Each thread that enters an
OpenMP parallel region gets its own team of OpenMP threads (libgomp keeps one per calling thread)
and its own malloc arena. Measured in the stack's worker (issue 10, `benchmarks/stack_cpu_share.py`):
the forward pass alternated between two executor threads, four threads did the work of two, and
the worker took 60-300 page faults a step where the in-process engine took none. One thread keeps
one OpenMP team, one arena and the thread-local caches warm, and the warm-up warms the thread that
then serves.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

THREAD_NAME = "forward"


class ForwardThread:
    """Runs callables one at a time on a single long-lived thread, awaitably."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)

    async def run(self, fn: Callable[[], T]) -> T:
        """Runs `fn` on the thread with the caller's context variables (as `asyncio.to_thread`
        does: the step's tracing span is current inside)."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Hands `fn` to the thread now, not when a task wrapping `run` first runs (the loop would
        first run every callback already ready, e.g. gRPC's write of the previous step's result);
        the future is the event loop's, done when `fn` is (with the caller's context variables, as
        `run`). What the hand-off still costs in the stack (`to_thread`, 1.6-1.9% of the worker's
        time at 32 streams on the AMX Xeon, the same before this) is mostly the thread waiting for
        the GIL while the loop runs its own Python: docs/benchmarks.md, issue 10."""
        call = functools.partial(contextvars.copy_context().run, fn)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Lets the running call finish, drops queued ones; the thread exits after it."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def timed(fn: Callable[..., T], *args: object) -> tuple[T, int, int]:
    """`fn(*args)` and when it started and ended (`time.perf_counter_ns()`, one clock for every
    thread): run on the thread, the caller's times before and after say what the hand-off took."""
    start = time.perf_counter_ns()
    result = fn(*args)
    return result, start, time.perf_counter_ns()
