"""Element sizes of the KV dtypes a checkpoint may hold, by the names `torch.dtype` prints
without its `torch.` prefix."""

from __future__ import annotations

import math

from kvstore_svc.core.errors import InvalidSpecError

ITEM_BYTES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "int8": 1,
    "uint8": 1,
}


def block_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of one block of `shape` in `dtype`; `InvalidSpecError` for an unknown dtype or bad shape."""
    item = ITEM_BYTES.get(dtype)
    if item is None:
        raise InvalidSpecError(f"unknown dtype {dtype!r}: use one of {', '.join(ITEM_BYTES)}")
    if not shape or any(dim <= 0 for dim in shape):
        raise InvalidSpecError(f"shape {list(shape)} must be non-empty with positive dimensions")
    return math.prod(shape) * item
