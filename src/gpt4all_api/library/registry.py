"""Loaded models: load on demand (once, however many requests ask at the same time), keep, reload.

Each loaded model has its own engine thread and llama.cpp context, so loading one model never
stops requests to models already loaded.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from ..engine.model import Model, ModelLoadError
from ..engine.scheduler import Engine, EngineConfig
from ..errors import InvalidRequest
from .store import LocalModel, ModelStore

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    entry: LocalModel
    model: Model
    engine: Engine


class ModelRegistry:
    """Owns every loaded model. Used from the event loop; loading runs in a worker thread."""

    def __init__(self, store: ModelStore, config: EngineConfig):
        self.store = store
        self.config = config
        self._loaded: dict[str, Loaded] = {}
        self._loading: dict[str, asyncio.Task[Loaded]] = {}

    @property
    def loaded(self) -> dict[str, Loaded]:
        return dict(self._loaded)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    async def get(self, name: str, *, reload: bool = False) -> Loaded:
        """The loaded model for `name`, loading (or reloading from disk) it first if needed."""
        entry = self.store.resolve(name)
        current = self._loaded.get(entry.id)
        if current is not None and not reload and current.engine.alive:
            return current
        task = self._loading.get(entry.id)
        if task is None:
            task = asyncio.create_task(self._load(entry, replace=current))
            self._loading[entry.id] = task
            task.add_done_callback(lambda _t, key=entry.id: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, entry: LocalModel, replace: Loaded | None) -> Loaded:
        log.info("loading %s from %s", entry.id, entry.path)
        loaded = await asyncio.to_thread(self._load_sync, entry.path, entry)
        self._loaded[entry.id] = loaded
        if replace is not None:
            await self._retire(replace)
        return loaded

    def _load_sync(self, path: Path, entry: LocalModel) -> Loaded:
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

    async def _retire(self, old: Loaded) -> None:
        """Let a replaced model finish what it is running, then free it."""
        old.engine.close(drain=True)
        await asyncio.to_thread(old.engine.join)
        old.model.close()

    async def unload(self, model_id: str) -> bool:
        loaded = self._loaded.pop(model_id, None)
        if loaded is None:
            return False
        await self._retire(loaded)
        return True

    async def close(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        for loaded in self._loaded.values():
            loaded.engine.close(drain=drain)
        for loaded in list(self._loaded.values()):
            await asyncio.to_thread(loaded.engine.join, timeout)
            if loaded.engine.join(0):
                loaded.model.close()
        self._loaded.clear()
