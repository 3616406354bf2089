#!/usr/bin/env bash
# Reproduces the simulated results of docs/scheduling.md: every policy, side by side, on the
# GPU-class cost model (Llama-3-8B on one H100, roofline profile). About 3.5 minutes of wall time
# on a 2-core machine. Usage: benchmarks/sim_policies.sh [OUT_DIR]   (default bench_out/sim)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-bench_out/sim}
mkdir -p "$OUT"

# 1. Azure LLM 2023 conversation trace as real-time chat (TTFT 1 s, TPOT 100 ms, x1-x4 tiers),
#    arXiv-summarization lengths as best-effort batch work at 2 req/s.
$PY -m scheduler_svc.sim.make_workload --duration 120 --seed 1 \
    --stream azure_conv:real_time:start=600 --stream arxiv:best_effort:rate=2 --out "$OUT/rt_be.jsonl"
$PY -m llmserve_stack.bench --workload "$OUT/rt_be.jsonl" \
    --cost-model h100_llama3_8b --rate-scale 1 1.5 1.75 1.9 2 3 --jobs 2 --out "$OUT/rt_be"

# 2. Mixed: the Azure trace split 50/30/20 into real-time / deadline (10 s x tiers) / best-effort,
#    plus 40 Claude Code sessions (first 6 main-agent calls each, sub-agents kept) as collective
#    requests whose calls wait for their dependencies (think time x0.02, capped at 5 s).
$PY -m scheduler_svc.sim.make_workload --duration 120 --seed 3 --mix 0.5,0.3,0.2 \
    --stream azure_conv:mix:start=600 \
    --stream agentic:deadline:rate=0.35,sessions=40,max_calls=6,think_scale=0.02,max_think=5 \
    --out "$OUT/mixed.jsonl"
# The agentic calls carry hash ids: --prefix-cache off keeps the runs comparable with
# docs/scheduling.md's numbers, taken before `llmserve up` cached prefixes (issue 13's phase B).
$PY -m llmserve_stack.bench --workload "$OUT/mixed.jsonl" --prefix-cache off \
    --cost-model h100_llama3_8b --rate-scale 1 2 3 4 --jobs 2 --out "$OUT/mixed"
