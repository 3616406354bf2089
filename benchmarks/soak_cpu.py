"""Where a soak's CPU goes (benchmarks/soak.py): the CPU time (user + system, `/proc/<pid>/stat`)
of every process the stack ran and of the soak's own client, and the load average, so that a run
says whether its completions were bounded by the engine, the other services or the client itself
on a machine whose cores they all share (issue 11: the 200-stream soak on 2 cores)."""

from __future__ import annotations

import os
import resource
from collections import defaultdict

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def stat_cpu_s(path: str) -> float:
    """User + system CPU seconds of a `/proc/.../stat` file (a process's or a thread's)."""
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14 and 15 of stat)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far; None once it is gone."""
    try:
        return stat_cpu_s(f"/proc/{pid}/stat")
    except OSError:
        return None


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuLedger:
    """The last CPU reading of every (service, pid) seen, taken at each sample: a killed process
    keeps its last reading (up to one sample period short), a restart adds a new pid."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], float] = {}
        self._first: dict[tuple[str, int], float] = {}  # the reading when the load began
        self._client_start = own_cpu_s()
        self._client_last = self._client_start
        self.load_average_start = os.getloadavg()
        self.load_average_end = self.load_average_start

    def sample(self, service: str, pid: int) -> None:
        seconds = process_cpu_s(pid)
        if seconds is not None:
            self._first.setdefault((service, pid), seconds)
            self._last[(service, pid)] = seconds

    def finish(self) -> None:
        self._client_last = own_cpu_s()
        self.load_average_end = os.getloadavg()

    def summary(self, wall_s: float) -> dict[str, object]:
        """CPU seconds per service (all its processes; a worker counts as "worker") during the load,
        the client's, and each as a share of one core over `wall_s`."""
        by_service: dict[str, float] = defaultdict(float)
        for (service, pid), last in self._last.items():
            kind = "worker" if service.startswith("worker") else service
            by_service[kind] += last - self._first[(service, pid)]
        by_service["client (soak)"] = self._client_last - self._client_start
        total = sum(by_service.values())
        return {
            "wall_s": round(wall_s, 1),
            "cpu_s": {k: round(v, 1) for k, v in sorted(by_service.items())},
            "cores_busy": {k: round(v / wall_s, 2) for k, v in sorted(by_service.items())},
            "cores_busy_total": round(total / wall_s, 2),
            "cores": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in self.load_average_start],
            "load_average_end": [round(x, 2) for x in self.load_average_end],
        }


def cpu_markdown(cpu: dict[str, object]) -> list[str]:
    busy: dict[str, float] = cpu["cores_busy"]  # type: ignore[assignment]
    cells = ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
    return ["", f"CPU over the {cpu['wall_s']} s of load, in cores busy (of {cpu['cores']}): {cells}; "
                f"total {cpu['cores_busy_total']:.2f}. Load average (1/5/15 min) at the start "
                f"{cpu['load_average_start']}, at the end {cpu['load_average_end']}."]
