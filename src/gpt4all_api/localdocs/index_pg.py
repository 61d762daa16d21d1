"""The LocalDocs database in PostgreSQL (`database_url`), shared by replicas on several machines:
the same interface and behaviour as the SQLite `Index`, with the files' contents in the
database (bytea) so that every replica reads them. Text search is PostgreSQL's full text
(`to_tsvector('english', ...)`, a GIN index, `ts_rank`) standing in for FTS5's BM25; embeddings
are float32 bytes compared with numpy, as in SQLite (pgvector is not available).

Indexing is shared work: every replica may have queued the same file (at startup, `pending`),
so a replica `claim`s a file before indexing it; a claim is a lease that another replica can
take over when it runs out (its holder died).

One connection guarded by a lock (every call is short and meant for `asyncio.to_thread`),
reconnected after a failure. Tables are named `gpt4all_api_localdocs_*`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from .chunk import Chunk
from .index_sql import CHUNK_COLUMNS, FILE_COLUMNS, IndexSQL, StoredChunk

FILES = "gpt4all_api_localdocs_files"
STORES = "gpt4all_api_localdocs_stores"
VS_FILES = "gpt4all_api_localdocs_vs_files"
BATCHES = "gpt4all_api_localdocs_batches"
CHUNKS = "gpt4all_api_localdocs_chunks"

# `n` keeps the insertion order (SQLite's rowid); `chunks_version` is bumped by every change of
# a store's chunks, so that a replica knows when its cached matrix is stale.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {FILES} (
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    purpose TEXT NOT NULL,
    content BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS {STORES} (
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    name TEXT,
    description TEXT,
    created_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    expires_after TEXT,
    embedding_model TEXT NOT NULL,
    chunks_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {VS_FILES} (
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    store_id TEXT NOT NULL REFERENCES {STORES}(id) ON DELETE CASCADE,
    file_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    attributes TEXT NOT NULL,
    usage_bytes BIGINT NOT NULL DEFAULT 0,
    batch_id TEXT,
    title TEXT,
    author TEXT,
    date TEXT,
    claimed_by TEXT,
    claimed_until DOUBLE PRECISION,
    PRIMARY KEY (store_id, file_id)
);
CREATE INDEX IF NOT EXISTS {VS_FILES}_file ON {VS_FILES} (file_id);
CREATE TABLE IF NOT EXISTS {BATCHES} (
    id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL REFERENCES {STORES}(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {CHUNKS} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    embedding BYTEA NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
CREATE INDEX IF NOT EXISTS {CHUNKS}_file ON {CHUNKS} (store_id, file_id);
CREATE INDEX IF NOT EXISTS {CHUNKS}_tsv ON {CHUNKS} USING GIN (tsv);
"""
_SCHEMA_LOCK = 0x6C6F63616C646F63  # advisory lock: replicas starting together create it once
_QUOTED = re.compile(r'"((?:[^"]|"")*)"')
_MAX_CACHED = 16  # stores' matrices kept in memory


class PostgresIndex(IndexSQL):
    FILES = FILES
    STORES = STORES
    VS_FILES = VS_FILES
    BATCHES = BATCHES
    CHUNKS = CHUNKS
    ORDER = "n"
    MARK = "%s"
    REATTACH = ", claimed_by = NULL, claimed_until = NULL"

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        # stores -> (their chunks' versions, chunk ids, embeddings)
        self._matrices: dict[tuple[str, ...], tuple[Any, np.ndarray, np.ndarray]] = {}
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            db.execute(_SCHEMA)

    def _db(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with self._lock:
            db = self._db()
            with db.transaction():
                yield db

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._db().execute(sql, args).fetchall()

    # -- files --------------------------------------------------------------------------

    def read_content(self, file_id: str) -> bytes:
        """A file's content; FileNotFoundError when there is none."""
        row = self._first(f"SELECT content FROM {FILES} WHERE id = ?", (file_id,))
        if row is None:
            raise FileNotFoundError(f"no content for {file_id}")
        return bytes(row["content"])

    def add_file(self, file_id: str, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        """The record and its content, in one row."""
        row = (file_id, filename, len(data), int(time.time()), purpose)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO {FILES} ({FILE_COLUMNS}, content) VALUES (%s, %s, %s, %s, %s, %s)",
                (*row, data),
            )
        return dict(zip(FILE_COLUMNS.split(", "), row, strict=True))

    def delete_file(self, file_id: str) -> bool:
        """The file's record and content, and its chunks in every vector store."""
        with self._tx() as db:
            # its entries first: an indexer still writing its chunks waits, then finds it gone
            db.execute(f"DELETE FROM {VS_FILES} WHERE file_id = %s", (file_id,))
            self._drop_chunks(db, "file_id = ?", (file_id,))
            return db.execute(f"DELETE FROM {FILES} WHERE id = %s", (file_id,)).rowcount > 0

    # -- a store's files ----------------------------------------------------------------

    def claim(self, store_id: str, file_id: str, owner: str, lease: float) -> bool:
        """Whether `owner` may index the file now: it is in progress and nobody else holds an
        unexpired claim on it. Atomic across replicas; called again by the holder to extend its
        lease by `lease` seconds (of the database's clock)."""
        with self._lock:
            row = (
                self._db()
                .execute(
                    f"UPDATE {VS_FILES} SET claimed_by = %(owner)s, "
                    "claimed_until = EXTRACT(EPOCH FROM now()) + %(lease)s "
                    "WHERE store_id = %(store)s AND file_id = %(file)s "
                    "AND status = 'in_progress' AND (claimed_by IS NULL OR claimed_by = %(owner)s "
                    "OR claimed_until < EXTRACT(EPOCH FROM now())) RETURNING file_id",
                    {"owner": owner, "lease": lease, "store": store_id, "file": file_id},
                )
                .fetchone()
            )
        return row is not None

    def put_chunks(
        self,
        store_id: str,
        file_id: str,
        chunks: list[Chunk],
        vectors: np.ndarray,
        meta: dict[str, str | None],
    ) -> bool:
        """A file's chunks and the status `completed`, in one transaction. False when the file
        left the store (or was reset) meanwhile: nothing is written then."""
        with self._tx() as db:
            # the store's row first, then the file's: the order every writer locks them in
            self._bump(db, [store_id])
            row = db.execute(
                f"SELECT status FROM {VS_FILES} WHERE store_id = %s AND file_id = %s FOR UPDATE",
                (store_id, file_id),
            ).fetchone()
            if row is None or row["status"] != "in_progress":
                return False
            db.execute(
                f"DELETE FROM {CHUNKS} WHERE store_id = %s AND file_id = %s", (store_id, file_id)
            )
            blobs = vectors.astype("<f4")
            with db.cursor() as cur:
                cur.executemany(
                    f'INSERT INTO {CHUNKS} (store_id, file_id, seq, text, page, start, "end", '
                    "embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (store_id, file_id, seq, c.text, c.page, c.start, c.end, v.tobytes())
                        for seq, (c, v) in enumerate(zip(chunks, blobs, strict=True))
                    ],
                )
            usage = sum(len(c.text.encode()) for c in chunks) + blobs.nbytes
            db.execute(
                f"UPDATE {VS_FILES} SET status = 'completed', last_error = NULL, usage_bytes = %s,"
                " title = %s, author = %s, date = %s, claimed_by = NULL, claimed_until = NULL "
                "WHERE store_id = %s AND file_id = %s",
                (usage, meta.get("title"), meta.get("author"), meta.get("date"), store_id, file_id),
            )
            return True

    def _bump(self, db: psycopg.Connection[Any], store_ids: Sequence[str]) -> None:
        """Mark the stores' chunks as changed (locking their rows, in id order)."""
        db.execute(
            f"UPDATE {STORES} SET chunks_version = chunks_version + 1 WHERE id IN "
            f"(SELECT id FROM {STORES} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE)",
            (list(store_ids),),
        )

    def _drop_chunks(
        self,
        db: psycopg.Connection[Any],
        where: str,
        args: Sequence[Any],
        store_id: str | None = None,
    ) -> None:
        """Delete chunks, marking their stores (`store_id`, else the chunks' own) changed."""
        where = self._q(where)
        if store_id is not None:
            stores = [store_id]
        else:
            rows = db.execute(f"SELECT DISTINCT store_id FROM {CHUNKS} WHERE {where}", args)
            stores = sorted(r["store_id"] for r in rows.fetchall())
        self._bump(db, stores)
        db.execute(f"DELETE FROM {CHUNKS} WHERE {where}", args)

    def orphan_fts_rows(self) -> int:
        """Always 0: the full-text vector is a generated column of the chunk's row."""
        return 0

    # -- retrieval ----------------------------------------------------------------------

    def bm25(
        self,
        store_ids: Sequence[str],
        match: str,
        limit: int,
        file_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """(chunk id, score) best first for an FTS5 `match` expression of quoted words (as
        `search.fts_query` writes it): any of the words, scored by `ts_rank` (term frequency,
        normalised by the chunk's length; higher first), in place of BM25."""
        words = [w.replace('""', '"') for w in _QUOTED.findall(match)] or [match]
        query = " || ".join(["plainto_tsquery('english', %s)"] * len(words))
        where, args = _chunks_of(store_ids, file_ids)
        rows = self._all(
            f"SELECT c.id, ts_rank(c.tsv, w.q, 1) AS score FROM {CHUNKS} c, "
            f"(SELECT {query} AS q) w WHERE c.tsv @@ w.q AND {where} "
            "ORDER BY score DESC, c.id LIMIT %s",
            (*words, *args, limit),
        )
        return [(r["id"], float(r["score"])) for r in rows]

    def vectors(
        self, store_ids: Sequence[str], file_ids: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, their embeddings as rows) of the stores. The stores' matrix is kept in
        memory until their chunks change (in any replica)."""
        key = tuple(sorted(store_ids))
        with self._lock:
            db = self._db()
            # the versions before the rows: a change in between only makes the next call reload
            version = None
            if file_ids is None:
                version = [
                    (r["id"], r["chunks_version"])
                    for r in db.execute(
                        f"SELECT id, chunks_version FROM {STORES} WHERE id = ANY(%s) ORDER BY id",
                        (list(key),),
                    ).fetchall()
                ]
                cached = self._matrices.get(key)
                if cached is not None and cached[0] == version:
                    return cached[1], cached[2]
            where, args = _chunks_of(store_ids, file_ids)
            rows = db.execute(
                f"SELECT c.id, c.embedding FROM {CHUNKS} c WHERE {where} ORDER BY c.id", args
            ).fetchall()
            if not rows:
                return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
            ids = np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.stack([np.frombuffer(r["embedding"], dtype="<f4") for r in rows])
            if version is not None:
                self._matrices.pop(key, None)
                while len(self._matrices) >= _MAX_CACHED:
                    self._matrices.pop(next(iter(self._matrices)))
                self._matrices[key] = (version, ids, matrix)
            return ids, matrix

    def chunks_by_id(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        rows = self._all(
            f"SELECT {CHUNK_COLUMNS} FROM {CHUNKS} WHERE id = ANY(%s)", ([int(i) for i in ids],)
        )
        return {r["id"]: StoredChunk(**r) for r in rows}


def _chunks_of(
    store_ids: Sequence[str], file_ids: Sequence[str] | None
) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause on `chunks c` for the stores (and files)."""
    where = "c.store_id = ANY(%s)"
    args: tuple[Any, ...] = (list(store_ids),)
    if file_ids is not None:
        where += " AND c.file_id = ANY(%s)"
        args += (list(file_ids),)
    return where, args
