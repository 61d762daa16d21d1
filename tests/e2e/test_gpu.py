"""GPU offload against the real server and model, on whatever build this is.

On a CPU-only build (CI): `gpu_layers=auto` loads with 0 layers and reports `cpu`; an explicit
`--gpu-layers 10` stops the server at startup with a message that says why. The tests marked
`gpu` run only where llama.cpp has a GPU backend and a GPU (docs/gpu.md: how to run them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import HTTP, ServerProcess
from gpt4all_api.engine import llama_log
from gpt4all_api.engine.devices import build_backend, repack_by_default, supports_gpu_offload
from gpt4all_api.engine.model import Model
from gpt4all_api.engine.offload import layer_costs
from gpt4all_api.engine.scheduler import Engine, EngineConfig
from gpt4all_api.library.gguf_header import read_info

pytestmark = pytest.mark.e2e

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
LAYERS = 31  # 30 blocks + the output layer
GPU_BUILD = supports_gpu_offload()
NO_GPU = "needs a llama.cpp build with a GPU backend and a GPU (see docs/gpu.md)"


def server(home: Path, *args: str) -> ServerProcess:
    return ServerProcess(
        models_dir=home / "models",
        log_path=home / "server.log",
        args=["--parallel", "2", "--context-size", "1024", *args],
    )


def start(home: Path, *args: str) -> ServerProcess:
    return server(home, *args).start()


@pytest.fixture(scope="module")
def auto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("gpu-auto")
    (home / "models").mkdir()
    srv = start(home)  # gpu_layers and device at their default: auto
    yield srv
    srv.stop()


def metric(base: str, name: str, **labels: str) -> float | None:
    text = HTTP.get(base + "/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_auto_reports_where_the_model_runs(auto_server: ServerProcess) -> None:
    base = auto_server.base_url
    health = HTTP.get(base + "/health").json()
    assert health["status"] == "ok"
    assert health["backend"] == build_backend()
    card = HTTP.get(base + f"/v1/models/{EMBEDDED}").json()
    offload = card["offload"]
    assert card["loaded"] is True and offload["layers"] == LAYERS
    stats = HTTP.get(base + "/v1/stats").json()
    assert stats["backend"] == health["backend"]
    assert stats["models"][EMBEDDED]["offload"] == offload
    assert metric(base, "gpt4all_api_model_layers", model=EMBEDDED) == LAYERS
    assert metric(base, "gpt4all_api_gpu_layers", model=EMBEDDED) == offload["gpu_layers"]
    if GPU_BUILD:  # a 135M model fits any GPU
        assert health["backend"] != "cpu"
        assert offload["gpu_layers"] == LAYERS and offload["device"] != "cpu"
        assert offload["device_memory"] > 0
    else:
        assert health["backend"] == "cpu"
        assert offload["device"] == "cpu" and offload["backend"] == "cpu"
        assert offload["gpu_layers"] == 0
        assert offload["device_memory"] == 0 and offload["device_memory_by_device"] == {}
        assert offload["host_memory"] > 90 * 1024 * 1024  # the weights, at least, are in RAM
        assert metric(base, "gpt4all_api_device_memory_bytes", model=EMBEDDED, device="cpu") == 0
    repack, _ = repack_by_default()
    if not repack:  # a build with AMX kernels: the weights as the file has them
        assert offload["repacked_memory"] == 0
    # and it answers (a build with AMX kernels: without the crash llama.cpp #20824 gives)
    r = HTTP.post(base + "/v1/completions", json={"prompt": "Hello", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    # an unloaded model has no offload to show
    listed = HTTP.get(base + "/v1/models").json()["data"]
    assert all((m["offload"] is None) == (not m["loaded"]) for m in listed)


def test_explicit_gpu_layers(tmp_path: Path) -> None:
    """CPU-only build: a clear error at startup, before anything loads (never a crash and never
    a silent CPU run). GPU build: the 10 layers asked for."""
    (tmp_path / "models").mkdir()
    if not GPU_BUILD:
        srv = server(tmp_path, "--gpu-layers", "10")
        with pytest.raises(RuntimeError, match="server exited with 1") as exc:
            srv.start()
        srv.stop()  # closes its log
        message = str(exc.value)
        assert "gpu_layers=10 asks for GPU offload" in message
        assert "no GPU backend" in message and "README" in message
        assert "Traceback" not in message
        return
    srv = start(tmp_path, "--gpu-layers", "10")
    try:
        card = HTTP.get(srv.base_url + f"/v1/models/{EMBEDDED}").json()
        assert card["offload"]["gpu_layers"] == 10
    finally:
        srv.stop()


def test_repack_off_keeps_the_weights_as_the_file_has_them(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    srv = start(tmp_path, "--repack", "off")
    try:
        card = HTTP.get(srv.base_url + f"/v1/models/{EMBEDDED}").json()
        assert card["offload"]["repacked_memory"] == 0
        r = HTTP.post(
            srv.base_url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    finally:
        srv.stop()


def test_device_cpu_keeps_every_layer_on_the_cpu(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    srv = start(tmp_path, "--device", "cpu")
    try:
        assert HTTP.get(srv.base_url + "/health").json()["backend"] == "cpu"
        card = HTTP.get(srv.base_url + f"/v1/models/{EMBEDDED}").json()
        assert card["offload"]["gpu_layers"] == 0 and card["offload"]["device"] == "cpu"
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("context_size", "parallel", "kv"),
    [
        (2048, 8, ("q8_0", "f16")),
        (2048, 8, ("q8_0", "q8_0")),
        (2048, 8, ("f16", "f16")),
        (1000, 3, ("q8_0", "f16")),
    ],
)
def test_estimate_against_llama_cpp_buffers(
    embedded_model: Path, context_size: int, parallel: int, kv: tuple[str, str]
) -> None:
    """The estimate of weights, KV cache and compute buffer next to what llama.cpp reports it
    allocated (on the CPU here: the same tensors, the same cache, the same graph)."""
    costs = layer_costs(
        read_info(embedded_model),
        context_size=context_size,
        parallel=parallel,
        batch_size=512,
        kv_types=kv,
    )
    config = EngineConfig(context_size=context_size, parallel=parallel, threads=1, kv_types=kv)
    with llama_log.capture() as buffers:
        model = Model.load(embedded_model)
        engine = Engine(model, config)
    try:
        sizes = buffers.sizes
        mib = 1024 * 1024
        # on the CPU tied embeddings stay one tensor: the blocks plus the output layer's
        model_buffer = sum(v for (_name, kind), v in sizes.items() if kind == "model")
        assert abs(model_buffer - (sum(costs.layer_weights) + costs.output_weights)) <= 0.01 * mib
        kv_buffer = sum(v for (_name, kind), v in sizes.items() if kind == "KV")
        assert abs(kv_buffer - sum(costs.layer_kv)) <= 0.01 * mib
        compute = sizes[("CPU", "compute")]
        estimate = costs.compute_layers + costs.compute_output
        assert 0 <= estimate - compute <= 0.10 * compute  # a little over, never under
    finally:
        engine.close()
        engine.join()
        model.close()


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_BUILD, reason=NO_GPU)
def test_gpu_offloads_and_agrees_with_the_cpu(auto_server: ServerProcess, tmp_path: Path) -> None:
    base = auto_server.base_url
    offload = HTTP.get(base + f"/v1/models/{EMBEDDED}").json()["offload"]
    assert offload["gpu_layers"] > 0 and offload["device_memory"] > 0
    assert offload["device_memory_estimate"] > 0
    (tmp_path / "models").mkdir()
    cpu = start(tmp_path, "--device", "cpu")
    try:
        body = {
            "prompt": "The capital of France is",
            "max_tokens": 8,
            "temperature": 0,
            "logprobs": 1,
        }
        on_gpu = HTTP.post(base + "/v1/completions", json=body).json()
        on_cpu = HTTP.post(cpu.base_url + "/v1/completions", json=body).json()
        gpu_tokens = on_gpu["choices"][0]["logprobs"]["tokens"]
        cpu_tokens = on_cpu["choices"][0]["logprobs"]["tokens"]
        assert len(gpu_tokens) >= 4
        assert gpu_tokens[:4] == cpu_tokens[:4]
    finally:
        cpu.stop()
