#!/usr/bin/env bash
# The live scheduling suite of docs/scheduling.md (issue 9, live side): 4 workloads x 3 loads, each
# live under fcfs, bros, tempo and the dedicated run (one local stack per policy, bundled
# SmolLM2-135M on the CPU), then the simulator's prediction of every cell from the worker's own
# start-up calibration. About 30 minutes wall on the shared 2-core machine (run it alone: on a shared
# machine, under its CPU lock, e.g. `flock /tmp/cpu.lock benchmarks/sched_live.sh`).
# Usage: benchmarks/sched_live.sh [OUT_DIR] [extra flags, e.g. --mixes rt_be_short --loads 0.5 1]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-bench_out/sched_live}
shift || true
exec $PY benchmarks/sched_live.py --out "$OUT" "$@"
