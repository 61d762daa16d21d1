"""The compute devices llama.cpp was built with, and their free memory.

llama-cpp-python binds `libllama` but not ggml's backend device API, so these few functions are
bound here with ctypes on the `libggml` it ships (`llama_cpp._ggml.libggml`): the device list,
each device's backend (`CUDA`, `Metal`, `Vulkan`, `CPU`, ...) and `ggml_backend_dev_memory`,
the free and total memory llama.cpp itself sees (`cudaMemGetInfo` for CUDA, the recommended
working set for Metal, the heap budget for Vulkan).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass

import llama_cpp as lc

log = logging.getLogger(__name__)

#: `enum ggml_backend_dev_type`
DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class Device:
    """One device llama.cpp can place layers on."""

    index: int  # among the offload devices, in llama.cpp's order (what `main_gpu` counts)
    name: str  # llama.cpp's name: CUDA0, Metal, Vulkan0
    backend: str  # cuda, metal, vulkan, ... (lower case)
    description: str
    free: int  # bytes
    total: int  # bytes


def _backend_word(reg_name: str) -> str:
    """`CUDA` -> `cuda`; ROCm builds register as `ROCm`, SYCL as `SYCL`."""
    return reg_name.strip().lower()


@functools.cache
def _lib() -> ctypes.CDLL:
    from llama_cpp._ggml import libggml as g

    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    g.ggml_backend_dev_count.argtypes, g.ggml_backend_dev_count.restype = [], sz
    g.ggml_backend_dev_get.argtypes, g.ggml_backend_dev_get.restype = [sz], vp
    for fn in (g.ggml_backend_dev_name, g.ggml_backend_dev_description):
        fn.argtypes, fn.restype = [vp], ctypes.c_char_p
    g.ggml_backend_dev_type.argtypes, g.ggml_backend_dev_type.restype = [vp], ctypes.c_int
    g.ggml_backend_dev_memory.argtypes = [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]
    g.ggml_backend_dev_memory.restype = None
    g.ggml_backend_dev_backend_reg.argtypes, g.ggml_backend_dev_backend_reg.restype = [vp], vp
    g.ggml_backend_reg_name.argtypes, g.ggml_backend_reg_name.restype = [vp], ctypes.c_char_p
    return g


def _all_devices() -> list[tuple[ctypes.c_void_p, str, str, str]]:
    """(handle, name, type, backend) of every registered device."""
    g = _lib()
    out = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        name = (g.ggml_backend_dev_name(dev) or b"").decode()
        kind = DEVICE_TYPES.get(g.ggml_backend_dev_type(dev), "?")
        reg = g.ggml_backend_dev_backend_reg(dev)
        backend = _backend_word((g.ggml_backend_reg_name(reg) or b"").decode()) if reg else ""
        out.append((dev, name, kind, backend))
    return out


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can offload layers (it has a GPU backend and a device)."""
    return bool(lc.llama_supports_gpu_offload())


def gpu_devices() -> list[Device]:
    """The devices llama.cpp offloads to by default, in its order, with their free memory.

    As llama.cpp chooses: discrete GPUs; integrated ones only when there is no discrete one;
    the CPU and RPC servers are not listed."""
    from .model import init_backend

    init_backend()
    if not supports_gpu_offload():
        return []
    g = _lib()
    found = [d for d in _all_devices() if d[2] in ("gpu", "igpu") and d[3] != "rpc"]
    discrete = [d for d in found if d[2] == "gpu"]
    chosen = discrete or [d for d in found if d[2] == "igpu"]
    devices = []
    for i, (dev, name, _kind, backend) in enumerate(chosen):
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        description = (g.ggml_backend_dev_description(dev) or b"").decode()
        devices.append(Device(i, name, backend, description, free.value, total.value))
    return devices


def device_handles(backend: str | None) -> list[ctypes.c_void_p]:
    """The device handles of one backend (`cuda`), in llama.cpp's order, for
    `llama_model_params.devices`."""
    return [
        d[0]
        for d in _all_devices()
        if d[2] in ("gpu", "igpu") and (backend is None or d[3] == backend)
    ]


def build_backend() -> str:
    """The GPU backend this llama.cpp build offloads to (`metal`, `cuda`, `vulkan`, ...), or
    `cpu` when it has none (or no device of it is present)."""
    devices = gpu_devices()
    return devices[0].backend if devices else "cpu"


#: ggml's backend libraries that drive a GPU (libggml-<name>.so / .dylib / ggml-<name>.dll)
GPU_LIBRARIES = ("cuda", "metal", "vulkan", "hip", "sycl", "opencl", "musa", "cann")


def built_gpu_backends() -> list[str]:
    """The GPU backends this llama-cpp-python was compiled with, whether or not a GPU is
    present (read from the backend libraries it ships)."""
    import pathlib

    lib = pathlib.Path(lc.__file__).parent / "lib"
    found = set()
    for path in lib.glob("*ggml-*"):
        name = path.name.split("ggml-", 1)[1].split(".", 1)[0].lower()
        if name in GPU_LIBRARIES:
            found.add(name)
    return sorted(found)


def cpu_features() -> dict[str, str]:
    """The CPU features this llama.cpp build uses (`llama_print_system_info`'s CPU part)."""
    info = lc.llama_print_system_info().decode(errors="replace")
    found: dict[str, str] = {}
    for part in info.split("|"):
        key, sep, value = part.rpartition("=")
        if sep:
            found[key.split(":")[-1].strip()] = value.strip()
    return found


def repack_by_default(features: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether weights go to llama.cpp's extra CPU buffer types (repacked for its AVX2,
    AVX-512 or NEON kernels, or for Intel AMX) when the `repack` setting is `auto`, and why.

    Not on a build with AMX kernels: their matrix product crashes the process on some machines
    that report AMX (llama.cpp issue 20824, seen on cloud VMs), on the first request or at
    load, and the process cannot catch it."""
    features = cpu_features() if features is None else features
    if features.get("AMX_INT8") == "1":
        return False, (
            "llama.cpp was built with AMX kernels, which crash on some machines (llama.cpp "
            "issue 20824): weights are not repacked (--repack on to use them)"
        )
    return True, "weights are repacked for this CPU's kernels where llama.cpp can"
