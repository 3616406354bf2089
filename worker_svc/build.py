"""Builds a worker's model, KV cache and step runner from its config (synchronous, slow: the
service runs it in a thread)."""

from __future__ import annotations

import logging

import torch

from llmserve.model_source import resolve_model
from llmserve.plan_book import auto_reserve_blocks
from worker_svc.calibration import calibrate_once
from worker_svc.config import AUTO, WorkerConfig
from worker_svc.core.prefix_tier import build_prefix_cache
from worker_svc.core.runner import RunnerLimits, StepRunner
from worker_svc.core.types import WorkerDescription
from worker_svc.kernels.backend import default_backend_name, make_backend
from worker_svc.model.kv_cache import KvCache, KvCacheSpec
from worker_svc.model.loader import load_model
from worker_svc.model.precision import dtype_name, resolve_dtype
from worker_svc.start_phases import StartPhases

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_GB = 1.0
GPU_KV_FRACTION = 0.85  # of the GPU memory still free after loading the model
# Step limits of `--max-num-batched-tokens auto` and `--max-num-seqs auto`. A CPU step's time grows
# with its tokens from the first one, so a small budget bounds how long a prefill chunk delays the
# running decodes (512/64 is what `llmserve up` has run on CPUs, and what docs/benchmarks.md
# measured); a GPU step costs about the same up to thousands of tokens, so it takes more per step.
AUTO_STEP_LIMITS = {"cpu": RunnerLimits(max_num_batched_tokens=512, max_num_seqs=64),
                    "cuda": RunnerLimits(max_num_batched_tokens=2048, max_num_seqs=128)}


def resolve_device(name: str) -> torch.device:
    if name in AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_step_limits(config: WorkerConfig, device: torch.device) -> RunnerLimits:
    """The step limits, with the device's defaults for those set to auto (0)."""
    auto = AUTO_STEP_LIMITS["cuda" if device.type == "cuda" else "cpu"]
    return RunnerLimits(config.max_num_batched_tokens or auto.max_num_batched_tokens,
                        config.max_num_seqs or auto.max_num_seqs)


def build_runner(config: WorkerConfig, phases: StartPhases | None = None) -> tuple[StepRunner, WorkerDescription]:
    """Loads the model, sizes and allocates the KV cache, warms up and calibrates the step-time
    model (`worker_svc.calibration`); returns the runner and what Describe reports. Marks each of
    those phases on `phases`."""
    phases = phases or StartPhases()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    backend = make_backend(default_backend_name(device) if config.attention_backend in AUTO else config.attention_backend)
    source = resolve_model(config.model, config.load_format)  # type: ignore[arg-type]
    model = load_model(source, backend, dtype, device, seed=config.seed)
    spec = KvCacheSpec.for_model(model.config, config.block_size, dtype)
    num_blocks = config.num_kv_blocks or spec.num_blocks_for_memory(_kv_memory_gb(config, device))
    kv_cache = KvCache(spec, num_blocks, device)
    limits = resolve_step_limits(config, device)
    runner = StepRunner(model, kv_cache, limits, lazy_checkpoint_blocks=config.checkpoint_lazy_blocks,
                        prefix=build_prefix_cache(kv_cache, config.prefix_host_tier_gb))
    phases.mark("model load")
    step_cost = None
    if config.warmup:
        runner.warm_up()
        phases.mark("warm-up")
        if config.calibrate:  # timings of cold kernels would fit nothing the worker serves with
            step_cost = calibrate_once(runner, config.worker_id, config.calibration_file,
                                       _calibration_key(config, runner, backend.name))
            phases.mark("calibration")
    logger.info(
        "worker %s: %s (%s) on %s/%s, backend %s, %d KV blocks of %d tokens (%d bytes each)",
        config.worker_id, source.name, source.load_format, device, dtype_name(dtype), backend.name,
        num_blocks, config.block_size, spec.bytes_per_block,
    )
    description = WorkerDescription(
        worker_id=config.worker_id,
        model_name=source.name,
        vocab_size=model.config.vocab_size,
        max_model_len=model.config.max_model_len,
        eos_token_ids=model.config.eos_token_ids,
        block_size=config.block_size,
        num_blocks=num_blocks,
        bytes_per_block=spec.bytes_per_block,
        dtype=dtype_name(dtype),
        device=str(device),
        max_num_batched_tokens=limits.max_num_batched_tokens,
        max_num_seqs=limits.max_num_seqs,
        step_cost=step_cost,
    )
    return runner, description


def _calibration_key(config: WorkerConfig, runner: StepRunner, backend: str) -> dict[str, object]:
    """What the start-up timings depend on: a kept calibration is reused only where all of it is equal."""
    cache, limits = runner.kv_cache, runner.limits
    return {"model": config.model, "load_format": config.load_format, "dtype": str(cache.spec.dtype),
            "device": str(runner.device), "backend": backend, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "limits": [limits.max_num_batched_tokens, limits.max_num_seqs],
            "kv": [cache.num_blocks, cache.spec.block_size]}


def _kv_memory_gb(config: WorkerConfig, device: torch.device) -> float:
    if config.kv_cache_memory_gb:
        return config.kv_cache_memory_gb
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return GPU_KV_FRACTION * free / (1 << 30)
    return DEFAULT_CPU_KV_GB


def reserve_blocks(config: WorkerConfig, description: WorkerDescription) -> int:
    """Blocks held ahead at each end of the pool: as set, or auto (`auto_reserve_blocks`)."""
    if config.kv_reserve_blocks >= 0:
        return config.kv_reserve_blocks
    return auto_reserve_blocks(description.max_num_batched_tokens, description.block_size, description.num_blocks)
