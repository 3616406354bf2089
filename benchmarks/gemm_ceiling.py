"""The machine's achievable GEMM rate at the model's own shapes, per dtype and path:

    python benchmarks/gemm_ceiling.py --model default --threads 2 [--rows 1 8 32 128 512 1024]

For each row count M (the tokens of a step: decodes are M sequences, a prefill chunk M tokens) it
times one decoder layer's four projections (fused q/k/v, o, fused gate/up, down) and the LM head,
`y = x W^T` with x [M, K], W [N, K], through each path this CPU has:

- `float32`: `F.linear` in float32 (MKL sgemm);
- `bfloat16`: `F.linear` in bfloat16 (oneDNN, weight re-read in its plain layout every call);
- `bfloat16-packed`: oneDNN's linear over a weight reordered once (`worker_svc/model/linear.py`,
  what the worker runs when `prepack_supported`).

A layer's rate at M is its four GEMMs' FLOPs over the sum of their fastest times (fastest of
`--repeats` after a warm-up); the **ceiling** is the best layer rate over every path and M. The
engine's decode and prefill FLOP/s (`model_flops`) are reported as fractions of it by
`benchmarks/bench_stack.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_svc.model.config import ModelConfig  # noqa: E402
from worker_svc.model.linear import pack_weight, packed_linear, prepack_supported  # noqa: E402

DEFAULT_ROWS = (1, 8, 32, 128, 512, 1024)


@dataclass(frozen=True)
class GemmRow:
    path: str
    rows: int
    layer_gflops: float  # one decoder layer's four projections
    lm_head_gflops: float
    per_gemm_gflops: dict[str, float]


def layer_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """name → (K, N) of one decoder layer's projections, as the worker fuses them."""
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    h, i = config.hidden_size, config.intermediate_size
    return {"qkv": (h, q + 2 * kv), "o": (q, h), "gate_up": (h, 2 * i), "down": (i, h)}


def model_flops(config: ModelConfig, tokens: int, context_sum: int, lm_head_rows: int) -> float:
    """FLOPs of one forward: `tokens` rows through every layer's projections, attention scores and
    values over `context_sum` (the sum over query tokens of the KV tokens each attends to), and the
    LM head for `lm_head_rows` rows (the worker computes logits only for rows that sample)."""
    per_row = sum(2 * k * n for k, n in layer_shapes(config).values()) * config.num_layers
    attention = 4 * context_sum * config.num_heads * config.head_dim * config.num_layers
    return per_row * tokens + attention + 2 * config.hidden_size * config.vocab_size * lm_head_rows


def _fastest(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _paths() -> list[str]:
    paths = ["float32", "bfloat16"]
    if prepack_supported(torch.bfloat16, "cpu"):
        paths.append("bfloat16-packed")
    return paths


def _linear_fn(path: str, x: torch.Tensor, weight: torch.Tensor):  # type: ignore[no-untyped-def]
    if path == "bfloat16-packed":
        packed = pack_weight(weight)
        return lambda: packed_linear(x, packed, None)
    return lambda: F.linear(x, weight)


def measure(config: ModelConfig, rows: tuple[int, ...] = DEFAULT_ROWS, repeats: int = 10,
            paths: list[str] | None = None) -> list[GemmRow]:
    """GEMM rates (GFLOP/s) for every path and row count, on random weights of the model's shapes."""
    gen = torch.Generator().manual_seed(0)
    shapes = layer_shapes(config) | {"lm_head": (config.hidden_size, config.vocab_size)}
    out = []
    with torch.inference_mode():
        for path in paths or _paths():
            dtype = torch.float32 if path == "float32" else torch.bfloat16
            weights = {name: (torch.randn(n, k, generator=gen) * 0.02).to(dtype) for name, (k, n) in shapes.items()}
            for m in rows:
                times, rates = {}, {}
                for name, (k, n) in shapes.items():
                    x = torch.randn(m, k, generator=gen).to(dtype)
                    times[name] = _fastest(_linear_fn(path, x, weights[name]), repeats)
                    rates[name] = 2 * m * k * n / times[name] / 1e9
                layer_flops = sum(2 * m * k * n for name, (k, n) in shapes.items() if name != "lm_head")
                layer_time = sum(t for name, t in times.items() if name != "lm_head")
                out.append(GemmRow(path, m, layer_flops / layer_time / 1e9, rates["lm_head"], rates))
    return out


def ceiling(rows: list[GemmRow]) -> GemmRow:
    """The fastest layer rate measured: the machine's achievable GEMM FLOP/s for this model."""
    return max(rows, key=lambda r: r.layer_gflops)


def to_markdown(rows: list[GemmRow]) -> str:
    names = list(rows[0].per_gemm_gflops)
    lines = ["| path | rows | layer GFLOP/s | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r.path} | {r.rows} | {r.layer_gflops:.0f} | "
                     + " | ".join(f"{r.per_gemm_gflops[n]:.0f}" for n in names) + " |")
    best = ceiling(rows)
    lines.append("")
    lines.append(f"- ceiling: **{best.layer_gflops:.0f} GFLOP/s** ({best.path}, {best.rows} rows)")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args()
    from llmserve.model_source import load_hf_config, resolve_model

    torch.set_num_threads(args.threads)
    config = ModelConfig.from_hf(load_hf_config(resolve_model(args.model, "dummy")))
    rows = measure(config, tuple(args.rows), args.repeats)
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"{args.threads} threads, torch {torch.__version__}, CPU capability {capability}")
    print(to_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
