#!/usr/bin/env bash
# bench_stack.py on two checkouts, alternated A B B A (drift on the shared machine hits both alike),
# e.g. the old commit in a second worktree against this one:
#
#   git worktree add /work/wt/base 4ac83c5 && ln -s "$PWD/.venv" /work/wt/base/.venv
#   flock -x /tmp/cpu.lock benchmarks/bench_stack_ab.sh /work/wt/base . bench_out/ab --streams 32 128
#
# Arguments: checkout A, checkout B, the output folder, then bench_stack.py's own (default below).
# Each run writes OUT/<n>_<a|b>/results.{md,json} and its log; OUT/log has the order, commits and loads.
set -u
A=$(cd "$1" && pwd) B=$(cd "$2" && pwd) OUT=$(mkdir -p "$3" && cd "$3" && pwd)
shift 3
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--streams 32 128 --max-tokens 64 --threads 2 --engines stack,inproc --repeats 1 \
                              --skip-gemm --prefill-tokens 128)
n=0
for side in a b b a; do
  n=$((n + 1))
  dir=$A; [ "$side" = b ] && dir=$B
  cd "$dir" || exit 1
  echo "$(date +%H:%M:%S) start $n $side $dir $(git rev-parse --short HEAD) load $(cut -d' ' -f1 /proc/loadavg)" >> "$OUT/log"
  .venv/bin/python benchmarks/bench_stack.py "${ARGS[@]}" --out "$OUT/${n}_$side" > "$OUT/${n}_$side.log" 2>&1
  echo "$(date +%H:%M:%S) end $n $side rc $? load $(cut -d' ' -f1 /proc/loadavg)" >> "$OUT/log"
done
