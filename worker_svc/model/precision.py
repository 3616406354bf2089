"""Which dtype the worker computes in: the one place where `--dtype auto` is resolved.

bfloat16 where the hardware runs it natively (CUDA; a CPU with AMX-BF16 tiles or AVX512-BF16
dot-product instructions), float32 elsewhere. On a CPU without those instructions oneDNN emulates
bfloat16 with float32 arithmetic plus conversions, which is slower than float32 itself. The KV
cache follows the model dtype (the worker builds both from what this returns).

Measured on a 2-core AVX512-BF16 CPU (docs/benchmarks.md): bfloat16 GEMMs at the model's shapes
run 3-5x the float32 FLOP rate, so "auto" picks bfloat16 there.
"""

from __future__ import annotations

import torch

AUTO = ("", "auto")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"--dtype must be one of auto, {', '.join(DTYPES)}, got {name!r}") from None


def cpu_has_native_bf16() -> bool:
    """True when this CPU executes bfloat16 matrix work in hardware (AMX tiles or AVX512-BF16), as
    torch's cpuinfo reports it, and oneDNN (which runs the GEMMs) can use it."""
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return bool(native and torch.backends.mkldnn.is_available())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`--dtype` to a torch dtype; "auto" (or empty) picks the fastest exact-enough one for `device`."""
    if name not in AUTO:
        return parse_dtype(name)
    if device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """What Describe and the logs report: "bfloat16", "float32", ..."""
    return str(dtype).removeprefix("torch.")
