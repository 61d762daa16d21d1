"""Loaded models: load on demand (once, however many requests ask at the same time), keep, reload,
and unload: the least recently used idle model makes room for a new one when `max_loaded` models
or the memory budget would be exceeded, and a model idle for longer than its keep-alive is
unloaded by a background task.

Each loaded model has its own engine thread and llama.cpp context, so loading one model never
stops requests to models already loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine import llama_log
from ..engine.devices import Device, gpu_devices
from ..engine.embedding import Embedder
from ..engine.model import Model, ModelLoadError
from ..engine.offload import (
    LayerCosts,
    OffloadOptions,
    OffloadPlan,
    OffloadReport,
    OffloadUnavailable,
    check_available,
    layer_costs,
    plan_offload,
)
from ..engine.scheduler import Engine, EngineConfig
from ..errors import Conflict, EngineError, InvalidRequest, ModelNotFound, Overloaded
from .catalog import Catalog
from .gguf_header import read_info
from .model_settings import ModelSettings
from .store import LocalModel, ModelStore

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

GRACE = 2.0  # seconds a model handed to a request is not unloaded, so the request can submit
WAIT_FOR_ROOM = 120.0  # seconds a load waits for a busy model to become idle before a 503
REAP_EVERY = 1.0


@dataclass(frozen=True)
class ModelDefaults:
    """What the catalog says a model wants when a request does not say."""

    prompt_template: str | None = None
    system_prompt: str | None = None  # raw text before the first turn (GPT4All `%1` templates)
    system_message: str | None = None  # a plain system message (chat templates)


@dataclass
class Loaded:
    entry: LocalModel
    model: Model
    engine: Engine
    offload: OffloadReport
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    ram: int = 0
    keep_alive: float = 300.0
    last_active: float = field(default_factory=time.monotonic)
    last_get: float = field(default_factory=time.monotonic)
    embedder: Embedder | None = None  # made on the first embeddings request

    def free(self) -> None:
        """Free llama.cpp memory once the engine has stopped."""
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None
        self.model.close()

    def idle_since(self) -> float:
        return max(self.last_active, self.engine.last_used, self.last_get)


class ModelRegistry:
    """Owns every loaded model. Used from the event loop; loading runs in a worker thread."""

    def __init__(
        self,
        store: ModelStore,
        config: EngineConfig,
        *,
        max_loaded: int = 3,
        memory_budget: int | None = None,
        keep_alive: float = 300.0,
        catalog: Catalog | None = None,
        model_settings: ModelSettings | None = None,
        devices: Callable[[], list[Device]] = gpu_devices,
    ):
        self.store = store
        self.config = config
        self.model_settings = model_settings or ModelSettings(OffloadOptions())
        self.devices = devices  # the GPUs and their free memory, read when needed
        self._gpu_lock = threading.Lock()  # one offloading load at a time: each sees the last
        self.max_loaded = max_loaded
        self.memory_budget = memory_budget
        self.keep_alive = keep_alive
        self.catalog = catalog if catalog is not None else store.catalog
        self._loaded: dict[str, Loaded] = {}
        self._loading: dict[str, asyncio.Task[Loaded]] = {}
        self._reserved: dict[str, int] = {}
        self._room: asyncio.Lock | None = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> dict[str, Loaded]:
        return dict(self._loaded)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    def in_use(self, model_id: str) -> bool:
        """Loaded (or loading) and running or about to run requests."""
        if model_id in self._loading:
            return True
        loaded = self._loaded.get(model_id)
        if loaded is None:
            return False
        return loaded.engine.busy or time.monotonic() - loaded.last_get < GRACE

    async def get(
        self, name: str, *, reload: bool = False, keep_alive: float | None = None
    ) -> Loaded:
        """The loaded model for `name`, loading (or reloading from disk) it first if needed.
        `keep_alive` (seconds; negative = forever) replaces the model's idle timeout."""
        entry = self.store.cached(name)  # no disk: the folder listing is cached
        if entry is None:  # not known (yet): look on disk again, off the event loop
            entry = await asyncio.to_thread(self.store.resolve, name)
        self._start_reaper()
        current = self._loaded.get(entry.id)
        if current is not None and not reload and current.engine.alive:
            return self._touch(current, keep_alive)
        task = self._loading.get(entry.id)
        if task is None:
            task = asyncio.create_task(self._load(entry, replace=current))
            self._loading[entry.id] = task
            task.add_done_callback(lambda _t, key=entry.id: self._loading.pop(key, None))
        return self._touch(await asyncio.shield(task), keep_alive)

    def _touch(self, loaded: Loaded, keep_alive: float | None) -> Loaded:
        now = time.monotonic()
        loaded.last_get = loaded.last_active = now
        if keep_alive is not None:
            loaded.keep_alive = keep_alive
        return loaded

    async def _load(self, entry: LocalModel, replace: Loaded | None) -> Loaded:
        options = self.model_settings.offload_for(entry.id)
        costs = await asyncio.to_thread(self._costs_of, entry)
        # what the model would get if none of our idle models held device memory
        wanted = await asyncio.to_thread(self._plan, costs, options, True)
        ram = self._ram_of(entry, wanted)
        if replace is None:
            await self._make_room(entry.id, ram, wanted, options.margin)
        try:
            log.info("loading %s from %s", entry.id, entry.path)
            loaded = await asyncio.to_thread(self._load_sync, entry.path, entry, costs, options)
        finally:
            self._reserved.pop(entry.id, None)
        loaded.ram = ram
        loaded.defaults = self._defaults_of(entry)
        loaded.keep_alive = self.keep_alive
        self._loaded[entry.id] = loaded
        if replace is not None:
            await self._retire(replace)
        return loaded

    def _load_sync(
        self, path: Path, entry: LocalModel, costs: LayerCosts, options: OffloadOptions
    ) -> Loaded:
        if not path.is_file():  # gone since the folder was last listed
            self.store.scan()
            raise ModelNotFound(entry.id)
        offloading = bool(self.devices())
        with self._gpu_lock if offloading else contextlib.nullcontext():
            plan = self._plan(costs, options, False)  # the free memory of now
            log.log(
                logging.WARNING if plan.short else logging.INFO, "%s: %s", entry.id, plan.reason
            )
            with llama_log.capture() as buffers:
                try:
                    model = Model.load(path, plan, repack=options.repack)
                except ModelLoadError as exc:
                    if plan.gpu_layers:
                        message = (
                            f"llama.cpp could not load '{entry.id}' with {plan.gpu_layers} of "
                            f"{plan.n_layers} layers on {plan.device} (not enough device "
                            "memory?); lower gpu_layers or use auto"
                        )
                    else:
                        message = f"'{entry.id}' is not a loadable GGUF model: {exc}"
                    raise InvalidRequest(message, param="model", code="model_load_failed") from exc
                try:
                    engine = Engine(model, self.config, name=entry.id)
                except EngineError as exc:
                    model.close()
                    if not plan.gpu_layers:
                        raise
                    raise InvalidRequest(
                        f"llama.cpp could not make a context for '{entry.id}' with "
                        f"{plan.gpu_layers} of {plan.n_layers} layers on {plan.device} (not "
                        "enough device memory for the KV cache?); lower gpu_layers, "
                        "context_size or parallel, or use auto",
                        param="model",
                        code="model_load_failed",
                    ) from exc
                except Exception:
                    model.close()
                    raise
        report = OffloadReport.of(plan, buffers.by_buffer())
        if plan.gpu_layers:
            log.info(
                "%s: %d/%d layers on %s, %d MiB of device memory (estimated %d MiB)",
                entry.id,
                plan.gpu_layers,
                plan.n_layers,
                plan.device,
                sum(report.device_memory.values()) >> 20,
                sum(plan.estimate) >> 20,
            )
        return Loaded(entry=entry, model=model, engine=engine, offload=report)

    # -- GPU offload ---------------------------------------------------------------------------

    def _costs_of(self, entry: LocalModel) -> LayerCosts:
        return layer_costs(
            read_info(entry.path),
            context_size=self.config.context_size,
            parallel=self.config.parallel,
            batch_size=self.config.batch_size,
            kv_types=self.config.kv_types,
            kv_size=self.config.pool_cells if self.config.kv_unified else 0,
            flash_attention=self.config.flash is not False,
        )

    def _plan(self, costs: LayerCosts, options: OffloadOptions, ours_free: bool) -> OffloadPlan:
        """The offload plan on the devices' free memory; with `ours_free`, as if our loaded
        models' device memory were free too (what unloading them could give)."""
        devices = self.devices()
        if ours_free:
            ours: dict[str, int] = {}
            for loaded in list(self._loaded.values()):  # called off the event loop
                for name, size in loaded.offload.device_memory.items():
                    ours[name] = ours.get(name, 0) + size
            devices = [dc_replace(d, free=d.free + ours.get(d.name, 0)) for d in devices]
        try:
            return plan_offload(costs, options, devices)
        except OffloadUnavailable as exc:
            raise InvalidRequest(str(exc), param="model", code="model_load_failed") from exc

    def _device_short(self, wanted: OffloadPlan, margin: int) -> list[str]:
        """The devices whose free memory is short of what `wanted` puts on them."""
        if not wanted.gpu_layers:
            return []
        free = {d.name: d.free for d in self.devices()}
        return [
            d.name
            for d, need in zip(wanted.devices, wanted.estimate, strict=False)
            if need and need + margin > free.get(d.name, 0)
        ]

    @property
    def backend(self) -> str:
        """The backend models run on by default: `cpu`, `metal`, `cuda`, `vulkan`, ..."""
        base = self.model_settings.base
        if base.device == "cpu" or base.gpu_layers == "0":
            return "cpu"
        devices = [d for d in self.devices() if base.device in ("auto", "gpu", d.backend)]
        return devices[0].backend if devices else "cpu"

    # -- room: max_loaded and the memory budget ------------------------------------------------

    def _ram_of(self, entry: LocalModel, plan: OffloadPlan | None = None) -> int:
        """RAM a model needs: the catalog's `ramrequired`, else a margin over its file size;
        less the weights its offload plan moves to a GPU (those count as device memory)."""
        ram = int(entry.size * 1.25)
        if self.catalog is not None:
            known = self.catalog.cached().by_filename(entry.id)
            if known is not None and known.ram_bytes:
                ram = known.ram_bytes
        if plan is not None and plan.weights_on_gpu:
            ram = max(ram - plan.weights_on_gpu, ram // 10)
        return ram

    def _defaults_of(self, entry: LocalModel) -> ModelDefaults:
        known = self.catalog.cached().by_filename(entry.id) if self.catalog is not None else None
        if known is None:
            return ModelDefaults()
        return ModelDefaults(
            prompt_template=known.prompt_template or None,
            system_prompt=known.system_prompt or None,
            system_message=known.system_message or None,
        )

    async def _make_room(
        self, model_id: str, ram: int, wanted: OffloadPlan | None = None, margin: int = 0
    ) -> None:
        """Unload least recently used idle models until `model_id` fits; wait while all are busy.

        RAM and device memory are counted apart: RAM against the memory budget, device memory
        against each GPU's free memory. A model whose wanted offload does not fit the free
        device memory unloads idle models holding memory on those GPUs; when none is idle it
        loads with the layers that fit (partial offload) rather than wait."""
        if self._room is None:
            self._room = asyncio.Lock()
        async with self._room:
            deadline = time.monotonic() + WAIT_FOR_ROOM
            while True:
                others = {k: v.ram for k, v in self._loaded.items() if k != model_id}
                others.update({k: v for k, v in self._reserved.items() if k != model_id})
                used = sum(others.values()) + ram
                fits_count = len(others) + 1 <= self.max_loaded
                fits_ram = self.memory_budget is None or used <= self.memory_budget
                device_victim = None
                if wanted is not None and fits_count and (fits_ram or not others):
                    short = self._device_short(wanted, margin)
                    if short:
                        device_victim = self._idlest(exclude=model_id, holding=short)
                if device_victim is not None:
                    log.info(
                        "unloading %s to make room for %s (device memory)", device_victim, model_id
                    )
                    await self.unload(device_victim)
                    continue
                if fits_count and (fits_ram or not others):
                    if not fits_ram:
                        log.warning(
                            "%s needs about %d MiB, more than the memory budget; loading anyway",
                            model_id,
                            ram >> 20,
                        )
                    self._reserved[model_id] = ram
                    return
                victim = self._idlest(exclude=model_id)
                if victim is not None:
                    reason = "max_loaded_models" if not fits_count else "the memory budget"
                    log.info("unloading %s to make room for %s (%s)", victim, model_id, reason)
                    await self.unload(victim)
                    continue
                if time.monotonic() > deadline:
                    raise Overloaded(
                        f"cannot load {model_id}: the loaded models are all busy "
                        f"(max_loaded_models={self.max_loaded}); retry shortly",
                        retry_after=5,
                    )
                await asyncio.sleep(0.1)

    def _idlest(self, exclude: str, holding: list[str] | None = None) -> str | None:
        """The least recently used idle model; with `holding`, only one with memory on one of
        those devices."""
        now = time.monotonic()
        idle = [
            v
            for k, v in self._loaded.items()
            if k != exclude
            and k not in self._loading
            and not v.engine.busy
            and now - v.last_get >= GRACE
            and (holding is None or any(v.offload.device_memory.get(d) for d in holding))
        ]
        if not idle:
            return None
        return min(idle, key=Loaded.idle_since).entry.id

    # -- keep-alive ----------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        """Keep-alive, and the models folder's listing kept fresh (off the event loop)."""
        while True:
            await asyncio.sleep(REAP_EVERY)
            try:
                await self.reap()
            except Exception:
                log.exception("keep-alive check failed")
            try:
                await asyncio.to_thread(self.store.refresh)
            except Exception:
                log.exception("could not list the models folder %s", self.store.models_dir)

    async def reap(self) -> list[str]:
        """Unload every model idle for longer than its keep-alive; returns their ids."""
        now = time.monotonic()
        expired = []
        for model_id, loaded in list(self._loaded.items()):
            if loaded.engine.busy:
                loaded.last_active = now
                continue
            if model_id in self._loading or loaded.keep_alive < 0 or now - loaded.last_get < GRACE:
                continue
            if now - loaded.idle_since() >= loaded.keep_alive:
                expired.append(model_id)
        for model_id in expired:
            log.info("unloading %s: idle for longer than its keep-alive", model_id)
            await self.unload(model_id)
        return expired

    # -- unloading -----------------------------------------------------------------------------

    async def _retire(self, old: Loaded) -> None:
        """Let a replaced model finish what it is running, then free it."""
        old.engine.close(drain=True)
        await asyncio.to_thread(old.engine.join)
        old.free()

    async def unload(self, model_id: str) -> bool:
        loaded = self._loaded.pop(model_id, None)
        if loaded is None:
            return False
        await self._retire(loaded)
        return True

    async def unload_idle(self, model_id: str) -> None:
        """Unload a model that nothing is using; Conflict if it is in use."""
        if self.in_use(model_id):
            raise Conflict(
                f"{model_id} is in use; retry when its requests have finished",
                param="model",
                code="model_in_use",
            )
        await self.unload(model_id)

    async def close(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper
        for loaded in self._loaded.values():
            loaded.engine.close(drain=drain)
        for loaded in list(self._loaded.values()):
            await asyncio.to_thread(loaded.engine.join, timeout)
            if loaded.engine.join(0):
                loaded.free()
        self._loaded.clear()


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def registry_from(settings: Settings, store: ModelStore, config: EngineConfig) -> ModelRegistry:
    """The registry a server uses: `max_loaded_models`, the memory budget, keep-alive and the
    GPU settings (with each model's overrides).

    A GPU asked for explicitly (`gpu_layers` a number or `all`, `device` gpu/metal/cuda/vulkan,
    here or in the per-model settings) that this build or machine lacks stops the server here,
    with a message saying so (OffloadUnavailable), rather than running on the CPU unnoticed."""
    model_settings = ModelSettings.from_settings(settings)
    devices = gpu_devices()
    for name, options in model_settings.all_options().items():
        try:
            check_available(options, devices)
        except OffloadUnavailable as exc:
            where = "" if name == "*" else f" (model settings [{name!r}])"
            raise OffloadUnavailable(f"{exc}{where}") from None
    if settings.memory_budget is None:
        total = physical_memory()
        budget = int(total * 0.75) if total else None
    else:
        budget = int(settings.memory_budget * 1024**3) or None
    return ModelRegistry(
        store,
        config,
        max_loaded=settings.max_loaded_models,
        memory_budget=budget,
        keep_alive=settings.keep_alive,
        model_settings=model_settings,
    )
