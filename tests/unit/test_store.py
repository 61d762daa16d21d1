"""The models folder's listing is cached: resolving a known model touches no disk, and a model
that appears on disk is still found at once."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpt4all_api.engine.scheduler import EngineConfig
from gpt4all_api.errors import ModelNotFound
from gpt4all_api.library.registry import ModelRegistry
from gpt4all_api.library.store import ModelStore


@pytest.fixture()
def disk(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every folder walk and `stat` the store could do."""
    calls: Counter[str] = Counter()

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in ("rglob", "stat", "is_file", "is_dir", "exists", "iterdir"):
        monkeypatch.setattr(Path, name, counting(f"Path.{name}", getattr(Path, name)))
    for name in ("stat", "scandir", "walk", "listdir"):
        monkeypatch.setattr(os, name, counting(f"os.{name}", getattr(os, name)))
    monkeypatch.setattr(os.path, "isdir", counting("os.path.isdir", os.path.isdir))
    return calls


def make_store(tmp_path: Path, *names: str) -> ModelStore:
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    for name in names:
        (models / name).write_bytes(b"GGUF")
    return ModelStore(models, embedded=None)


def test_resolving_a_known_model_does_not_touch_the_folder(
    tmp_path: Path, disk: Counter[str]
) -> None:
    store = make_store(tmp_path, "a.gguf", "sub/b.gguf")
    assert store.resolve("a").id == "a.gguf"  # the first use scans the folder
    assert disk["Path.rglob"] == 1
    disk.clear()
    for _ in range(50):
        assert store.resolve("a.gguf").id == "a.gguf"
        assert store.resolve("B").id == "b.gguf"
    assert sum(disk.values()) == 0, disk


def test_a_model_that_appears_is_found_at_once(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a.gguf")
    assert "new.gguf" not in {m.id for m in store.list()}
    (store.models_dir / "sub" / "new.gguf").write_bytes(b"GGUF")
    assert store.resolve("new").id == "new.gguf"
    with pytest.raises(ModelNotFound):
        store.resolve("never-there")


def test_refresh_rescans_only_when_a_folder_changed(tmp_path: Path, disk: Counter[str]) -> None:
    store = make_store(tmp_path, "a.gguf")
    old = 1_000_000_000  # folders last changed long ago: no racy timestamps
    for folder in (store.models_dir, store.models_dir / "sub"):
        os.utime(folder, (old, old))
    store.scan()
    disk.clear()
    store.refresh()
    store.refresh()
    assert disk["Path.rglob"] == 0 and disk["os.stat"] == 4  # two folders, twice
    (store.models_dir / "sub" / "late.gguf").write_bytes(b"GGUF")
    assert "late.gguf" in {m.id for m in store.list()}
    assert disk["Path.rglob"] == 1
    (store.models_dir / "sub" / "late.gguf").unlink()
    assert "late.gguf" not in {m.id for m in store.list()}


def test_a_change_in_the_same_mtime_tick_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path, "a.gguf")
    store.scan()  # the folders were just made: the listing is racy
    frozen = {str(p): os.stat(p).st_mtime_ns for p in (store.models_dir, store.models_dir / "sub")}
    (store.models_dir / "b.gguf").write_bytes(b"GGUF")
    for path, mtime in frozen.items():  # as if on a filesystem with coarse timestamps
        os.utime(path, ns=(mtime, mtime))
    assert "b.gguf" in {m.id for m in store.list()}


def test_find_notices_a_file_deleted_behind_its_back(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a.gguf")
    assert store.find("a") is not None
    (store.models_dir / "a.gguf").unlink()
    assert store.find("a") is None  # what deleting and pulling ask
    with pytest.raises(ModelNotFound):
        store.resolve("a")


def test_deleting_updates_the_listing(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a.gguf", "b.gguf")
    store.delete(store.resolve("a"))
    assert store.cached("a") is None and store.cached("b") is not None
    with pytest.raises(ModelNotFound):
        store.resolve("a")


def test_the_registry_resolves_from_the_cache(tmp_path: Path, disk: Counter[str]) -> None:
    store = make_store(tmp_path, "a.gguf")
    registry = ModelRegistry(store, EngineConfig())
    sentinel = object()

    async def scenario() -> None:
        async def fake_load(entry: Any, replace: Any) -> Any:
            return sentinel

        registry._load = fake_load  # type: ignore[method-assign]
        registry._touch = lambda loaded, keep_alive: loaded  # type: ignore[method-assign]
        registry._start_reaper = lambda: None  # type: ignore[method-assign]
        assert await registry.get("a") is sentinel  # the first get scans (in a thread)
        disk.clear()
        assert await registry.get("a") is sentinel
        assert sum(disk.values()) == 0, disk
        (store.models_dir / "fresh.gguf").write_bytes(b"GGUF")
        assert await registry.get("fresh") is sentinel
        with pytest.raises(ModelNotFound):
            await registry.get("missing")

    asyncio.run(scenario())
