"""A GGUF file's metadata and tensor table, read without parsing what the caller does not ask for.

`gguf.GGUFReader` builds every metadata field as numpy views at open, the tokenizer's 49,152 tokens
and 48,900 merges of the bundled SmolLM2 included: 3-4 s of Python on this machine, and transformers'
`AutoConfig` (GGUF) parses them all once more (issue 11: most of a restarted worker's model load).
A worker needs a dozen scalars and the tensor table; this reader keeps each array as its type,
length and offset and reads its items only when asked (`GgufArray.values`), so opening the bundled
file costs milliseconds. Tensor data are numpy views of the memory-mapped file in the layout
`GGUFReader` gives them (quantized tensors as rows of bytes), which is what `gguf.dequantize` takes.

Format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): little-endian; magic, version
(2 or 3), tensor count, metadata count; the metadata (key, type, value); the tensor infos (name,
dims innermost first, ggml type, offset); the tensor data from the next multiple of
`general.alignment` (default 32). Numpy only: the gateway may use it too.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quant_shape_to_byte_shape

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9
# GGUF value type -> (struct format, numpy dtype) of the scalar types.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"), 5: ("<i", "<i4"),
    6: ("<f", "<f4"), 7: ("<?", "?"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"), 12: ("<d", "<f8"),
}
# Tensor types stored as plain numbers (the rest are quantized blocks, read as bytes).
_PLAIN = {GGMLQuantizationType.F32: "<f4", GGMLQuantizationType.F16: "<f2", GGMLQuantizationType.F64: "<f8",
          GGMLQuantizationType.I8: "<i1", GGMLQuantizationType.I16: "<i2", GGMLQuantizationType.I32: "<i4",
          GGMLQuantizationType.I64: "<i8"}


class GgufError(ValueError):
    """The file is not a GGUF this reader can read (the message says why and where)."""


@dataclass(frozen=True)
class GgufArray:
    """A metadata array, not yet read: its item type, length and where its items start."""

    item_type: int
    count: int
    offset: int
    _file: GgufFile = field(repr=False, compare=False)

    def __len__(self) -> int:
        return self.count

    def values(self) -> list[Any]:
        """Every item (str, int, float or bool; a nested array as a GgufArray)."""
        items, offset = [], self.offset
        for _ in range(self.count):
            value, offset = self._file._value(self.item_type, offset)
            items.append(value)
        return items


@dataclass(frozen=True)
class GgufTensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first): the reverse of the file's dims
    ggml_type: GGMLQuantizationType
    offset: int  # of its data, from the start of the file


class GgufFile:
    """An open GGUF file: `metadata` (key -> scalar, str or GgufArray), `tensors` (name -> info, in
    file order) and `tensor_data(name)`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as err:  # an empty file
                raise GgufError(f"{self.path}: not a GGUF file ({err})") from err
        try:
            self._parse()
        except struct.error as err:
            raise GgufError(f"{self.path}: truncated GGUF file ({err})") from err

    def _parse(self) -> None:
        buf = self._map
        if buf[:4] != GGUF_MAGIC:
            raise GgufError(f"{self.path}: not a GGUF file (magic {bytes(buf[:4])!r})")
        (version,) = struct.unpack_from("<I", buf, 4)
        if version & 0xFFFF == 0:
            raise GgufError(f"{self.path}: a big-endian GGUF file, which is not supported")
        if version not in SUPPORTED_VERSIONS:
            raise GgufError(f"{self.path}: GGUF version {version} is not supported ({SUPPORTED_VERSIONS})")
        self.version = version
        tensor_count, kv_count = struct.unpack_from("<QQ", buf, 8)
        offset = 24
        self.metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key, offset = self._string(offset)
            (value_type,) = struct.unpack_from("<I", buf, offset)
            value, offset = self._value(value_type, offset + 4)
            if key in self.metadata:
                raise GgufError(f"{self.path}: metadata key {key!r} appears twice")
            self.metadata[key] = value
        infos = []
        for _ in range(tensor_count):
            name, offset = self._string(offset)
            (n_dims,) = struct.unpack_from("<I", buf, offset)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, offset + 4)
            raw_type, data_offset = struct.unpack_from("<IQ", buf, offset + 4 + 8 * n_dims)
            offset += 4 + 8 * n_dims + 12
            try:
                ggml_type = GGMLQuantizationType(raw_type)
            except ValueError as err:
                raise GgufError(f"{self.path}: tensor {name} has unknown ggml type {raw_type}") from err
            infos.append((name, tuple(int(d) for d in reversed(dims)), ggml_type, data_offset))
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GgufError(f"{self.path}: general.alignment {alignment!r} is not a power of two")
        self.data_offset = -(-offset // alignment) * alignment
        self.tensors: dict[str, GgufTensorInfo] = {}
        for name, shape, ggml_type, data_offset in infos:
            if name in self.tensors:
                raise GgufError(f"{self.path}: tensor {name} appears twice")
            self.tensors[name] = GgufTensorInfo(name, shape, ggml_type, self.data_offset + data_offset)

    def _string(self, offset: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", self._map, offset)
        end = offset + 8 + length
        if end > len(self._map):
            raise GgufError(f"{self.path}: a string at byte {offset} runs past the end of the file")
        return self._map[offset + 8 : end].decode("utf-8"), end

    def _value(self, value_type: int, offset: int) -> tuple[Any, int]:
        scalar = _SCALARS.get(value_type)
        if scalar is not None:
            fmt = scalar[0]
            return struct.unpack_from(fmt, self._map, offset)[0], offset + struct.calcsize(fmt)
        if value_type == STRING:
            return self._string(offset)
        if value_type == ARRAY:
            item_type, count = struct.unpack_from("<IQ", self._map, offset)
            start = offset + 12
            return GgufArray(item_type, count, start, self), self._skip_items(item_type, count, start)
        raise GgufError(f"{self.path}: unknown metadata value type {value_type} at byte {offset}")

    def _skip_items(self, item_type: int, count: int, offset: int) -> int:
        """The offset just past `count` items of `item_type` from `offset` (strings walked by length)."""
        scalar = _SCALARS.get(item_type)
        if scalar is not None:
            return offset + count * struct.calcsize(scalar[0])
        if item_type == STRING:
            unpack, buf = struct.Struct("<Q").unpack_from, self._map
            for _ in range(count):
                offset += 8 + unpack(buf, offset)[0]
            return offset
        for _ in range(count):  # arrays of arrays (none in the files llama.cpp writes for these models)
            offset = self._value(item_type, offset)[1]
        return offset

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value: scalars and strings as Python values; a numeric array read as a list."""
        value = self.metadata.get(key, default)
        if isinstance(value, GgufArray) and value.item_type in _SCALARS:
            return value.values()
        return value

    def tensor_data(self, name: str) -> np.ndarray:
        """The tensor's data as stored, a read-only view of the file: plain types in their dtype and
        shape; quantized ones as uint8 rows of blocks (`gguf.dequantize` input), as GGUFReader has them."""
        info = self.tensors[name]
        dtype = _PLAIN.get(info.ggml_type)
        if dtype is not None:
            count = int(np.prod(info.shape))
            shape = info.shape
        else:
            shape = quant_shape_to_byte_shape(info.shape, info.ggml_type)
            block_size, type_size = GGML_QUANT_SIZES[info.ggml_type]
            count = int(np.prod(info.shape)) * type_size // block_size
            dtype = "<u1"
        nbytes = count * np.dtype(dtype).itemsize
        if info.offset + nbytes > len(self._map):
            raise GgufError(f"{self.path}: tensor {name} runs past the end of the file")
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=info.offset).reshape(shape)
