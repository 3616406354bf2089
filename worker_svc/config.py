"""Configuration of the worker service: each field a setting (flag `--x-y`, variable LLMSERVE_X_Y)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.model_source import ModelSettings
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import redefault, setting

AUTO = ("", "auto")


@dataclass(frozen=True, kw_only=True)
class WorkerConfig(ModelSettings, ServiceSettings):
    """How a worker runs. "auto" settings resolve at start (`worker_svc.build`): CUDA when present
    (bfloat16, triton, the GPU step limits), else CPU (float32, torch, the CPU step limits)."""

    address: str = redefault(ServiceSettings, "address", "127.0.0.1:50061")
    worker_id: str = setting("w0", help="the worker's id, which is its KV pool's id in the store")
    kvstore_addr: str = setting("127.0.0.1:50071", help="the KV store's host:port")
    dtype: str = setting("auto", help="auto | float32 | bfloat16 | float16")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N")
    attention_backend: str = setting("auto", help="auto | torch | triton")
    # KV cache size: a block count or GiB of memory, not both; neither: 1 GiB on CPU, 85% of the
    # GPU memory still free after the model is loaded on CUDA.
    num_kv_blocks: int = setting(0, auto=True, help="KV cache blocks (auto: sized by memory)")
    kv_cache_memory_gb: float = setting(0.0, help="KV cache memory, GiB (0: 1 GiB on CPU, 85% of the free GPU "
                                                  "memory on CUDA)")
    block_size: int = setting(16, help="tokens per KV block")
    max_num_batched_tokens: int = setting(0, auto=True, help="most tokens per step (auto: 512 on CPU, 2048 on CUDA)")
    max_num_seqs: int = setting(0, auto=True, help="most sequences per step (auto: 64 on CPU, 128 on CUDA)")
    seed: int = setting(0, help="seed of dummy weights")
    num_threads: int = setting(0, help="torch CPU threads (0: torch's default)")
    warmup: bool = setting(True, help="run warm-up forward passes before serving")
    # The scheduler prices steps with a cost model; one fitted on this machine, at start, beats a
    # bundled profile of another machine or engine (it refits online from the steps either way).
    calibrate: bool = setting(True, help="after warm-up, time a grid of step shapes for a few seconds and report the "
                                         "fitted step-time model in Describe (--no-calibrate: start faster, report "
                                         "none; needs --warmup)")
    # A restart under load would time a busy machine, more slowly and with a worse fit (issue 11:
    # 8 s and a 10x intercept in the soak); the machine and the settings are those of the first start.
    calibration_file: str = setting("", help="keep the start-up calibration in this file and reuse it at a later "
                                             "start with the same model, precision, device, threads, step limits "
                                             "and KV cache (llmserve up: one per worker for the stack's life; "
                                             "empty: time the grid at every start)")
    kvstore_connect_timeout_s: float = setting(60.0, help="how long to wait at start for the KV store, seconds")
    # Forward passes on the worker's one torch thread (worker_svc/forward_thread.py) keep the event
    # loop responsive (heartbeats, reading the next plan) but every torch op then hands the GIL
    # back and forth with the loop thread.
    forward_in_thread: bool = setting(True, help="run each forward pass on the worker's torch thread (keeps the event "
                                                 "loop free; --no-forward-in-thread: on the loop thread, no GIL "
                                                 "hand-offs)")
    # Lazy checkpointing: full KV blocks of running non-real-time requests go to the store's host
    # tier this many at a time, so a preemption only copies the tail.
    checkpoint_lazy_blocks: int = setting(4, help="send full KV blocks of running BE requests to the host tier "
                                                  "this many at a time (0: at preemption only)")
    # Leases held ahead (docs/design.md "Block accounting"): a step takes its blocks from the
    # worker's reserve and the store hears of it in batches, so a typical step makes no store RPC.
    kv_reserve_blocks: int = setting(-1, help="KV blocks the worker leases ahead at each end of its pool (-1: auto, "
                                              "one step's worth, cdiv(max_num_batched_tokens, block_size), at most a "
                                              "quarter of the pool; 0: none, a step that needs blocks asks the store)")
    # The prefix cache's second tier (issue 13, worker_svc/core/prefix_tier.py): cached blocks the
    # KV pool evicts are kept in the worker's host memory, up to this much, and copied back on a
    # hit instead of prefilled. Memory is taken only as blocks are demoted. Size it as host memory
    # the worker may use beyond its process: 4 GiB here; a GPU node, its share of host RAM (an
    # 8-GPU node with 2 TiB: up to 256 GiB per worker).
    prefix_host_tier_gb: float = setting(4.0, help="host memory for prefix-cache blocks evicted from the KV pool, "
                                                   "GiB (a hit copies them back instead of prefilling them; "
                                                   "0: no host tier)")
    kv_sync_interval_s: float = setting(1.0, help="longest time the KV store's record of the worker's leases lags "
                                                  "behind, seconds (also how long an idle worker keeps its reserve)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.worker_id:
            raise ValueError("--worker-id must not be empty")
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"--block-size must be a power of two, got {self.block_size}")
        if self.num_kv_blocks < 0 or self.kv_cache_memory_gb < 0:
            raise ValueError("--num-kv-blocks and --kv-cache-memory-gb must be >= 0")
        if self.num_kv_blocks and self.kv_cache_memory_gb:
            raise ValueError("give --num-kv-blocks or --kv-cache-memory-gb, not both")
        if self.max_num_batched_tokens < 0 or self.max_num_seqs < 0:
            raise ValueError("--max-num-batched-tokens and --max-num-seqs must be >= 1 (or auto)")
        if self.prefix_host_tier_gb < 0:
            raise ValueError("--prefix-host-tier-gb must be >= 0")
        if self.num_threads < 0:
            raise ValueError("--num-threads must be >= 0")
        if self.checkpoint_lazy_blocks < 0:
            raise ValueError("--checkpoint-lazy-blocks must be >= 0 (0: checkpoint at preemption only)")
        if self.kv_reserve_blocks < -1:
            raise ValueError(f"--kv-reserve-blocks must be >= 0 or -1 (auto), got {self.kv_reserve_blocks}")
        if self.kv_sync_interval_s < 0:
            raise ValueError(f"--kv-sync-interval-s must be >= 0, got {self.kv_sync_interval_s}")
