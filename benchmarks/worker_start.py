"""How long a worker takes to be SERVING, phase by phase, as a restart under `llmserve up` has it:
a kvstore, then `python -m worker_svc` started `--runs` times in a row, each time as a fresh
process with the calibration file its first start wrote (a restart reuses it), each stopped once
SERVING. Several checkouts run interleaved (run 1 of each, then run 2 of each, ...), so a change
of load on the machine hits all of them alike.

    python benchmarks/worker_start.py --runs 3 --checkout old=/tmp/old-tree --checkout new=.
    python benchmarks/worker_start.py --runs 3 --load-format dummy --num-threads 1 --checkout new=.

Each checkout's worker runs from that folder (`python -m worker_svc` with it as the working
directory, so its own code is imported) with this interpreter. The phases are the worker's own
start line (`worker_svc/start_phases.py`: "... after 9.7s: process start and imports 5.1s, model
load 0.7s, ..."); the table gives each phase's median and range over the runs, and the wall time
from spawning the process to the start line. Prints markdown; `--json FILE` keeps the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmserve_stack.launch import free_port  # noqa: E402

_PHASES = re.compile(r"after (\d+\.\d)s: (.*)$")
_PHASE = re.compile(r"^(.*) (\d+\.\d)s$")


def parse_phases(line: str) -> dict[str, float] | None:
    """{'total': 9.7, 'process start and imports': 5.1, ...} from a worker's start line, or None."""
    match = _PHASES.search(line)
    if match is None:
        return None
    phases = {"total": float(match.group(1))}
    for part in match.group(2).split(", "):
        piece = _PHASE.match(part.strip())
        if piece:
            phases[piece.group(1)] = float(piece.group(2))
    return phases


def start_worker(checkout: Path, kv_addr: str, args: argparse.Namespace, calibration: Path,
                 timeout_s: float = 300.0) -> dict[str, float]:
    """Starts one worker from `checkout`, waits for its start line, stops it; its phases and wall time."""
    port = free_port()
    cmd = [sys.executable, "-m", "worker_svc", "--address", f"127.0.0.1:{port}", "--kvstore-addr", kv_addr,
           "--worker-id", "w0", "--model", args.model, "--load-format", args.load_format, "--log-format", "text",
           "--calibration-file", str(calibration)]
    if args.num_threads:
        cmd += ["--num-threads", str(args.num_threads)]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSERVE_")}
    began = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "serving on" in line and "after" in line:
                phases = parse_phases(line.rstrip())
                if phases is not None:
                    phases["wall from spawn"] = time.monotonic() - began
                    return phases
            if time.monotonic() - began > timeout_s:
                break
        raise RuntimeError(f"worker from {checkout} never logged its start line:\n{''.join(lines[-30:])}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summarize(runs: dict[str, list[dict[str, float]]]) -> str:
    """Markdown: one row per checkout, each phase's median (min-max)."""
    order: list[str] = []
    for samples in runs.values():
        for sample in samples:
            order += [name for name in sample if name not in order]
    order = [n for n in order if n not in ("total", "wall from spawn")] + ["total", "wall from spawn"]
    lines = ["| checkout | " + " | ".join(order) + " |", "|---" * (len(order) + 1) + "|"]
    for label, samples in runs.items():
        cells = []
        for name in order:
            values = [s[name] for s in samples if name in s]
            if not values:
                cells.append("")
                continue
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", action="append", required=True, metavar="LABEL=PATH",
                        help="a checkout to start workers from (repeat to compare)")
    parser.add_argument("--runs", type=int, default=3, help="measured starts per checkout (after one that calibrates)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--num-threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", default="")
    parser.add_argument("--json", type=Path, help="write every run's phases here")
    args = parser.parse_args()
    checkouts = {}
    for item in args.checkout:
        label, _, path = item.partition("=")
        checkouts[label] = Path(path or label).resolve()
    first = next(iter(checkouts.values()))
    kv_addr = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSERVE_")}
    kvstore = subprocess.Popen([sys.executable, "-m", "kvstore_svc", "--address", kv_addr, "--log-level", "WARNING"],
                               cwd=first, env=env)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in checkouts}
    try:
        with tempfile.TemporaryDirectory(prefix="worker-start-") as state:
            calibrations = {label: Path(state) / f"{label}.json" for label in checkouts}
            for label, path in checkouts.items():  # the first start calibrates: not a restart
                print(f"{label}: first start (calibrates) {start_worker(path, kv_addr, args, calibrations[label])}",
                      file=sys.stderr)
            for i in range(args.runs):
                for label, path in checkouts.items():
                    phases = start_worker(path, kv_addr, args, calibrations[label])
                    phases["load average"] = os.getloadavg()[0]
                    runs[label].append(phases)
                    print(f"{label} run {i + 1}: {phases}", file=sys.stderr)
    finally:
        kvstore.send_signal(signal.SIGTERM)
        kvstore.wait(timeout=30)
    print(summarize(runs))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "checkouts":
                                         {k: str(v) for k, v in checkouts.items()}, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
