"""Configuration of the worker service (frozen; from flags or LLMSERVE_* variables)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llmserve.runtime.flags import add_flag
from llmserve.runtime.metrics import add_metrics_flag

AUTO = ("", "auto")


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs. `device`/`dtype`/`attention_backend` "auto" resolve at start: CUDA when
    present (bfloat16, triton), else CPU (float32, torch)."""

    worker_id: str = "w0"
    kvstore_addr: str = "127.0.0.1:50071"
    model: str = "default"
    load_format: str = "auto"  # auto | safetensors | gguf | dummy
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    attention_backend: str = "auto"  # auto | torch | triton
    # KV cache size: a block count, or GiB of memory (one of them; neither: 1 GiB on CPU, 85% of
    # the free GPU memory after the model is loaded on CUDA).
    num_kv_blocks: int = 0
    kv_cache_memory_gb: float = 0.0
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    seed: int = 0  # dummy weights
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    warmup: bool = True
    drain_grace_s: float = 5.0
    kvstore_connect_timeout_s: float = 60.0
    metrics_port: int = 0
    # Forward passes in a thread keep the event loop responsive (heartbeats, reading the next plan)
    # but every torch op then hands the GIL back and forth with the loop thread.
    forward_in_thread: bool = True
    # Lazy checkpointing: send full KV blocks of running non-real-time requests to the store's
    # host tier this many at a time, so a preemption only copies the tail (0: at preemption only).
    checkpoint_lazy_blocks: int = 4

    def __post_init__(self) -> None:
        if not self.worker_id:
            raise ValueError("--worker-id must not be empty")
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"--block-size must be a power of two, got {self.block_size}")
        if self.num_kv_blocks < 0 or self.kv_cache_memory_gb < 0:
            raise ValueError("--num-kv-blocks and --kv-cache-memory-gb must be >= 0")
        if self.num_kv_blocks and self.kv_cache_memory_gb:
            raise ValueError("give --num-kv-blocks or --kv-cache-memory-gb, not both")
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError("--max-num-batched-tokens and --max-num-seqs must be >= 1")
        if self.num_threads < 0:
            raise ValueError("--num-threads must be >= 0")
        if self.checkpoint_lazy_blocks < 0:
            raise ValueError("--checkpoint-lazy-blocks must be >= 0 (0: checkpoint at preemption only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker_svc", description="llmserve worker service")
    add_flag(parser, "--address", default="127.0.0.1:50061", help="host:port to serve on")
    add_flag(parser, "--kvstore-addr", default="127.0.0.1:50071", help="KV store address")
    add_flag(parser, "--worker-id", default="w0", help="worker (KV pool) id")
    add_flag(parser, "--model", default="default", help="'default' (bundled SmolLM2), an HF folder or a .gguf file")
    add_flag(parser, "--load-format", default="auto", help="auto | safetensors | gguf | dummy")
    add_flag(parser, "--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    add_flag(parser, "--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_flag(parser, "--attention-backend", default="auto", help="auto | torch | triton")
    add_flag(parser, "--num-kv-blocks", default=0, type=int, help="KV cache blocks (0: size by memory)")
    add_flag(parser, "--kv-cache-memory-gb", default=0.0, type=float, help="KV cache memory, GiB")
    add_flag(parser, "--block-size", default=16, type=int, help="tokens per KV block")
    add_flag(parser, "--max-num-batched-tokens", default=2048, type=int, help="most tokens per step")
    add_flag(parser, "--max-num-seqs", default=128, type=int, help="most sequences per step")
    add_flag(parser, "--seed", default=0, type=int, help="seed of dummy weights")
    add_flag(parser, "--num-threads", default=0, type=int, help="torch CPU threads (0: torch's default)")
    add_flag(parser, "--warmup", default=True, type=bool, help="run warm-up forward passes before serving")
    add_flag(parser, "--forward-in-thread", default=True, type=bool,
             help="run each forward pass in a thread (keeps the event loop free; off: on the loop thread, "
                  "no GIL hand-offs per op)")
    add_flag(parser, "--checkpoint-lazy-blocks", default=4, type=int,
             help="send full KV blocks of running BE requests to the host tier this many at a time (0: off)")
    add_flag(parser, "--log-level", default="INFO", help="log level")
    add_metrics_flag(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        worker_id=args.worker_id,
        kvstore_addr=args.kvstore_addr,
        model=args.model,
        load_format=args.load_format,
        dtype=args.dtype,
        device=args.device,
        attention_backend=args.attention_backend,
        num_kv_blocks=args.num_kv_blocks,
        kv_cache_memory_gb=args.kv_cache_memory_gb,
        block_size=args.block_size,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        seed=args.seed,
        num_threads=args.num_threads,
        warmup=args.warmup,
        metrics_port=args.metrics_port,
        checkpoint_lazy_blocks=args.checkpoint_lazy_blocks,
        forward_in_thread=args.forward_in_thread,
    )
