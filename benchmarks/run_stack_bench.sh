#!/usr/bin/env bash
# The issue-2 stack benchmark as it was run for docs/benchmarks.md: the engines under test get two
# CPU cores (the size of this project's machines); the benchmark client runs on a third core, as
# clients of a server would. Usage: benchmarks/run_stack_bench.sh OUT_DIR [MODEL] [LOAD_FORMAT]
set -euo pipefail
OUT=${1:?output folder}
MODEL=${2:-default}
FORMAT=${3:-auto}
ENGINE_CPUS=${ENGINE_CPUS:-0,1}
CLIENT_CPUS=${CLIENT_CPUS:-2}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
PORT=$($PY -c "from llmserve_stack.launch import free_port; print(free_port())")
taskset -c "$ENGINE_CPUS" $PY -m llmserve_stack up --port "$PORT" --model "$MODEL" --load-format "$FORMAT" \
  --num-kv-blocks 1024 --max-num-seqs 64 --log-dir "$OUT/logs" --log-format text > "$OUT/up.out" 2> "$OUT/up.err" &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q listening "$OUT/up.out" && break; sleep 1; done
grep -q listening "$OUT/up.out" || { cat "$OUT/up.err"; exit 1; }
COMMON=(--model "$MODEL" --load-format "$FORMAT" --concurrency 32 --max-tokens 64)
taskset -c "$CLIENT_CPUS" $PY benchmarks/bench_stack.py "${COMMON[@]}" --engines stack --address "127.0.0.1:$PORT" --out "$OUT/stack32"
taskset -c "$CLIENT_CPUS" $PY benchmarks/bench_stack.py "${COMMON[@]}" --concurrency 16 --max-tokens 16 --sequential --engines stack --address "127.0.0.1:$PORT" --out "$OUT/stack_seq"
kill -TERM $UP; wait $UP || true; trap - EXIT
taskset -c "$ENGINE_CPUS" $PY benchmarks/bench_stack.py "${COMMON[@]}" --engines inproc,hf --out "$OUT/local32"
taskset -c "$ENGINE_CPUS" $PY benchmarks/bench_stack.py "${COMMON[@]}" --concurrency 16 --max-tokens 16 --sequential --engines inproc --out "$OUT/local_seq"
cat "$OUT"/stack32/results.md "$OUT"/local32/results.md "$OUT"/stack_seq/results.md "$OUT"/local_seq/results.md
