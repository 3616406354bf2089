"""What a local stack (`llmserve up`) decides for the one machine all its processes share, which a
deployment (compose, Kubernetes) leaves to each worker's own host or container."""

from __future__ import annotations

import os


def worker_threads(num_workers: int, requested: int, cpus: int) -> int:
    """Torch threads per worker (0: torch's default) for `num_workers` workers on `cpus` CPUs,
    `requested` being `--worker-threads` (0: choose).

    Workers on one machine share its cores. Torch's default gives each worker a thread per core,
    so several of them oversubscribe the cores, and each worker's OpenMP team spins briefly between
    ops (`worker_svc/openmp.py`) on a core another worker's thread is waiting for: in the
    200-stream soak on 2 cores, two workers of two threads each served 13.7 requests/s (21.3
    without the spin), of one thread each 29.1 (issue 11, docs/reliability.md). So several
    workers share the CPUs out, at least one thread each; one worker keeps torch's default, which
    issue 10 measured."""
    if requested or num_workers == 1:
        return requested
    return max(1, cpus // num_workers)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the machine's count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
