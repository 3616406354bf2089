"""How the worker's OpenMP threads wait between parallel regions. libgomp reads these variables
once, when torch loads it, so they are set before `import torch`: the worker's `__main__` sets them
as defaults (a caller's environment wins), and `benchmarks/bench_stack.py` gives every engine the
same ones. This module imports nothing heavy.

Measured on the 2-core machine (issue 10, docs/benchmarks.md): a forward pass is a few hundred
parallel regions (each op) separated by tens of microseconds of Python dispatching the next op.
With no spinning (OMP_WAIT_POLICY=PASSIVE alone) the second thread goes to sleep after every op
and each op pays its wake-up, the longer when the gateway or scheduler holds the other core: the
stack delivered 0.56-0.65x of the same engine in a process with libgomp's default spin. Spinning
without bound (ACTIVE) makes the waiting thread burn the core that the thread it waits for, or
another service, needs (5-10x slower steps). A short spin bridges the gaps inside a forward pass
and still sleeps between steps; how short is a trade against other processes on the cores.
Several workers on one machine, each with torch's thread per core, run more OpenMP threads than
there are cores, and then even this short spin holds a core another worker's thread waits for
(two workers on 2 cores: half the throughput, issue 11): `llmserve up` gives several workers a
share of the cores each (`llmserve_stack/local_machine.py`).
"""

from __future__ import annotations

from collections.abc import MutableMapping

OPENMP_DEFAULTS: dict[str, str] = {
    # Sleep, not spin, once the spin below is over; and with more OpenMP threads than cores, spin
    # only 100 iterations.
    "OMP_WAIT_POLICY": "PASSIVE",
    # Spin iterations before sleeping (libgomp's own estimate: ~100,000 a millisecond): enough for
    # the gap between two ops. Measured (docs/benchmarks.md): 3,000 gives the stack what 20,000
    # and 200,000 give, and where another process keeps a core busy a spinning thread loses its
    # turn on that core more the longer it spins (a decode step at 2 threads beside a busy core:
    # 53 ms passive, 90 ms at 3,000, 219 ms at 20,000; 42, 36 and 35 ms with the cores free).
    "GOMP_SPINCOUNT": "3000",
}


def set_openmp_defaults(environ: MutableMapping[str, str]) -> None:
    """Sets each of OPENMP_DEFAULTS that `environ` does not set already."""
    for name, value in OPENMP_DEFAULTS.items():
        environ.setdefault(name, value)
