"""The LocalDocs database: one SQLite file in the data folder holding the uploaded files'
records, the vector stores, their files and their chunks. Each chunk's text is in an FTS5
table (BM25) and its embedding is a float32 blob beside it (vector similarity, computed with
numpy over the store's chunks). File contents live beside the database, one file per id.
`PostgresIndex` (index_pg.py) is the same interface on PostgreSQL, shared by replicas.

Thread-safe; every call is short and meant for `asyncio.to_thread`. A file's chunks are written
in one transaction with its status, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .chunk import Chunk
from .index_sql import CHUNK_COLUMNS, FILE_COLUMNS, IndexSQL, StoredChunk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    purpose TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_stores (
    id TEXT PRIMARY KEY,
    name TEXT,
    description TEXT,
    created_at INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    expires_after TEXT,
    embedding_model TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vs_files (
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    file_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    attributes TEXT NOT NULL,
    usage_bytes INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    title TEXT,
    author TEXT,
    date TEXT,
    PRIMARY KEY (store_id, file_id)
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks (store_id, file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, tokenize='porter unicode61');
"""


class Index(IndexSQL):
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.files_dir = folder / "files"
        self.files_dir.mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            folder / "localdocs.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._version = 0  # bumped by every change of chunks
        self._matrices: dict[tuple[str, ...], tuple[int, np.ndarray, np.ndarray]] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    # -- files --------------------------------------------------------------------------

    def content_path(self, file_id: str) -> Path:
        """Where a file's content is on disk (this backend only; callers use `read_content`)."""
        return self.files_dir / file_id

    def read_content(self, file_id: str) -> bytes:
        """A file's content; FileNotFoundError when there is none."""
        return self.content_path(file_id).read_bytes()

    def add_file(self, file_id: str, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        """Write the content (to a temporary name, then renamed), then its record."""
        path = self.content_path(file_id)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        row = (file_id, filename, len(data), int(time.time()), purpose)
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?)", row)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return dict(zip(FILE_COLUMNS.split(", "), row, strict=True))

    def delete_file(self, file_id: str) -> bool:
        """The file's record, its content, and its chunks in every vector store."""
        with self._tx() as db:
            gone = db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
            self._drop_chunks(db, "file_id = ?", (file_id,))
            db.execute("DELETE FROM vs_files WHERE file_id = ?", (file_id,))
        self.content_path(file_id).unlink(missing_ok=True)
        return gone

    # -- a store's files ----------------------------------------------------------------

    def claim(self, store_id: str, file_id: str, owner: str, lease: float) -> bool:
        """Whether `owner` may index the file now (it is still in progress). One process owns
        this database, so there is nobody to share the work with: `owner`, `lease` are unused."""
        row = self._first(
            "SELECT status FROM vs_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
        )
        return row is not None and row["status"] == "in_progress"

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
            row = db.execute(
                "SELECT status FROM vs_files WHERE store_id = ? AND file_id = ?",
                (store_id, file_id),
            ).fetchone()
            if row is None or row["status"] != "in_progress":
                return False
            self._drop_chunks(db, "store_id = ? AND file_id = ?", (store_id, file_id))
            blobs = vectors.astype("<f4")
            for seq, (c, v) in enumerate(zip(chunks, blobs, strict=True)):
                cur = db.execute(
                    'INSERT INTO chunks (store_id, file_id, seq, text, page, start, "end", '
                    "embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (store_id, file_id, seq, c.text, c.page, c.start, c.end, v.tobytes()),
                )
                db.execute(
                    "INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (cur.lastrowid, c.text)
                )
            self._version += 1
            usage = sum(len(c.text.encode()) for c in chunks) + blobs.nbytes
            db.execute(
                "UPDATE vs_files SET status = 'completed', last_error = NULL, usage_bytes = ?, "
                "title = ?, author = ?, date = ? WHERE store_id = ? AND file_id = ?",
                (usage, meta.get("title"), meta.get("author"), meta.get("date"), store_id, file_id),
            )
            return True

    def _drop_chunks(
        self, db: sqlite3.Connection, where: str, args: Sequence[Any], store_id: str | None = None
    ) -> None:
        db.execute(
            f"DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE {where})", args
        )
        db.execute(f"DELETE FROM chunks WHERE {where}", args)
        self._version += 1

    def orphan_fts_rows(self) -> int:
        """Full-text rows whose chunk is gone (always 0 unless something is broken)."""
        return self._count(
            "SELECT COUNT(*) AS n FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks)"
        )

    # -- retrieval ----------------------------------------------------------------------

    def bm25(
        self,
        store_ids: Sequence[str],
        match: str,
        limit: int,
        file_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """(chunk id, BM25 score) best first for an FTS5 `match` expression; higher scores are
        better (FTS5's `bm25()` is negated)."""
        where, args = _chunks_of(store_ids, file_ids)
        rows = self._all(
            "SELECT f.rowid AS id, -bm25(chunks_fts) AS score FROM chunks_fts f "
            f"JOIN chunks c ON c.id = f.rowid WHERE chunks_fts MATCH ? AND {where} "
            "ORDER BY bm25(chunks_fts) LIMIT ?",
            (match, *args, limit),
        )
        return [(r["id"], r["score"]) for r in rows]

    def vectors(
        self, store_ids: Sequence[str], file_ids: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, their embeddings as rows) of the stores. The stores' matrix is kept in
        memory until their chunks change."""
        key = tuple(sorted(store_ids))
        with self._lock:
            cached = self._matrices.get(key) if file_ids is None else None
            if cached is not None and cached[0] == self._version:
                return cached[1], cached[2]
            where, args = _chunks_of(store_ids, file_ids)
            rows = self._db.execute(
                f"SELECT c.id, c.embedding FROM chunks c WHERE {where}", args
            ).fetchall()
            if not rows:
                return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows])
            if file_ids is None:
                self._matrices = {k: v for k, v in self._matrices.items() if v[0] == self._version}
                self._matrices[key] = (self._version, ids, matrix)
            return ids, matrix

    def chunks_by_id(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self._all(
            f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE id IN ({marks})",
            tuple(ids),
        )
        return {r["id"]: StoredChunk(**r) for r in rows}


def _chunks_of(
    store_ids: Sequence[str], file_ids: Sequence[str] | None
) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause on `chunks c` for the stores (and files)."""
    where = f"c.store_id IN ({', '.join('?' * len(store_ids))})"
    args: tuple[Any, ...] = tuple(store_ids)
    if file_ids is not None:
        where += f" AND c.file_id IN ({', '.join('?' * len(file_ids))})"
        args += tuple(file_ids)
    return where, args
