"""The GPT4All catalog: tolerant parsing, lookups, fetch + cache + offline fallback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.catalog_server import FIXTURE, CatalogServer
from gpt4all_api.library.catalog import Catalog, parse_catalog, parse_entry
from gpt4all_api.library.store import ModelStore


def fixture_data() -> list:
    text = FIXTURE.read_text().replace("@BASE@", "http://127.0.0.1:9")
    text = text.replace("@SHA256@", "ab" * 32).replace("@MD5@", "cd" * 16)
    return json.loads(text.replace("@SIZE@", "1234"))


def test_parse_is_tolerant(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        entries = parse_catalog(fixture_data(), "fixture")
    names = [e.filename for e in entries]
    assert names == [
        "smol-test.gguf",
        "smol-md5.gguf",
        "smol-corrupt.gguf",
        "smol-nosum.gguf",
        "remote-only.gguf",
    ]
    skipped = caplog.text
    for reason in ("evil", "not a number", "not http", "no filename", "not an object", ".gguf"):
        assert reason in skipped


def test_values_become_python_types() -> None:
    by_name = {e.filename: e for e in parse_catalog(fixture_data())}
    smol = by_name["smol-test.gguf"]
    assert smol.filesize == 1234 and smol.ramrequired == 1
    assert smol.sha256sum == "ab" * 32 and smol.md5sum == "cd" * 16
    assert smol.prompt_template and "%1" in smol.prompt_template
    assert smol.system_prompt and smol.system_prompt.startswith("<|im_start|>system")
    remote = by_name["remote-only.gguf"]
    assert remote.url == "https://gpt4all.io/models/gguf/remote-only.gguf"
    assert remote.filesize == 4661724384 and remote.ram_bytes == 8 * 1024**3
    assert remote.disable_gui is True and remote.embedding_model is False
    nosum = by_name["smol-nosum.gguf"]
    assert nosum.filesize is None and nosum.md5sum is None and nosum.sha256sum is None
    assert nosum.system_message == "You are terse."


@pytest.mark.parametrize(
    "raw",
    [
        {"filename": "../x.gguf"},
        {"filename": "a/b.gguf"},
        {"filename": "a\\b.gguf"},
        {"filename": ".hidden.gguf"},
        {"filename": "nul\x00.gguf"},
        {"filename": "incomplete-x.gguf"},
        {"filename": "x.gguf", "url": "ftp://example.com/x.gguf"},
        {"filename": "x.gguf", "md5sum": "not-hex"},
        {"filename": "x.gguf", "filesize": "-5"},
        {"filename": 5},
        [],
        None,
    ],
)
def test_bad_entries_are_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_entry(raw)


def test_not_a_list_is_empty() -> None:
    assert parse_catalog({"models": []}) == []
    assert parse_catalog("nope") == []


@pytest.fixture()
def catalog_server(tmp_path: Path) -> Iterator[CatalogServer]:
    model = tmp_path / "blob.gguf"
    model.write_bytes(b"GGUF" + bytes(1000))
    srv = CatalogServer(files={"smol-test.gguf": model}, model=model).start()
    yield srv
    srv.stop()


def test_fetch_cache_and_lookup(catalog_server: CatalogServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "models3.json"
    catalog = Catalog(catalog_server.catalog_url, cache)
    assert catalog.cached().entries == []  # nothing fetched yet, no network touched
    snap = catalog.get()
    assert not snap.offline and snap.fetched_at is not None
    assert snap.find("Smol Test") is snap.find("smol-test") is snap.find("SMOL-TEST.GGUF")
    assert snap.find("smol test").filename == "smol-test.gguf"  # type: ignore[union-attr]
    assert snap.find("missing") is None
    assert json.loads(cache.read_text())["fetched_at"] == snap.fetched_at
    # a second catalog object (another process) reads the cache without fetching
    catalog_server.catalog_status = 500
    again = Catalog(catalog_server.catalog_url, cache).get()
    assert not again.offline and len(again.entries) == len(snap.entries)


def test_offline_uses_the_cache(catalog_server: CatalogServer, tmp_path: Path) -> None:
    cache = tmp_path / "models3.json"
    fetched = Catalog(catalog_server.catalog_url, cache).get()
    catalog_server.stop()
    stale = Catalog(catalog_server.catalog_url, cache, max_age=0)
    snap = stale.get(refresh=True)
    assert snap.offline and snap.error and "could not fetch" in snap.error
    assert [e.filename for e in snap.entries] == [e.filename for e in fetched.entries]
    assert snap.fetched_at == fetched.fetched_at


def test_offline_without_cache_is_empty_not_an_error(tmp_path: Path) -> None:
    snap = Catalog("http://127.0.0.1:9/models3.json", tmp_path / "c.json").get()
    assert snap.offline and snap.entries == [] and snap.fetched_at is None


def test_extra_catalog_files(tmp_path: Path) -> None:
    extra = tmp_path / "mine.json"
    extra.write_text(json.dumps([{"name": "Mine", "filename": "mine.gguf", "url": "http://h/m"}]))
    snap = Catalog("", tmp_path / "c.json", extra_files=[extra]).get()
    assert [e.filename for e in snap.entries] == ["mine.gguf"]


def test_store_resolves_catalog_names(catalog_server: CatalogServer, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "smol-test.gguf").write_bytes(b"GGUF")
    catalog = Catalog(catalog_server.catalog_url, tmp_path / "c.json")
    catalog.get()
    store = ModelStore(models, catalog=catalog)
    assert store.resolve("Smol Test").id == "smol-test.gguf"
    found = store.find("smol-md5")
    assert found is None
    with pytest.raises(Exception, match=r"in the catalog as smol-md5\.gguf"):
        store.resolve("Smol MD5")
