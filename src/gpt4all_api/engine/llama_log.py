"""llama.cpp's own log: into Python logging, and read for the buffers it allocated.

llama.cpp reports each buffer it allocates while loading a model and creating a context
(`CUDA0 model buffer size = 85.88 MiB`, `CPU KV buffer size = 9.00 MiB`, ...). Those lines are
the exact device and host memory a model takes; `capture()` collects them for the thread that
loads, so that a model's device memory is what llama.cpp allocated, not an estimate.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import llama_cpp as lc

log = logging.getLogger("gpt4all_api.llama_cpp")

#: `enum ggml_log_level` 3 is ERROR; INFO, WARN, DEBUG and CONT lines go to DEBUG here.
_ERROR = 3
_BUFFER = re.compile(
    r"(?P<buffer>\S+)\s+(?P<kind>model|KV|compute|output|RS)\s+buffer size\s*=\s*"
    r"(?P<mib>[0-9.]+) MiB"
)
_local = threading.local()


@dataclass
class Buffers:
    """The buffers llama.cpp reported on one thread: (buffer name, kind) -> bytes."""

    sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    outer: Buffers | None = None  # a capture around this one sees its lines too

    def add_line(self, text: str) -> None:
        if self.outer is not None:
            self.outer.add_line(text)
        self.lines.append(text)
        m = _BUFFER.search(text)
        if m:
            key = (m["buffer"], m["kind"])
            self.sizes[key] = self.sizes.get(key, 0) + round(float(m["mib"]) * 1024 * 1024)

    def by_buffer(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (name, _kind), size in self.sizes.items():
            out[name] = out.get(name, 0) + size
        return out


def is_host_buffer(name: str) -> bool:
    """`CPU`, `CPU_Mapped`, `CPU_REPACK`, `AMX`, `CUDA_Host`, ...: memory in RAM, not on a
    device."""
    return name.upper().startswith("CPU") or name.endswith("_Host") or is_repacked_buffer(name)


def is_repacked_buffer(name: str) -> bool:
    """llama.cpp's extra CPU buffer types: weights laid out for its faster kernels."""
    return name.upper() in ("CPU_REPACK", "AMX", "CPU_KLEIDIAI")


@lc.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", "replace")
    buffers: Buffers | None = getattr(_local, "buffers", None)
    if buffers is not None:
        buffers.add_line(line)
    # llama.cpp writes a lot while loading (its warnings included): DEBUG here, errors louder.
    py_level = logging.ERROR if level == _ERROR else logging.DEBUG
    if "possible training context overflow" in line:
        # The shared KV pool is one sequence's room to llama.cpp; ours are capped at
        # context_size (past the trained length with YaRN scaling, which the engine logs).
        py_level = logging.DEBUG
    if log.isEnabledFor(py_level) and line.strip():
        log.log(py_level, "%s", line.rstrip())


def install() -> None:
    """Route llama.cpp's log here (replacing llama-cpp-python's printer to stderr)."""
    lc.llama_log_set(_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def capture() -> Iterator[Buffers]:
    """Collect what llama.cpp logs on this thread while the block runs (captures nest)."""
    previous = getattr(_local, "buffers", None)
    buffers = Buffers(outer=previous)
    _local.buffers = buffers
    try:
        yield buffers
    finally:
        _local.buffers = previous
