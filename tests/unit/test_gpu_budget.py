"""The model library counts device memory apart from RAM: a model that wants more GPU memory than
is free unloads idle models holding memory on that GPU, and loads with what fits when none is
idle. The GPU is simulated: its free memory is 8 GiB less what the loaded models hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gpt4all_api.engine.devices import Device
from gpt4all_api.engine.offload import OffloadPlan, OffloadReport
from gpt4all_api.engine.scheduler import EngineConfig
from gpt4all_api.library.registry import GRACE, Loaded, ModelRegistry
from gpt4all_api.library.store import LocalModel, ModelStore

GiB = 1 << 30
TOTAL = 8 * GiB


class IdleEngine:
    """What the registry asks of an engine when it unloads one."""

    busy = False
    alive = True
    last_used = 0.0

    def close(self, drain: bool = True) -> None:
        pass

    def join(self, timeout: float | None = None) -> bool:
        return True


class Weights:
    def close(self) -> None:
        pass


def loaded(name: str, device_memory: int, ram: int = GiB, busy: bool = False) -> Loaded:
    engine = IdleEngine()
    engine.busy = busy
    plan = OffloadPlan(1, 31, reason="test")
    entry = LocalModel(name, Path(name), ram, 0)
    return Loaded(
        entry=entry,
        model=Weights(),  # type: ignore[arg-type]
        engine=engine,  # type: ignore[arg-type]
        offload=OffloadReport(plan, {"CUDA0": device_memory} if device_memory else {}, 0),
        ram=ram,
        last_get=-10 * GRACE,
        last_active=-10 * GRACE,
    )


def registry(tmp_path: Path, *models: Loaded, memory_budget: int | None = None) -> ModelRegistry:
    reg: ModelRegistry

    def devices() -> list[Device]:
        used = sum(sum(m.offload.device_memory.values()) for m in reg.loaded.values())
        return [Device(0, "CUDA0", "cuda", "simulated", TOTAL - used, TOTAL)]

    reg = ModelRegistry(
        ModelStore(tmp_path), EngineConfig(), memory_budget=memory_budget, devices=devices
    )
    for m in models:
        reg._loaded[m.entry.id] = m
    return reg


def wanting(device_bytes: int) -> OffloadPlan:
    gpu = Device(0, "CUDA0", "cuda", "simulated", TOTAL, TOTAL)
    return OffloadPlan(31, 31, (gpu,), (device_bytes,), device_bytes, reason="test")


def test_an_idle_model_on_the_gpu_makes_room(tmp_path: Path) -> None:
    old, cpu_only = loaded("old.gguf", 6 * GiB), loaded("cpu.gguf", 0)
    reg = registry(tmp_path, cpu_only, old)
    asyncio.run(reg._make_room("new.gguf", GiB, wanting(4 * GiB), margin=512 << 20))
    # the model on the CPU stays: unloading it would free no device memory
    assert set(reg.loaded) == {"cpu.gguf"}


def test_room_on_the_gpu_unloads_nothing(tmp_path: Path) -> None:
    reg = registry(tmp_path, loaded("old.gguf", 2 * GiB))
    asyncio.run(reg._make_room("new.gguf", GiB, wanting(4 * GiB), margin=512 << 20))
    assert set(reg.loaded) == {"old.gguf"}


def test_a_busy_model_stays_and_the_new_one_does_not_wait(tmp_path: Path) -> None:
    reg = registry(tmp_path, loaded("busy.gguf", 6 * GiB, busy=True))

    async def scenario() -> None:
        await asyncio.wait_for(
            reg._make_room("new.gguf", GiB, wanting(4 * GiB), margin=512 << 20), timeout=5
        )

    asyncio.run(scenario())  # the load then plans with the free memory of now: partial offload
    assert set(reg.loaded) == {"busy.gguf"}


def test_ram_and_device_memory_are_counted_apart(tmp_path: Path) -> None:
    # 3 GiB of RAM budget: the GPU model's 1 GiB of RAM and the new model's 1.5 GiB fit, and
    # its 6 GiB on the GPU do not count against RAM
    gpu_model = loaded("gpu.gguf", 6 * GiB, ram=GiB)
    reg = registry(tmp_path, gpu_model, memory_budget=3 * GiB)
    asyncio.run(reg._make_room("new.gguf", GiB + GiB // 2, wanting(0), margin=0))
    assert set(reg.loaded) == {"gpu.gguf"}
    # the RAM estimate of a model leaves out the weights its plan moves to the GPU
    entry = LocalModel("big.gguf", Path("big.gguf"), 4 * GiB, 0)
    assert reg._ram_of(entry) == 5 * GiB
    assert reg._ram_of(entry, wanting(3 * GiB)) == 2 * GiB
