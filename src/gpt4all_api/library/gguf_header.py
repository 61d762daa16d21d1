"""A GGUF file's header, read without loading the model: its scalar metadata (arrays are skipped),
its tensors' names, types and shapes, and its parameter count (summed from the tensor shapes).
What `/api/tags` and `/api/show` report, and what GPU offload estimates layer sizes from.

The `gguf` package's own `GGUFReader` decodes every vocabulary entry into numpy arrays (seconds
for a 49k-token vocabulary); this reader skips arrays and keeps only what is asked for.

Only the header is touched (through mmap), so this takes milliseconds even for large models;
results are cached per (path, size, mtime).
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_SCALARS |= {10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

#: `general.file_type` (llama.cpp's `llama_ftype`) as Ollama names quantization levels.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int  # `enum ggml_type` (gguf.GGMLQuantizationType)
    shape: tuple[int, ...]

    @property
    def n_bytes(self) -> int:
        """Bytes of the tensor's data, from its type's block size (as llama.cpp allocates)."""
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


@dataclass(frozen=True)
class GGUFInfo:
    metadata: dict[str, Any] = field(default_factory=dict)  # scalars only
    parameter_count: int = 0
    tensors: tuple[TensorInfo, ...] = ()

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def quantization(self) -> str:
        ftype = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ftype, "") if isinstance(ftype, int) else ""

    @property
    def parameter_size(self) -> str:
        label = self.metadata.get("general.size_label")
        if isinstance(label, str) and label:
            return label
        n = float(self.parameter_count)
        for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= scale:
                return f"{n / scale:.1f}{unit}"
        return str(self.parameter_count) if self.parameter_count else ""


class _Reader:
    def __init__(self, buf: mmap.mmap):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos]).decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        inner, count = self.unpack("<I"), self.unpack("<Q")
        if inner in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[inner]) * count
        elif inner == _STRING:
            pos, buf, length = self.pos, self.buf, struct.Struct("<Q").unpack_from
            for _ in range(count):
                pos += 8 + length(buf, pos)[0]
            self.pos = pos
        else:
            for _ in range(count):
                self.value(inner)
        return None  # arrays (vocabularies, merges) are not reported


def read_info(path: Path) -> GGUFInfo:
    """The header of a GGUF file; an empty `GGUFInfo` when it cannot be read."""
    try:
        st = path.stat()
        return _read(str(path), st.st_size, st.st_mtime_ns)
    except (OSError, ValueError, struct.error):
        return GGUFInfo()


@functools.lru_cache(maxsize=64)
def _read(path: str, _size: int, _mtime: int) -> GGUFInfo:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        r = _Reader(buf)
        if bytes(buf[:4]) != b"GGUF":
            raise ValueError("not a GGUF file")
        r.pos = 4
        version = r.unpack("<I")
        count = "<I" if version == 1 else "<Q"
        n_tensors, n_kv = r.unpack(count), r.unpack(count)
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            value = r.value(r.unpack("<I"))
            if value is not None:
                metadata[key] = value
        params = 0
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            shape = tuple(r.unpack("<Q") for _ in range(r.unpack("<I")))
            ggml_type = r.unpack("<I")
            r.pos += 8  # offset (u64)
            n = 1
            for d in shape:
                n *= d
            params += n
            tensors.append(TensorInfo(name, ggml_type, shape))
    return GGUFInfo(metadata, params, tuple(tensors))
