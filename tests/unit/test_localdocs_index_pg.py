"""The LocalDocs index on PostgreSQL, against a real PostgreSQL 15 started here: the same
assertions run on the SQLite `Index` and on `PostgresIndex` (behaviour parity), then what only a
shared database has: two indexes (two replicas) seeing each other's data, and a file claimed
for indexing by one replica only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_localdocs_parts import DOCS, embed

from conftest import free_port
from fixtures.postgres import BIN, PostgresServer
from gpt4all_api.localdocs import chunk as chunking
from gpt4all_api.localdocs.index import Index
from gpt4all_api.localdocs.ingest import parse
from gpt4all_api.localdocs.search import search

psycopg = pytest.importorskip("psycopg")
from gpt4all_api.localdocs.index_pg import PostgresIndex  # noqa: E402

AnyIndex = Index | PostgresIndex
TABLES = ("chunks", "batches", "vs_files", "stores", "files")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    if not (BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not in {BIN}")
    pg = PostgresServer.start(free_port())
    yield pg.url
    pg.stop()


def _fresh(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        for t in TABLES:
            db.execute(f"DROP TABLE IF EXISTS gpt4all_api_localdocs_{t} CASCADE")


@pytest.fixture()
def pg(url: str) -> Iterator[PostgresIndex]:
    _fresh(url)
    index = PostgresIndex(url)
    yield index
    index.close()


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyIndex]:
    if request.param == "sqlite":
        made: AnyIndex = Index(tmp_path)
    else:
        url = request.getfixturevalue("url")
        _fresh(url)
        made = PostgresIndex(url)
    yield made
    made.close()


def _store(index: AnyIndex, store_id: str = "vs_1", name: str = "c") -> None:
    index.add_store(
        {
            "id": store_id,
            "name": name,
            "created_at": 1,
            "metadata": {"k": "v"},
            "embedding_model": "fake",
        }
    )


def _index_file(index: AnyIndex, store_id: str, file_id: str, name: str, text: str) -> bool:
    pieces = chunking.chunks(parse(text.encode(), name), size=200, overlap=20)
    vectors = np.stack([embed(c.text) for c in pieces])
    return index.put_chunks(store_id, file_id, pieces, vectors, {"title": name})


def _with_docs(index: AnyIndex) -> dict[str, str]:
    _store(index)
    ids = {}
    for n, (name, text) in enumerate(DOCS.items()):
        file_id = f"file-{n}"
        index.add_file(file_id, name, text.encode(), "assistants")
        index.attach("vs_1", file_id, {"n": n})
        assert _index_file(index, "vs_1", file_id, name, text)
        ids[name] = file_id
    return ids


# -- the same behaviour on both ---------------------------------------------------------------


def test_files_add_read_delete(index: AnyIndex) -> None:
    row = index.add_file("file-a", "a.md", b"alpha \x00\xff bytes", "assistants")
    assert row == {
        "id": "file-a",
        "filename": "a.md",
        "bytes": 14,
        "created_at": row["created_at"],
        "purpose": "assistants",
    }
    index.add_file("file-b", "b.md", b"beta", "batch")
    assert index.file("file-a") == row
    assert index.read_content("file-a") == b"alpha \x00\xff bytes"
    assert [f["id"] for f in index.files()] == ["file-a", "file-b"]
    assert [f["id"] for f in index.files("batch")] == ["file-b"]
    assert index.file("file-x") is None
    with pytest.raises(FileNotFoundError):
        index.read_content("file-x")
    assert index.delete_file("file-a") and not index.delete_file("file-a")
    assert index.file("file-a") is None
    with pytest.raises(FileNotFoundError):
        index.read_content("file-a")


def test_stores_crud(index: AnyIndex) -> None:
    _store(index)
    _store(index, "vs_2", "other")
    got = index.store("vs_1")
    assert got == {
        "id": "vs_1",
        "name": "c",
        "description": None,
        "created_at": 1,
        "last_active_at": 1,
        "metadata": {"k": "v"},
        "expires_after": None,
        "embedding_model": "fake",
    }
    assert [s["id"] for s in index.stores()] == ["vs_1", "vs_2"]
    assert [s["id"] for s in index.stores_named("other")] == ["vs_2"]
    assert [s["id"] for s in index.stores_named("vs_1")] == ["vs_1"]
    index.update_store("vs_1", name="renamed", metadata={"a": "b"}, expires_after={"days": 2})
    index.update_store("vs_1")
    index.touch_store("vs_1")
    got = index.store("vs_1")
    assert got is not None and got["name"] == "renamed" and got["metadata"] == {"a": "b"}
    assert got["expires_after"] == {"days": 2} and got["last_active_at"] > 1
    # a column name never reaches the SQL unless it is one of a store's own
    with pytest.raises(ValueError, match="not a vector store column"):
        index.update_store("vs_1", **{"name = 'x' --": "y"})
    assert index.delete_store("vs_1") and not index.delete_store("vs_1")
    assert index.store("vs_1") is None and [s["id"] for s in index.stores()] == ["vs_2"]


def test_attach_status_and_chunks(index: AnyIndex) -> None:
    _store(index)
    text = DOCS["tea.md"]
    index.add_file("file-t", "tea.md", text.encode(), "assistants")
    index.attach("vs_1", "file-t", {"n": 1}, batch_id="batch_1")
    entry = index.vs_file("vs_1", "file-t")
    assert entry is not None and entry["status"] == "in_progress"
    assert entry["attributes"] == {"n": 1} and entry["last_error"] is None
    assert index.pending() == [("vs_1", "file-t")]
    assert index.claim("vs_1", "file-t", "me", 60)
    assert _index_file(index, "vs_1", "file-t", "tea.md", text)
    entry = index.vs_file("vs_1", "file-t")
    assert entry is not None and entry["status"] == "completed" and entry["title"] == "tea.md"
    assert index.pending() == [] and not index.claim("vs_1", "file-t", "me", 60)
    chunks = index.file_chunks("vs_1", "file-t")
    assert chunks and "".join(c.text for c in chunks).startswith("Green tea")
    assert index.chunk_count() == index.chunk_count("vs_1", "file-t") == len(chunks)
    assert index.chunks_by_id([c.id for c in chunks]) == {c.id: c for c in chunks}
    assert index.usage_bytes("vs_1") == len(text.encode()) + 4 * 64 * len(chunks)
    assert index.file_counts("vs_1") == {
        "in_progress": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "total": 1,
    }
    index.set_attributes("vs_1", "file-t", {"n": 2})
    index.set_status("vs_1", "file-t", "failed", {"code": "invalid_file", "message": "no"})
    entry = index.vs_file("vs_1", "file-t")
    assert entry is not None and entry["attributes"] == {"n": 2}
    assert entry["last_error"] == {"code": "invalid_file", "message": "no"}
    assert [e["file_id"] for e in index.vs_files("vs_1", "failed")] == ["file-t"]
    assert index.vs_files("vs_1", "completed") == []
    # attaching again starts over: in progress, no chunks, no usage
    index.attach("vs_1", "file-t", {}, batch_id="batch_1")
    assert index.chunk_count() == 0 and index.usage_bytes("vs_1") == 0
    # batches
    created = index.add_batch("batch_1", "vs_1")
    assert index.batch("vs_1", "batch_1") == {
        "id": "batch_1",
        "store_id": "vs_1",
        "created_at": created,
        "cancelled": 0,
    }
    assert index.batch("vs_2", "batch_1") is None
    index.cancel_batch("vs_1", "batch_1")
    assert index.batch("vs_1", "batch_1")["cancelled"] == 1  # type: ignore[index]
    assert index.file_counts("vs_1", "batch_1")["cancelled"] == 1
    assert [e["file_id"] for e in index.vs_files("vs_1", batch_id="batch_1")] == ["file-t"]
    assert not _index_file(index, "vs_1", "file-t", "tea.md", text)  # cancelled: not written
    assert index.detach("vs_1", "file-t") and not index.detach("vs_1", "file-t")
    assert index.vs_file("vs_1", "file-t") is None and index.orphan_fts_rows() == 0


def test_deleting_a_file_or_store_leaves_no_chunks(index: AnyIndex) -> None:
    ids = _with_docs(index)
    assert index.delete_file(ids["moon.md"])
    assert index.chunk_count(file_id=ids["moon.md"]) == 0
    assert index.file_counts("vs_1")["total"] == 2
    assert index.delete_store("vs_1")
    assert index.chunk_count() == 0 and index.vs_files("vs_1") == []


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
def test_search_finds_the_planted_fact(index: AnyIndex, mode: str) -> None:
    ids = _with_docs(index)
    q = "what is the code word for the vault"
    hits = search(index, ["vs_1"], q, embed(q), limit=3, mode=mode)  # type: ignore[arg-type]
    assert hits and hits[0].chunk.file_id == ids["moon.md"]
    assert 0 < hits[-1].score <= hits[0].score <= 1.0
    only_tea = search(index, ["vs_1"], q, embed(q), limit=3, file_ids=[ids["tea.md"]])
    assert {h.chunk.file_id for h in only_tea} <= {ids["tea.md"]}


def test_bm25_ranks_the_better_match_first(index: AnyIndex) -> None:
    ids = _with_docs(index)
    moon = [c.id for c in index.file_chunks("vs_1", ids["moon.md"])]
    tea = [c.id for c in index.file_chunks("vs_1", ids["tea.md"])]

    def ranked(*args: Any) -> list[int]:
        scored = index.bm25(*args)
        scores = [s for _, s in scored]
        assert scores == sorted(scores, reverse=True) and all(s >= 0 for s in scores)
        return [cid for cid, _ in scored]

    assert ranked(["vs_1"], '"vault" OR "tea"', 10)[:1] in (moon[:1], tea[:1])
    assert ranked(["vs_1"], '"brewing" OR "tea" OR "green"', 10)[0] == tea[0]
    assert ranked(["vs_1"], '"stripes"', 10, [ids["tea.md"]]) == []
    assert ranked(["vs_2"], '"stripes"', 10) == []
    assert ranked(["vs_1"], '"zebras"', 1) == [index.file_chunks("vs_1", ids["zebra.md"])[0].id]


def test_vectors_follow_changes(index: AnyIndex) -> None:
    ids = _with_docs(index)
    chunk_ids, matrix = index.vectors(["vs_1"])
    assert len(chunk_ids) == index.chunk_count() and matrix.shape == (len(chunk_ids), 64)
    first = int(chunk_ids[0])
    assert np.allclose(matrix[0], embed(index.chunks_by_id([first])[first].text))
    again, _ = index.vectors(["vs_1"])
    assert list(again) == list(chunk_ids)
    index.detach("vs_1", ids["moon.md"])
    after, _ = index.vectors(["vs_1"])
    assert len(after) == index.chunk_count()
    some, _ = index.vectors(["vs_1"], [ids["tea.md"]])
    assert len(some) == index.chunk_count(file_id=ids["tea.md"])
    none, empty = index.vectors(["vs_2"])
    assert len(none) == 0 and empty.shape == (0, 0)


def test_both_backends_answer_alike(pg: PostgresIndex, tmp_path: Path) -> None:
    sqlite = Index(tmp_path)
    try:
        for idx in (sqlite, pg):
            _with_docs(idx)
        for q in ("the code word for the vault", "black tea", "where do zebras live"):
            for mode in ("vector", "bm25"):
                a, b = (search(i, ["vs_1"], q, embed(q), limit=3, mode=mode) for i in (sqlite, pg))
                assert [h.chunk.file_id for h in a][:1] == [h.chunk.file_id for h in b][:1]
            va, vb = (
                search(i, ["vs_1"], q, embed(q), limit=3, mode="vector") for i in (sqlite, pg)
            )
            assert [(h.chunk.text, h.score) for h in va] == [(h.chunk.text, h.score) for h in vb]
        entries = [
            [{k: v for k, v in e.items() if k != "created_at"} for e in i.vs_files("vs_1")]
            for i in (sqlite, pg)
        ]
        assert entries[0] == entries[1]
        assert sqlite.stores() == pg.stores()
        assert sqlite.file_counts("vs_1") == pg.file_counts("vs_1")
        assert sqlite.usage_bytes("vs_1") == pg.usage_bytes("vs_1")
    finally:
        sqlite.close()


# -- what only a shared database does ---------------------------------------------------------


def test_two_replicas_see_each_others_data(pg: PostgresIndex, url: str) -> None:
    other = PostgresIndex(url)
    try:
        ids = _with_docs(pg)
        assert other.read_content(ids["moon.md"]) == DOCS["moon.md"].encode()
        assert other.store("vs_1") == pg.store("vs_1")
        assert other.file_chunks("vs_1", ids["tea.md"]) == pg.file_chunks("vs_1", ids["tea.md"])
        q = "the code word for the vault"
        first = search(other, ["vs_1"], q, embed(q), limit=3, mode="vector")
        assert first[0].chunk.file_id == ids["moon.md"]
        pg.detach("vs_1", ids["moon.md"])  # `other` has the matrix cached: it must notice
        after = search(other, ["vs_1"], q, embed(q), limit=3, mode="vector")
        assert after and ids["moon.md"] not in {h.chunk.file_id for h in after}
        other.add_file("file-new", "new.md", b"new", "assistants")
        assert pg.read_content("file-new") == b"new"
        assert other.delete_file("file-new") and pg.file("file-new") is None
    finally:
        other.close()


def test_a_file_is_claimed_by_one_replica_only(pg: PostgresIndex, url: str) -> None:
    _store(pg)
    pg.add_file("file-a", "a.md", b"alpha", "assistants")
    pg.attach("vs_1", "file-a", {})
    replicas = [PostgresIndex(url) for _ in range(4)]
    try:
        start = threading.Barrier(len(replicas))
        won: list[int] = []

        def race(n: int) -> None:
            start.wait()
            if replicas[n].claim("vs_1", "file-a", f"replica-{n}", 60):
                won.append(n)

        threads = [threading.Thread(target=race, args=(n,)) for n in range(len(replicas))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        holder, loser = f"replica-{won[0]}", "someone-else"
        assert pg.claim("vs_1", "file-a", holder, 60)  # the holder extends its lease
        assert not pg.claim("vs_1", "file-a", loser, 60)
        pg.attach("vs_1", "file-a", {})  # attached again: a new job, unclaimed
        assert pg.claim("vs_1", "file-a", loser, -1)  # a lease that has already run out ...
        assert pg.claim("vs_1", "file-a", holder, 60)  # ... is taken over
        assert not pg.claim("vs_1", "file-a", loser, 60)
        pg.set_status("vs_1", "file-a", "failed")
        assert not pg.claim("vs_1", "file-a", holder, 60)  # not in progress any more
    finally:
        for r in replicas:
            r.close()


def test_reconnects_after_the_connection_drops(pg: PostgresIndex) -> None:
    _store(pg)
    conn: Any = pg._conn
    conn.close()
    assert pg.store("vs_1") is not None
