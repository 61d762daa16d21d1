"""Verified, resumable downloads against a local HTTP server (no model, no internet)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.catalog_server import CatalogServer
from gpt4all_api.errors import ChecksumMismatch, Conflict, DownloadFailed, InsufficientStorage
from gpt4all_api.library import download as dl
from gpt4all_api.library.catalog import CatalogEntry
from gpt4all_api.library.download import DownloadManager, fetch_model

SIZE = 3 * 1024 * 1024 + 123


@pytest.fixture()
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upstream") / "blob.gguf"
    path.write_bytes(b"GGUF" + os.urandom(SIZE - 4))
    return path


@pytest.fixture()
def server(blob: Path) -> Iterator[CatalogServer]:
    srv = CatalogServer(files={"m.gguf": blob, "other.gguf": blob}).start()
    yield srv
    srv.stop()


def entry_for(srv: CatalogServer, blob: Path, **kw: object) -> CatalogEntry:
    data = blob.read_bytes()
    fields: dict = {
        "name": "M",
        "filename": "m.gguf",
        "url": srv.base_url + "/files/m.gguf",
        "filesize": len(data),
        "sha256sum": hashlib.sha256(data).hexdigest(),
        "md5sum": hashlib.md5(data).hexdigest(),
    }
    fields.update(kw)
    return CatalogEntry(**fields)


def test_download_verifies_and_renames(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    seen: list[tuple[str, int, int | None]] = []
    path = fetch_model(
        entry_for(server, blob), models, on_progress=lambda *a: seen.append(a), retry_delay=0
    )
    assert path == models / "m.gguf" and path.read_bytes() == blob.read_bytes()
    assert not (models / "incomplete-m.gguf").exists()
    statuses = [s for s, _, _ in seen]
    assert statuses[0] == "starting" and statuses[-1] == "success"
    assert "downloading" in statuses and "verifying" in statuses
    completed = [c for s, c, _ in seen if s == "downloading"]
    assert completed == sorted(completed) and completed[-1] == SIZE
    # already there: nothing is fetched again
    fetch_model(entry_for(server, blob), models)
    assert len(server.file_requests("m.gguf")) == 1


def test_resume_after_dropped_connection(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    server.drop_after = 1_000_000
    path = fetch_model(entry_for(server, blob), tmp_path, retry_delay=0)
    assert path.read_bytes() == blob.read_bytes()
    ranges = [r.range for r in server.file_requests("m.gguf")]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] is not None and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1][6:-1]) <= 1_000_000


def test_resume_from_partial_file_left_by_a_previous_run(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    (tmp_path / "incomplete-m.gguf").write_bytes(blob.read_bytes()[:777_777])
    path = fetch_model(entry_for(server, blob), tmp_path)
    assert path.read_bytes() == blob.read_bytes()
    assert [r.range for r in server.file_requests("m.gguf")] == ["bytes=777777-"]


def test_a_server_ignoring_range_restarts_from_zero(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    (tmp_path / "incomplete-m.gguf").write_bytes(b"x" * 1000)  # not even the right bytes
    server.ignore_range = True
    path = fetch_model(entry_for(server, blob), tmp_path)
    assert path.read_bytes() == blob.read_bytes()
    assert [r.range for r in server.file_requests("m.gguf")] == ["bytes=1000-"]


def test_complete_partial_is_only_verified(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    (tmp_path / "incomplete-m.gguf").write_bytes(blob.read_bytes())
    fetch_model(entry_for(server, blob), tmp_path)
    assert server.file_requests("m.gguf") == []


def test_gives_up_after_repeated_drops_and_keeps_the_partial(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    server.drop_after, server.drop_always = 0, True
    with pytest.raises(DownloadFailed, match="pull again to resume"):
        fetch_model(entry_for(server, blob), tmp_path, retry_delay=0)
    server.drop_after, server.drop_always = 500_000, False
    fetch_model(entry_for(server, blob), tmp_path, retry_delay=0)
    assert (tmp_path / "m.gguf").read_bytes() == blob.read_bytes()


def test_checksum_mismatch_deletes_the_partial(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    bad = entry_for(server, blob, sha256sum="0" * 64)
    with pytest.raises(ChecksumMismatch, match=r"checksum mismatch for m\.gguf: expected sha256"):
        fetch_model(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_md5_is_used_when_there_is_no_sha256(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    with pytest.raises(ChecksumMismatch, match="expected md5"):
        fetch_model(entry_for(server, blob, sha256sum=None, md5sum="0" * 32), tmp_path)
    assert fetch_model(entry_for(server, blob, sha256sum=None), tmp_path).is_file()


def test_size_mismatch_is_refused(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch, match="sent more than"):
        fetch_model(entry_for(server, blob, filesize=SIZE - 10), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_not_enough_disk(
    server: CatalogServer, blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl, "free_space", lambda _p: 1000)
    with pytest.raises(InsufficientStorage, match=r"not enough disk space for m\.gguf"):
        fetch_model(entry_for(server, blob), tmp_path)
    assert server.file_requests("m.gguf") == []
    with pytest.raises(InsufficientStorage, match="reserve"):
        fetch_model(entry_for(server, blob), tmp_path, reserve=10**18)


def test_http_errors_are_reported(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    missing = entry_for(server, blob, url=server.base_url + "/files/nope.gguf")
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        fetch_model(missing, tmp_path)


def test_unknown_size_and_no_checksum(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    bare = entry_for(server, blob, filesize=None, sha256sum=None, md5sum=None)
    assert fetch_model(bare, tmp_path).read_bytes() == blob.read_bytes()


def test_another_process_holding_the_partial_is_refused(
    server: CatalogServer, blob: Path, tmp_path: Path
) -> None:
    with dl._locked(tmp_path / "incomplete-m.gguf"), pytest.raises(Conflict):
        fetch_model(entry_for(server, blob), tmp_path)


def test_cancel_keeps_the_partial(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    server.rate = 2_000_000
    cancel = threading.Event()

    def progress(status: str, completed: int, total: int | None) -> None:
        if completed > 200_000:
            cancel.set()

    with pytest.raises(dl.DownloadCancelled):
        fetch_model(entry_for(server, blob), tmp_path, on_progress=progress, cancel=cancel)
    assert 0 < (tmp_path / "incomplete-m.gguf").stat().st_size < SIZE
    assert not (tmp_path / "m.gguf").exists()


def test_manager_shares_one_download(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    server.rate = 20_000_000
    manager = DownloadManager(tmp_path)
    entry = entry_for(server, blob)
    first = manager.start(entry)
    second = manager.start(entry)
    assert first is second and manager.downloading("m.gguf")
    assert first.done.wait(60)
    assert first.error is None and first.progress().status == "success"
    assert len(server.file_requests("m.gguf")) == 1
    assert not manager.downloading("m.gguf")


def test_manager_reports_errors(server: CatalogServer, blob: Path, tmp_path: Path) -> None:
    manager = DownloadManager(tmp_path)
    d = manager.start(entry_for(server, blob, sha256sum="1" * 64))
    assert d.done.wait(60)
    frame = d.progress().frame()
    assert frame["status"] == "error"
    assert frame["error"]["code"] == "checksum_mismatch"
    assert "deleted" in frame["error"]["message"]
