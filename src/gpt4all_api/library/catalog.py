"""The GPT4All catalog (`models3.json`): fetch, cache on disk, parse tolerantly, look models up.

The catalog is a JSON array of objects whose values are mostly strings
(`"filesize": "4661724384"`, `"ramrequired": "8"`). An entry that cannot be used (no file name,
a file name that could leave the models folder, a URL that is not http(s)) is skipped with a
logged warning; one bad entry never hides the others.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..errors import InvalidRequest
from .store import INCOMPLETE_PREFIX, check_name

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

DEFAULT_DOWNLOAD_BASE = "https://gpt4all.io/models/gguf/"
RETRY_OFFLINE_AFTER = 300.0  # seconds before a failed fetch is tried again


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model, with the catalog's strings turned into Python values."""

    name: str
    filename: str
    url: str
    filesize: int | None = None
    md5sum: str | None = None
    sha256sum: str | None = None
    ramrequired: int | None = None
    parameters: str | None = None
    quant: str | None = None
    type: str | None = None
    description: str | None = None
    prompt_template: str | None = None
    system_prompt: str | None = None
    system_message: str | None = None
    chat_template: str | None = None
    embedding_model: bool = False
    order: str | None = None
    requires: str | None = None
    removed_in: str | None = None
    disable_gui: bool = False
    source: str = ""  # which catalog it came from

    @property
    def ram_bytes(self) -> int | None:
        return self.ramrequired * 1024**3 if self.ramrequired else None


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    raise ValueError(f"{key} is not a string")


def _int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key} is not a number")
    try:
        number = int(str(value).strip())
    except ValueError:
        try:
            number = int(float(str(value).strip()))
        except ValueError:
            raise ValueError(f"{key} is not a number: {value!r}") from None
    if number < 0:
        raise ValueError(f"{key} is negative")
    return number


def _flag(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _hex(raw: dict[str, Any], key: str, length: int) -> str | None:
    value = _text(raw, key)
    if not value:
        return None
    value = value.strip().lower()
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{key} is not a hex digest")
    return value


def parse_entry(raw: Any, source: str = "") -> CatalogEntry:
    """One catalog object -> CatalogEntry; ValueError says why it cannot be used."""
    if not isinstance(raw, dict):
        raise ValueError("entry is not an object")
    filename = _text(raw, "filename")
    if not filename:
        raise ValueError("entry has no filename")
    try:
        check_name(filename)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None
    if not filename.lower().endswith(".gguf"):
        raise ValueError(f"{filename!r} is not a .gguf file")
    if filename.startswith(INCOMPLETE_PREFIX):
        raise ValueError("filename uses the incomplete- prefix")
    url = _text(raw, "url") or DEFAULT_DOWNLOAD_BASE + filename
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url is not http(s): {url!r}")
    return CatalogEntry(
        name=_text(raw, "name") or filename,
        filename=filename,
        url=url,
        filesize=_int(raw, "filesize"),
        md5sum=_hex(raw, "md5sum", 32),
        sha256sum=_hex(raw, "sha256sum", 64),
        ramrequired=_int(raw, "ramrequired"),
        parameters=_text(raw, "parameters"),
        quant=_text(raw, "quant"),
        type=_text(raw, "type"),
        description=_text(raw, "description"),
        prompt_template=_text(raw, "promptTemplate"),
        system_prompt=_text(raw, "systemPrompt"),
        system_message=_text(raw, "systemMessage"),
        chat_template=_text(raw, "chatTemplate"),
        embedding_model=_flag(raw, "embeddingModel"),
        order=_text(raw, "order"),
        requires=_text(raw, "requires"),
        removed_in=_text(raw, "removedIn"),
        disable_gui=_flag(raw, "disableGUI"),
        source=source,
    )


def parse_catalog(data: Any, source: str = "") -> list[CatalogEntry]:
    """Every usable entry of a models3.json document; bad entries are logged and skipped."""
    if not isinstance(data, list):
        log.warning("catalog %s is not a JSON array; ignoring it", source or "?")
        return []
    entries: dict[str, CatalogEntry] = {}
    for i, raw in enumerate(data):
        try:
            entry = parse_entry(raw, source)
        except ValueError as exc:
            log.warning("catalog %s: skipping entry %d: %s", source or "?", i, exc)
            continue
        if entry.filename in entries:
            log.warning("catalog %s: duplicate filename %s", source or "?", entry.filename)
            continue
        entries[entry.filename] = entry
    return list(entries.values())


@dataclass(frozen=True)
class CatalogSnapshot:
    """The catalog as known now: its entries, when it was fetched, and whether that failed."""

    entries: list[CatalogEntry] = field(default_factory=list)
    fetched_at: int | None = None
    offline: bool = False
    error: str | None = None

    def by_filename(self, filename: str) -> CatalogEntry | None:
        return next((e for e in self.entries if e.filename == filename), None)

    def find(self, name: str) -> CatalogEntry | None:
        """By file name (with or without `.gguf`, any case) or by catalog `name`."""
        wanted = name.lower()
        for e in self.entries:
            low = e.filename.lower()
            if wanted in (low, low.removesuffix(".gguf")):
                return e
        for e in self.entries:
            if e.name.lower() == wanted:
                return e
        return None


class Catalog:
    """The remote catalog plus local extra catalog files. Thread-safe; fetches at most once at a
    time, keeps the last good copy on disk and falls back to it when the network fails."""

    def __init__(
        self,
        url: str,
        cache_path: Path,
        *,
        max_age: float = 86400.0,
        extra_files: list[Path] | None = None,
        timeout: float = 15.0,
    ):
        self.url = url
        self.cache_path = cache_path
        self.max_age = max_age
        self.extra_files = list(extra_files or [])
        self.timeout = timeout
        self._lock = threading.Lock()
        self._snapshot: CatalogSnapshot | None = None
        self._last_failure = 0.0

    def cached(self) -> CatalogSnapshot:
        """What is known without touching the network (memory, else the disk cache). Never
        waits for a fetch in progress, so it is safe to call from the event loop."""
        snap = self._snapshot
        if snap is None:
            snap = self._snapshot = self._from_cache(offline=False, error=None)
        return snap

    def get(self, *, refresh: bool = False) -> CatalogSnapshot:
        """The catalog, fetched again when older than `max_age` (or `refresh`); blocking."""
        with self._lock:
            snap = self.cached()
            now = time.time()
            stale = snap.fetched_at is None or now - snap.fetched_at > self.max_age
            retry = refresh or now - self._last_failure > RETRY_OFFLINE_AFTER
            if self.url and (refresh or stale) and retry:
                snap = self._snapshot = self._fetch()
            return snap

    # -- internals --------------------------------------------------------------------------

    def _fetch(self) -> CatalogSnapshot:
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=True) as client:
                response = client.get(self.url)
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self._last_failure = time.time()
            reason = f"could not fetch the catalog from {self.url}: {exc}"
            log.warning("%s; using the cached copy", reason)
            return self._from_cache(offline=True, error=reason)
        fetched_at = int(time.time())
        self._write_cache(data, fetched_at)
        return self._snapshot_of(data, fetched_at, offline=False, error=None)

    def _from_cache(self, *, offline: bool, error: str | None) -> CatalogSnapshot:
        data: Any = []
        fetched_at: int | None = None
        try:
            cached = json.loads(self.cache_path.read_text(encoding="utf-8"))
            if cached.get("url") == self.url:
                data = cached.get("models", [])
                fetched_at = int(cached["fetched_at"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the unreadable catalog cache %s: %s", self.cache_path, exc)
        return self._snapshot_of(data, fetched_at, offline=offline, error=error)

    def _snapshot_of(
        self, data: Any, fetched_at: int | None, *, offline: bool, error: str | None
    ) -> CatalogSnapshot:
        entries = parse_catalog(data, self.url) if data else []
        known = {e.filename for e in entries}
        for path in self.extra_files:
            try:
                extra = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("cannot read the catalog file %s: %s", path, exc)
                continue
            for e in parse_catalog(extra, str(path)):
                if e.filename not in known:
                    entries.append(e)
                    known.add(e.filename)
        return CatalogSnapshot(entries=entries, fetched_at=fetched_at, offline=offline, error=error)

    def _write_cache(self, data: Any, fetched_at: int) -> None:
        payload = json.dumps({"url": self.url, "fetched_at": fetched_at, "models": data})
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".catalog-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.cache_path)
        except OSError as exc:
            log.warning("could not cache the catalog in %s: %s", self.cache_path, exc)


def catalog_from(settings: Settings) -> Catalog:
    """The catalog a server or the CLI uses, from the settings."""
    cache = settings.catalog_cache or settings.models_dir / "models3.json"
    return Catalog(
        settings.catalog_url,
        cache,
        max_age=settings.catalog_max_age,
        extra_files=settings.catalog_files,
    )
