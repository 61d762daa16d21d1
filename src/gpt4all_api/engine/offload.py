"""GPU offload: how many layers of a model go to the GPU, fitted to free device memory.

llama.cpp's `n_gpu_layers = k` puts the output layer and the last `k - 1` repeating layers on
the GPU(s); the token embeddings always stay on the CPU. Each layer placed on a device brings its
weights and its KV cache there, and a device holding layers also holds a compute buffer. The
sizes come from the GGUF header (docs/gpu.md has the formula and its measured error):

    weights(i)  = sum of the bytes of the tensors `blk.<i>.*`
    output      = bytes of `output.weight` (or of `token_embd.weight`, copied there when the
                  model ties its embeddings) + `output_norm.weight`
    kv(i)       = cells * n_head_kv * (head_dim_k * size(type_k) + head_dim_v * size(type_v))
    cells       = pad(pad(context_size * parallel, 256) / parallel, 256) * parallel
                  (with kv_unified: pad(kv_size, 256), one pool for all sequences)
    n_ubatch    = max(batch_size, 2 * parallel)
    compute     = 4 * n_ubatch * (4 * n_embd + n_ff)     on each device holding layers
                + 4 * n_ubatch * n_ctx_seq * n_head      with flash attention off (the scores)
                + 4 * n_ubatch * n_vocab                 on the device holding the output layer

`auto` offloads the most layers whose estimate, plus a safety margin, fits each device's free
memory; with several GPUs, layers are shared out as llama.cpp does (in proportion to
`tensor_split`, else to free memory) and every device must fit its share.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from .devices import Device
from .kv_types import DEFAULT_KV_TYPES, KV_TYPE_NAMES

if TYPE_CHECKING:
    from ..library.gguf_header import GGUFInfo

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: The words `device` accepts (GPT4All's), and what they ask for.
DEVICES = ("auto", "cpu", "gpu", "metal", "cuda", "vulkan")
KV_TYPES = {name: GGMLQuantizationType[name.upper()] for name in KV_TYPE_NAMES}


class OffloadUnavailable(RuntimeError):
    """GPU offload was asked for explicitly and this build or machine cannot do it."""


@dataclass(frozen=True)
class LayerCosts:
    """Bytes a model puts on a device, per layer, for one engine configuration."""

    layer_weights: tuple[int, ...]  # per repeating layer (block), in order
    layer_kv: tuple[int, ...]  # KV cache of each repeating layer
    output_weights: int  # the output layer (norm + projection)
    input_weights: int  # token embeddings: always on the CPU
    compute_layers: int  # activations of one micro-batch, on each device that holds layers
    compute_output: int  # logits of one micro-batch, on the device of the output layer
    tied: bool = False  # output layer = a copy of the token embeddings (+ norm)

    @property
    def n_layer(self) -> int:
        return len(self.layer_weights)

    def scaled(self, factor: float) -> LayerCosts:
        """The same model with `factor` times its weights and KV cache (for tests and
        what-ifs); the compute buffers follow the vocabulary and batch size, so they stay."""

        def s(n: int) -> int:
            return round(n * factor)

        return replace(
            self,
            layer_weights=tuple(s(n) for n in self.layer_weights),
            layer_kv=tuple(s(n) for n in self.layer_kv),
            output_weights=s(self.output_weights),
            input_weights=s(self.input_weights),
        )


def kv_cells(context_size: int, parallel: int, pool: int = 0) -> int:
    """KV cells llama.cpp allocates for `parallel` sequences of `context_size`, or for one
    unified pool of `pool` tokens."""

    def pad(n: int) -> int:
        return (n + 255) // 256 * 256

    if pool:
        return pad(pool)
    return pad(pad(context_size * parallel) // parallel) * parallel


def _type_size(kind: GGMLQuantizationType) -> float:
    block, size = GGML_QUANT_SIZES[kind]
    return size / block


def layer_costs(
    info: GGUFInfo,
    *,
    context_size: int,
    parallel: int,
    batch_size: int,
    kv_types: tuple[str, str] = DEFAULT_KV_TYPES,  # the K and V caches' types
    kv_size: int = 0,  # a unified pool's size (0: `context_size` per sequence)
    flash_attention: bool = True,  # off: the attention scores take room in the compute buffer
) -> LayerCosts:
    """The costs of a model from its GGUF header and the engine's context settings."""
    meta = info.metadata
    arch = str(meta.get("general.architecture", "llama"))

    def num(key: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int | float) else default

    n_layer = num("block_count")
    n_embd = num("embedding_length")
    n_head = num("attention.head_count", 1) or 1
    n_head_kv = num("attention.head_count_kv", n_head)  # per-layer arrays: taken as n_head
    head_k = num("attention.key_length", n_embd // n_head)
    head_v = num("attention.value_length", n_embd // n_head)
    n_ff = num("feed_forward_length")

    blocks = [0] * n_layer
    output = 0
    token_embd = 0
    has_output = False
    n_vocab = num("vocab_size")
    for t in info.tensors:
        if t.name.startswith("blk."):
            index = int(t.name.split(".", 2)[1])
            if index < n_layer:
                blocks[index] += t.n_bytes
        elif t.name.startswith("output"):  # output.weight, output_norm.weight
            output += t.n_bytes
            has_output = has_output or t.name == "output.weight"
            if t.name == "output.weight" and not n_vocab:
                n_vocab = t.shape[-1]
        elif t.name.startswith("token_embd"):
            token_embd += t.n_bytes
            if t.name == "token_embd.weight" and not n_vocab:
                n_vocab = t.shape[-1]
    if not has_output:  # tied embeddings: llama.cpp gives the output layer its own copy
        output += token_embd

    type_k, type_v = (KV_TYPES[t] for t in kv_types)
    per_cell = n_head_kv * (head_k * _type_size(type_k) + head_v * _type_size(type_v))
    kv = round(kv_cells(context_size, parallel, kv_size) * per_cell)
    n_ubatch = max(batch_size, parallel * 2)
    scores = 0 if flash_attention else 4 * n_ubatch * (kv_size or context_size) * n_head
    return LayerCosts(
        layer_weights=tuple(blocks),
        layer_kv=(kv,) * n_layer,
        output_weights=output,
        input_weights=token_embd,
        compute_layers=4 * n_ubatch * (4 * n_embd + n_ff) + scores,
        compute_output=4 * n_ubatch * n_vocab,
        tied=not has_output,
    )


@dataclass(frozen=True)
class Placement:
    """Where `gpu_layers` layers go, and the bytes each device is estimated to hold."""

    gpu_layers: int  # llama.cpp's n_gpu_layers, 0 .. n_layer + 1
    layers: tuple[int, ...]  # layers (the output layer counts as one) per device
    bytes: tuple[int, ...]  # estimated bytes per device


def place(costs: LayerCosts, gpu_layers: int, splits: Sequence[float]) -> tuple[Placement, int]:
    """Assign layers to devices as llama.cpp does for `n_gpu_layers = gpu_layers` (split mode
    `layer`): the placement and the weight bytes moved off the CPU."""
    n = costs.n_layer
    k = max(0, min(gpu_layers, n + 1))
    total = sum(splits) or 1.0
    points, acc = [], 0.0
    for s in splits:
        acc += s
        points.append(acc / total)
    layers = [0] * len(splits)
    used = [0] * len(splits)
    holds = [False] * len(splits)
    moved = 0
    start = n + 1 - k
    for il in range(start, n + 1):
        d = min(bisect.bisect_right(points, (il - start) / k), len(splits) - 1)
        layers[d] += 1
        holds[d] = True
        if il < n:
            used[d] += costs.layer_weights[il] + costs.layer_kv[il]
            moved += costs.layer_weights[il]
        else:
            used[d] += costs.output_weights + costs.compute_output
            moved += costs.output_weights
    for d, held in enumerate(holds):
        if held:
            used[d] += costs.compute_layers
    return Placement(k, tuple(layers), tuple(used)), moved


def fit(costs: LayerCosts, free: Sequence[int], splits: Sequence[float], margin: int) -> Placement:
    """The most layers whose placement leaves `margin` bytes free on every device."""
    for k in range(costs.n_layer + 1, 0, -1):
        placement, _ = place(costs, k, splits)
        if all(b + margin <= f for b, f in zip(placement.bytes, free, strict=True) if b):
            return placement
    return Placement(0, (0,) * len(free), (0,) * len(free))


@dataclass(frozen=True)
class OffloadOptions:
    """What the settings (or a model's overrides) ask for."""

    device: str = "auto"  # one of DEVICES
    gpu_layers: str = "auto"  # auto, all, or a number
    main_gpu: int = 0
    split_mode: str = "layer"  # none, layer, row
    tensor_split: tuple[float, ...] = ()
    margin: int = 512 * MiB
    repack: bool | None = None  # weights in llama.cpp's extra CPU buffers (None: its default)

    @property
    def wants_gpu(self) -> bool:
        """Asked for GPU offload explicitly (not `auto`, not `0`, not `cpu`)."""
        if self.device == "cpu" or self.gpu_layers == "0":
            return False
        return self.device not in ("auto",) or self.gpu_layers != "auto"


@dataclass(frozen=True)
class OffloadPlan:
    """What a model is loaded with."""

    gpu_layers: int  # llama.cpp's n_gpu_layers
    n_layers: int  # repeating layers + the output layer
    devices: tuple[Device, ...] = ()  # the devices it may use, in llama.cpp's order
    estimate: tuple[int, ...] = ()  # estimated bytes per device
    weights_on_gpu: int = 0  # estimated weight bytes moved off the CPU
    split_mode: str = "layer"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    backend_filter: str | None = None  # only this backend's devices (device=cuda, ...)
    reason: str = ""
    short: tuple[str, ...] = ()  # devices whose free memory is below the estimate (explicit k)

    @property
    def backend(self) -> str:
        return self.devices[0].backend if self.gpu_layers and self.devices else "cpu"

    @property
    def device(self) -> str:
        """Where the offloaded layers are: `cpu`, or llama.cpp's device names (`CUDA0`)."""
        if not self.gpu_layers:
            return "cpu"
        used = [d.name for d, b in zip(self.devices, self.estimate, strict=False) if b]
        return ",".join(used or [d.name for d in self.devices])


def check_available(options: OffloadOptions, devices: Sequence[Device]) -> None:
    """Raise OffloadUnavailable when `options` ask for a GPU this build or machine lacks, or
    name a GPU that is not there."""
    if options.device == "cpu" or options.gpu_layers == "0":
        return
    if not devices:
        if not options.wants_gpu:
            return
        what = (
            f"device={options.device}"
            if options.device not in ("auto", "gpu")
            else f"gpu_layers={options.gpu_layers}"
        )
        raise OffloadUnavailable(
            f"{what} asks for GPU offload, but this llama.cpp build has no GPU backend or no "
            "GPU was found (CPU only): rebuild llama-cpp-python with its GPU backend (README, "
            "GPU offload), or leave gpu_layers and device at auto (or set device to cpu)"
        )
    usable = [d for d in devices if options.device in ("auto", "gpu", d.backend)]
    if not usable:
        have = ", ".join(sorted({d.backend for d in devices}))
        raise OffloadUnavailable(
            f"device={options.device}, but this llama.cpp build offloads to {have}"
        )
    if options.split_mode == "none" and options.main_gpu >= len(usable):
        raise OffloadUnavailable(
            f"main_gpu={options.main_gpu}, but there are {len(usable)} GPU device(s)"
        )
    if len(options.tensor_split) > len(usable):
        raise OffloadUnavailable(
            f"tensor_split has {len(options.tensor_split)} values for {len(usable)} GPU device(s)"
        )


def _auto_reason(placement: Placement, n_layers: int, free: int, margin: int) -> str:
    k = placement.gpu_layers
    if k == n_layers:
        why = "the whole model fits"
    elif k:
        why = "partial offload: the whole model does not fit"
    else:
        why = "not even the output layer fits"
    return (
        f"auto: {k}/{n_layers} layers ({sum(placement.bytes) / MiB:.0f} MiB estimated, "
        f"{free / MiB:.0f} MiB free, {margin / MiB:.0f} MiB margin per device): {why}"
    )


def plan_offload(
    costs: LayerCosts, options: OffloadOptions, devices: Sequence[Device]
) -> OffloadPlan:
    """Choose `n_gpu_layers` for a model on these devices (their free memory as of now)."""
    n_layers = costs.n_layer + 1
    check_available(options, devices)
    if options.device == "cpu" or options.gpu_layers == "0" or not devices:
        why = "device=cpu" if options.device == "cpu" else "gpu_layers=0"
        why = why if devices else "no GPU backend in this llama.cpp build"
        return OffloadPlan(0, n_layers, reason=f"0/{n_layers} layers offloaded: {why}")
    if not costs.n_layer and options.gpu_layers == "auto":
        return OffloadPlan(0, n_layers, reason="auto: the GGUF header gives no layer count")
    backend = options.device if options.device in ("metal", "cuda", "vulkan") else None
    usable = [d for d in devices if backend is None or d.backend == backend]
    if options.split_mode == "none":  # llama.cpp keeps main_gpu alone, tensor_split unused
        usable = [usable[options.main_gpu]]
        splits = [1.0]
    else:
        splits = list(options.tensor_split) or [float(d.free) for d in usable]
        splits += [0.0] * (len(usable) - len(splits))
    free = [d.free for d in usable]
    common = {
        "split_mode": options.split_mode,
        "main_gpu": options.main_gpu,
        "tensor_split": options.tensor_split,
        "backend_filter": backend,
    }
    if options.gpu_layers == "auto":
        placement = fit(costs, free, splits, options.margin)
        _, moved = place(costs, placement.gpu_layers, splits)
        reason = _auto_reason(placement, n_layers, sum(free), options.margin)
        return OffloadPlan(
            placement.gpu_layers,
            n_layers,
            tuple(usable),
            placement.bytes,
            moved,
            reason=reason,
            **common,
        )
    k = n_layers if options.gpu_layers == "all" else min(int(options.gpu_layers), n_layers)
    placement, moved = place(costs, k, splits)
    reason = f"gpu_layers={options.gpu_layers}: {k}/{n_layers} layers"
    short = [d.name for d, b, f in zip(usable, placement.bytes, free, strict=True) if b and b > f]
    if short:
        reason += f" (estimated {sum(placement.bytes) / MiB:.0f} MiB: more than free on "
        reason += ", ".join(short) + ")"
    return OffloadPlan(
        k,
        n_layers,
        tuple(usable),
        placement.bytes,
        moved,
        reason=reason,
        short=tuple(short),
        **common,
    )


@dataclass(frozen=True)
class OffloadReport:
    """What a loaded model got: its plan and the buffers llama.cpp allocated for it."""

    plan: OffloadPlan
    device_memory: dict[str, int]  # device buffer name (CUDA0, Metal, ...) -> bytes
    host_memory: int  # bytes in RAM buffers (weights mapped from the file included)
    repacked_memory: int = 0  # of those, weights repacked for llama.cpp's faster CPU kernels

    @classmethod
    def of(cls, plan: OffloadPlan, buffers: dict[str, int]) -> OffloadReport:
        from .llama_log import is_host_buffer, is_repacked_buffer

        device = {k: v for k, v in buffers.items() if not is_host_buffer(k)}
        host = sum(v for k, v in buffers.items() if is_host_buffer(k))
        repacked = sum(v for k, v in buffers.items() if is_repacked_buffer(k))
        return cls(plan, device, host, repacked)

    def as_dict(self) -> dict[str, object]:
        return {
            "device": self.plan.device,
            "backend": self.plan.backend,
            "gpu_layers": self.plan.gpu_layers,
            "layers": self.plan.n_layers,
            "device_memory": sum(self.device_memory.values()),
            "device_memory_by_device": dict(self.device_memory),
            "device_memory_estimate": sum(self.plan.estimate) if self.plan.gpu_layers else 0,
            "host_memory": self.host_memory,
            "repacked_memory": self.repacked_memory,
        }
