"""Resumable, verified model downloads.

A download writes `incomplete-<filename>` in the models folder (the GPT4All app's convention),
resumes with an HTTP `Range` request after a dropped connection or a restart, checks the size and
`sha256sum` (else `md5sum`), fsyncs, then renames the file into place atomically, so a file with
the model's real name is always complete. A checksum mismatch deletes the partial file. Only URLs
taken from a catalog entry are ever fetched.

`fetch_model` does the work in the calling thread (the CLI uses it directly); the server runs
each download in a `Download` thread held by a `DownloadManager`, so that every request for the
same model shares one download.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from ..errors import APIError, ChecksumMismatch, Conflict, DownloadFailed, InsufficientStorage
from .catalog import CatalogEntry
from .store import INCOMPLETE_PREFIX

try:  # advisory lock so that two processes never write the same partial file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_RETRIES = 5  # consecutive failures without progress before giving up
ProgressFn = Callable[[str, int, int | None], None]


class DownloadCancelled(Exception):
    """The download was stopped (shutdown or Ctrl-C); the partial file is kept for a resume."""


def free_space(path: Path) -> int:
    """Free bytes on the disk holding `path` (a function so that tests can pretend)."""
    return shutil.disk_usage(path).free


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def partial_path(models_dir: Path, filename: str) -> Path:
    return models_dir / (INCOMPLETE_PREFIX + filename)


def check_free_space(entry: CatalogEntry, partial: Path, reserve: int) -> None:
    """InsufficientStorage unless the rest of the file plus `reserve` bytes fit on the disk."""
    have = partial.stat().st_size if partial.is_file() else 0
    needed = max((entry.filesize or 0) - have, 0) + reserve
    free = free_space(partial.parent)
    if free < needed:
        raise InsufficientStorage(
            f"not enough disk space for {entry.filename}: it needs {human(needed)} more "
            f"(including a reserve of {human(reserve)}) in {partial.parent} but only "
            f"{human(free)} is free"
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[bytes]]:
    """The partial file, opened for appending and locked against other processes."""
    f = open(path, "a+b")  # noqa: SIM115 - closed below
    try:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise Conflict(
                    f"{path.name} is already being downloaded by another process",
                    param="model",
                    code="download_in_progress",
                ) from None
        yield f
    finally:
        f.close()


def _hasher(entry: CatalogEntry) -> tuple[str, Any] | None:
    if entry.sha256sum:
        return "sha256", hashlib.sha256()
    if entry.md5sum:
        return "md5", hashlib.md5(usedforsecurity=False)
    return None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fetch_model(
    entry: CatalogEntry,
    models_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    reserve: int = 0,
    client: httpx.Client | None = None,
    retry_delay: float = 0.5,
) -> Path:
    """Download `entry` into `models_dir` (resuming a partial file), verify it, move it into
    place and return its path. Raises an APIError subclass or DownloadCancelled."""
    cancel = cancel or threading.Event()
    report = on_progress or (lambda _s, _c, _t: None)
    final = models_dir / entry.filename
    if final.is_file():
        size = final.stat().st_size
        report("success", size, size)
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_path(models_dir, entry.filename)
    check_free_space(entry, partial, reserve)
    own_client = client is None
    if client is None:
        client = httpx.Client(
            timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True, trust_env=False
        )
    try:
        with _locked(partial) as f:
            _download(entry, f, partial, report, cancel, reserve, client, retry_delay)
            report("verifying", f.tell(), entry.filesize or f.tell())
            f.flush()
            os.fsync(f.fileno())
            _verify(entry, partial, f.tell())
            os.replace(partial, final)
        _fsync_dir(models_dir)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InsufficientStorage(
                f"the disk holding {models_dir} is full; {partial.name} was kept, free some "
                "space and pull again to resume"
            ) from exc
        raise DownloadFailed(f"could not write {partial}: {exc}") from exc
    finally:
        if own_client:
            client.close()
    size = final.stat().st_size
    log.info("downloaded %s (%s)", entry.filename, human(size))
    report("success", size, size)
    return final


def _download(
    entry: CatalogEntry,
    f: IO[bytes],
    partial: Path,
    report: ProgressFn,
    cancel: threading.Event,
    reserve: int,
    client: httpx.Client,
    retry_delay: float,
) -> None:
    """Fill the open partial file until the server has sent everything."""
    f.seek(0, os.SEEK_END)
    total = entry.filesize
    if total is not None and f.tell() > total:
        log.warning("%s is larger than the catalog says; starting again", partial.name)
        _restart(f)
    have = f.tell()
    if have:
        log.info("resuming %s from byte %d", entry.filename, have)
    report("starting", have, total)
    failures = 0
    while total is None or f.tell() < total:
        if cancel.is_set():
            raise DownloadCancelled(entry.filename)
        start = f.tell()
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            with client.stream("GET", entry.url, headers=headers) as r:
                if r.status_code == 416 and start:
                    log.warning("%s: the server refused our range; starting again", entry.filename)
                    _restart(f)
                    failures += 1
                    if failures > MAX_RETRIES:
                        raise DownloadFailed(f"{entry.url} keeps refusing byte ranges")
                    continue
                if r.status_code in (429,) or r.status_code >= 500:
                    raise httpx.TransportError(f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    raise DownloadFailed(
                        f"could not download {entry.filename}: {entry.url} answered HTTP "
                        f"{r.status_code}"
                    )
                if start and not _resumes_at(r, start):
                    log.warning("%s: the server ignored our range; starting again", entry.filename)
                    _restart(f)
                if total is None:
                    total = _length(r, f.tell())
                for chunk in r.iter_bytes(CHUNK):
                    if cancel.is_set():
                        raise DownloadCancelled(entry.filename)
                    f.write(chunk)
                    if total is not None and f.tell() > total:
                        raise ChecksumMismatch(
                            f"{entry.url} sent more than the {total} bytes the catalog lists"
                        )
                    report("downloading", f.tell(), total)
            if total is None:
                return
        except httpx.TransportError as exc:
            failures = 1 if f.tell() > start else failures + 1
            if failures > MAX_RETRIES:
                raise DownloadFailed(
                    f"downloading {entry.filename} failed {failures} times in a row ({exc}); "
                    f"{human(f.tell())} kept in {partial.name}, pull again to resume"
                ) from exc
            log.warning(
                "%s: connection lost at %d bytes (%s); resuming", entry.filename, f.tell(), exc
            )
            f.flush()
            if cancel.wait(retry_delay * 2 ** (failures - 1)):
                raise DownloadCancelled(entry.filename) from None
        except ChecksumMismatch:
            f.close()
            partial.unlink(missing_ok=True)
            raise


def _restart(f: IO[bytes]) -> None:
    """Throw away what the partial file holds."""
    f.truncate(0)
    f.seek(0)


def _resumes_at(r: httpx.Response, start: int) -> bool:
    if r.status_code != 206:
        return False
    content_range = r.headers.get("content-range", "")
    try:
        first = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return first == start


def _length(r: httpx.Response, have: int) -> int | None:
    if r.status_code == 206:
        size = r.headers.get("content-range", "").rpartition("/")[2]
        return int(size) if size.isdigit() else None
    length = r.headers.get("content-length")
    return have + int(length) if length and length.isdigit() else None


def _verify(entry: CatalogEntry, partial: Path, size: int) -> None:
    """Size and checksum; a mismatch deletes the partial file."""
    problem = None
    if entry.filesize is not None and size != entry.filesize:
        problem = f"size mismatch for {entry.filename}: expected {entry.filesize} bytes, got {size}"
    else:
        algo = _hasher(entry)
        if algo is None:
            log.warning("%s has no checksum in the catalog; only its size was checked", entry.name)
        else:
            name, h = algo
            with open(partial, "rb") as src:
                while block := src.read(1 << 20):
                    h.update(block)
            expected = entry.sha256sum if name == "sha256" else entry.md5sum
            if h.hexdigest() != expected:
                problem = (
                    f"checksum mismatch for {entry.filename}: expected {name} {expected}, got "
                    f"{h.hexdigest()}"
                )
    if problem:
        partial.unlink(missing_ok=True)
        log.error("%s; the partial download was deleted", problem)
        raise ChecksumMismatch(f"{problem}; the partial download was deleted, pull again")


@dataclass(frozen=True)
class Progress:
    status: str  # starting | downloading | verifying | success | error
    model: str
    completed: int
    total: int | None
    bytes_per_second: float | None
    error: APIError | None = None

    def frame(self) -> dict[str, Any]:
        """The `POST /v1/models/pull` event for this moment."""
        out: dict[str, Any] = {
            "status": self.status,
            "model": self.model,
            "completed": self.completed,
            "total": self.total,
            "bytes_per_second": self.bytes_per_second,
        }
        if self.error is not None:
            out["error"] = self.error.body()["error"]
        return out


class Download:
    """One model being downloaded in its own thread; progress readable from any thread."""

    def __init__(self, entry: CatalogEntry, models_dir: Path, *, reserve: int = 0):
        self.entry = entry
        self.models_dir = models_dir
        self.reserve = reserve
        self.done = threading.Event()
        self.error: APIError | None = None
        self.path: Path | None = None
        self._cancel = threading.Event()
        self._status = "starting"
        self.statuses = ["starting"]  # every status passed through, however briefly
        partial = partial_path(models_dir, entry.filename)
        self._completed = partial.stat().st_size if partial.is_file() else 0
        self._total = entry.filesize
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._thread = threading.Thread(
            target=self._run, name=f"download:{entry.filename}", daemon=True
        )

    def start(self) -> Download:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def progress(self) -> Progress:
        return Progress(
            status=self._status,
            model=self.entry.filename,
            completed=self._completed,
            total=self._total,
            bytes_per_second=self._rate(),
            error=self.error,
        )

    def _rate(self) -> float | None:
        samples = list(self._samples)
        if len(samples) < 2:
            return None
        now = time.monotonic()
        recent = [s for s in samples if now - s[0] <= 5.0] or samples[-2:]
        (t0, b0), (t1, b1) = recent[0], samples[-1]
        if t1 <= t0:
            return None
        return round((b1 - b0) / (t1 - t0), 1)

    def _on_progress(self, status: str, completed: int, total: int | None) -> None:
        now = time.monotonic()
        if status == "starting":
            self._samples.clear()
        if not self._samples or now - self._samples[-1][0] >= 0.2:
            self._samples.append((now, completed))
        self._status, self._completed, self._total = status, completed, total
        if status != self.statuses[-1]:
            self.statuses.append(status)

    def _run(self) -> None:
        try:
            self.path = fetch_model(
                self.entry,
                self.models_dir,
                on_progress=self._on_progress,
                cancel=self._cancel,
                reserve=self.reserve,
            )
        except DownloadCancelled:
            log.info("download of %s stopped; the partial file is kept", self.entry.filename)
            self.error = DownloadFailed(f"the download of {self.entry.filename} was stopped")
            self._status = "error"
        except APIError as exc:
            log.warning("download of %s failed: %s", self.entry.filename, exc.message)
            self.error = exc
            self._status = "error"
        except Exception as exc:
            log.exception("download of %s failed", self.entry.filename)
            self.error = DownloadFailed(f"the download of {self.entry.filename} failed: {exc}")
            self._status = "error"
        finally:
            self.done.set()


class DownloadManager:
    """The server's downloads: one per model, shared by every request that asks for it."""

    def __init__(self, models_dir: Path, *, reserve: int = 0):
        self.models_dir = models_dir
        self.reserve = reserve
        self._lock = threading.Lock()
        self._downloads: dict[str, Download] = {}

    def start(self, entry: CatalogEntry) -> Download:
        """The running download of `entry`, or a new one."""
        with self._lock:
            current = self._downloads.get(entry.filename)
            if current is not None and not current.done.is_set():
                return current
            d = Download(entry, self.models_dir, reserve=self.reserve)
            self._downloads[entry.filename] = d
            return d.start()

    def get(self, filename: str) -> Download | None:
        with self._lock:
            return self._downloads.get(filename)

    def forget(self, download: Download) -> None:
        with self._lock:
            if self._downloads.get(download.entry.filename) is download:
                del self._downloads[download.entry.filename]

    def downloading(self, filename: str) -> bool:
        d = self.get(filename)
        return d is not None and not d.done.is_set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every download (partial files stay, to be resumed later)."""
        with self._lock:
            downloads = list(self._downloads.values())
        for d in downloads:
            d.cancel()
        deadline = time.monotonic() + timeout
        for d in downloads:
            d.join(max(0.0, deadline - time.monotonic()))
