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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.embedding import Embedder
from ..engine.model import Model, ModelLoadError
from ..engine.scheduler import Engine, EngineConfig
from ..errors import Conflict, InvalidRequest, ModelNotFound, Overloaded
from .catalog import Catalog
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
    ):
        self.store = store
        self.config = config
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
        ram = self._ram_of(entry)
        if replace is None:
            await self._make_room(entry.id, ram)
        try:
            log.info("loading %s from %s", entry.id, entry.path)
            loaded = await asyncio.to_thread(self._load_sync, entry.path, entry)
        finally:
            self._reserved.pop(entry.id, None)
        loaded.ram = ram
        loaded.defaults = self._defaults_of(entry)
        loaded.keep_alive = self.keep_alive
        self._loaded[entry.id] = loaded
        if replace is not None:
            await self._retire(replace)
        return loaded

    def _load_sync(self, path: Path, entry: LocalModel) -> Loaded:
        if not path.is_file():  # gone since the folder was last listed
            self.store.scan()
            raise ModelNotFound(entry.id)
        try:
            model = Model.load(path)
        except ModelLoadError as exc:
            raise InvalidRequest(
                f"'{entry.id}' is not a loadable GGUF model: {exc}",
                param="model",
                code="model_load_failed",
            ) from exc
        try:
            engine = Engine(model, self.config, name=entry.id)
        except Exception:
            model.close()
            raise
        return Loaded(entry=entry, model=model, engine=engine)

    # -- room: max_loaded and the memory budget ------------------------------------------------

    def _ram_of(self, entry: LocalModel) -> int:
        """RAM a model needs: the catalog's `ramrequired`, else a margin over its file size."""
        if self.catalog is not None:
            known = self.catalog.cached().by_filename(entry.id)
            if known is not None and known.ram_bytes:
                return known.ram_bytes
        return int(entry.size * 1.25)

    def _defaults_of(self, entry: LocalModel) -> ModelDefaults:
        known = self.catalog.cached().by_filename(entry.id) if self.catalog is not None else None
        if known is None:
            return ModelDefaults()
        return ModelDefaults(
            prompt_template=known.prompt_template or None,
            system_prompt=known.system_prompt or None,
            system_message=known.system_message or None,
        )

    async def _make_room(self, model_id: str, ram: int) -> None:
        """Unload least recently used idle models until `model_id` fits; wait while all are busy."""
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

    def _idlest(self, exclude: str) -> str | None:
        now = time.monotonic()
        idle = [
            v
            for k, v in self._loaded.items()
            if k != exclude
            and k not in self._loading
            and not v.engine.busy
            and now - v.last_get >= GRACE
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
    """The registry a server uses: `max_loaded_models`, the memory budget and keep-alive."""
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
    )
