#!/usr/bin/env bash
# The scheduling generalization suite of docs/scheduling.md (issue 9): 56 workloads from the
# traces in ../shared/traces x 4 loads x (5 policies, tempo-oracle + the dedicated run), both seed halves.
# About 45 minutes wall with 2 processes on the shared (loaded) 2-core dev machine, 19 min of CPU,
# before tempo-oracle was added (one more run per cell). Targets 4 and 5 alone, on one half:
#   --half held-out --policies fcfs,priority,edf,bros,tempo,tempo-oracle,bros+admission,tempo+admission,dedicated
# then python -m benchmarks.sched_suite.phase_b OUT_DIR/results.json.
# Usage: benchmarks/sched_generalization.sh [OUT_DIR] [extra flags, e.g. --half tuning]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-bench_out/generalization}
shift || true
exec $PY benchmarks/sched_generalization.py --out "$OUT" --jobs "${JOBS:-2}" --prefix-cache off "$@"
