"""The LocalDocs database: one SQLite file in the data folder holding the uploaded files'
records, the vector stores, their files and their chunks. Each chunk's text is in an FTS5
table (BM25) and its embedding is a float32 blob beside it (vector similarity, computed with
numpy over the store's chunks). File contents live beside the database, one file per id.
`PostgresIndex` (index_pg.py) is the same interface on PostgreSQL, shared by replicas.

Thread-safe; every call is short and meant for `asyncio.to_thread`. A file's chunks are written
in one transaction with its status, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .chunk import Chunk

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

FILE_COLUMNS = "id, filename, bytes, created_at, purpose"
STORE_COLUMNS = (
    "id, name, description, created_at, last_active_at, metadata, expires_after, embedding_model"
)
VS_FILE_COLUMNS = (
    "store_id, file_id, created_at, status, last_error, attributes, usage_bytes, batch_id, "
    "title, author, date"
)


@dataclass(frozen=True)
class StoredChunk:
    id: int
    store_id: str
    file_id: str
    text: str
    page: int | None
    start: int
    end: int


class Index:
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

    def _one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._all(sql, args)
        return rows[0] if rows else None

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

    def file(self, file_id: str) -> dict[str, Any] | None:
        return self._one(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))

    def files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        if purpose:
            return self._all(
                f"SELECT {FILE_COLUMNS} FROM files WHERE purpose = ? ORDER BY created_at, rowid",
                (purpose,),
            )
        return self._all(f"SELECT {FILE_COLUMNS} FROM files ORDER BY created_at, rowid")

    def delete_file(self, file_id: str) -> bool:
        """The file's record, its content, and its chunks in every vector store."""
        with self._tx() as db:
            gone = db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
            self._drop_chunks(db, "file_id = ?", (file_id,))
            db.execute("DELETE FROM vs_files WHERE file_id = ?", (file_id,))
        self.content_path(file_id).unlink(missing_ok=True)
        return gone

    # -- vector stores ------------------------------------------------------------------

    def add_store(self, store: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO vector_stores ({STORE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _store_values(store),
            )

    def store(self, store_id: str) -> dict[str, Any] | None:
        row = self._one(f"SELECT {STORE_COLUMNS} FROM vector_stores WHERE id = ?", (store_id,))
        return _store_row(row) if row else None

    def stores(self) -> list[dict[str, Any]]:
        rows = self._all(f"SELECT {STORE_COLUMNS} FROM vector_stores ORDER BY created_at, rowid")
        return [_store_row(r) for r in rows]

    def stores_named(self, name: str) -> list[dict[str, Any]]:
        rows = self._all(
            f"SELECT {STORE_COLUMNS} FROM vector_stores WHERE name = ? OR id = ? "
            "ORDER BY created_at, rowid",
            (name, name),
        )
        return [_store_row(r) for r in rows]

    def update_store(self, store_id: str, **values: Any) -> None:
        encoded = _store_updates(values)
        if not encoded:
            return
        sets = ", ".join(f"{k} = ?" for k in encoded)
        with self._tx() as db:
            db.execute(
                f"UPDATE vector_stores SET {sets} WHERE id = ?", (*encoded.values(), store_id)
            )

    def touch_store(self, store_id: str) -> None:
        self.update_store(store_id, last_active_at=int(time.time()))

    def delete_store(self, store_id: str) -> bool:
        with self._tx() as db:
            self._drop_chunks(db, "store_id = ?", (store_id,))
            db.execute("DELETE FROM vs_files WHERE store_id = ?", (store_id,))
            db.execute("DELETE FROM batches WHERE store_id = ?", (store_id,))
            return db.execute("DELETE FROM vector_stores WHERE id = ?", (store_id,)).rowcount > 0

    def file_counts(self, store_id: str, batch_id: str | None = None) -> dict[str, int]:
        where, args = "store_id = ?", [store_id]
        if batch_id is not None:
            where += " AND batch_id = ?"
            args.append(batch_id)
        rows = self._all(
            f"SELECT status, COUNT(*) AS n FROM vs_files WHERE {where} GROUP BY status", args
        )
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for r in rows:
            counts[r["status"]] = r["n"]
        counts["total"] = sum(counts.values())
        return counts

    def usage_bytes(self, store_id: str) -> int:
        row = self._one(
            "SELECT COALESCE(SUM(usage_bytes), 0) AS n FROM vs_files WHERE store_id = ?",
            (store_id,),
        )
        return int(row["n"]) if row else 0

    # -- a store's files ----------------------------------------------------------------

    def attach(
        self, store_id: str, file_id: str, attributes: dict[str, Any], batch_id: str | None = None
    ) -> None:
        """Add a file to a store (in progress), or set an attached file back to in progress."""
        with self._tx() as db:
            self._drop_chunks(db, "store_id = ? AND file_id = ?", (store_id, file_id))
            db.execute(
                "INSERT INTO vs_files (store_id, file_id, created_at, status, attributes, batch_id)"
                " VALUES (?, ?, ?, 'in_progress', ?, ?) ON CONFLICT (store_id, file_id) DO UPDATE"
                " SET status = 'in_progress', last_error = NULL, usage_bytes = 0,"
                " attributes = excluded.attributes, batch_id = excluded.batch_id",
                (store_id, file_id, int(time.time()), json.dumps(attributes), batch_id),
            )

    def vs_file(self, store_id: str, file_id: str) -> dict[str, Any] | None:
        row = self._one(
            f"SELECT {VS_FILE_COLUMNS} FROM vs_files WHERE store_id = ? AND file_id = ?",
            (store_id, file_id),
        )
        return _vs_file_row(row) if row else None

    def vs_files(
        self, store_id: str, status: str | None = None, batch_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = "store_id = ?", [store_id]
        if status is not None:
            where += " AND status = ?"
            args.append(status)
        if batch_id is not None:
            where += " AND batch_id = ?"
            args.append(batch_id)
        rows = self._all(
            f"SELECT {VS_FILE_COLUMNS} FROM vs_files WHERE {where} ORDER BY created_at, rowid", args
        )
        return [_vs_file_row(r) for r in rows]

    def pending(self) -> list[tuple[str, str]]:
        """(store, file) of every file still to be indexed (after a restart too)."""
        rows = self._all(
            "SELECT store_id, file_id FROM vs_files WHERE status = 'in_progress' "
            "ORDER BY created_at, rowid"
        )
        return [(r["store_id"], r["file_id"]) for r in rows]

    def claim(self, store_id: str, file_id: str, owner: str, lease: float) -> bool:
        """Whether `owner` may index the file now (it is still in progress). One process owns
        this database, so there is nobody to share the work with: `owner`, `lease` are unused."""
        row = self._one(
            "SELECT status FROM vs_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
        )
        return row is not None and row["status"] == "in_progress"

    def detach(self, store_id: str, file_id: str) -> bool:
        with self._tx() as db:
            self._drop_chunks(db, "store_id = ? AND file_id = ?", (store_id, file_id))
            cur = db.execute(
                "DELETE FROM vs_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
            )
            return cur.rowcount > 0

    def set_status(
        self, store_id: str, file_id: str, status: str, error: dict[str, str] | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE vs_files SET status = ?, last_error = ? WHERE store_id = ? AND file_id = ?",
                (status, json.dumps(error) if error else None, store_id, file_id),
            )

    def set_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE vs_files SET attributes = ? WHERE store_id = ? AND file_id = ?",
                (json.dumps(attributes), store_id, file_id),
            )

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

    def _drop_chunks(self, db: sqlite3.Connection, where: str, args: Sequence[Any]) -> None:
        db.execute(
            f"DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE {where})", args
        )
        db.execute(f"DELETE FROM chunks WHERE {where}", args)
        self._version += 1

    def chunk_count(self, store_id: str | None = None, file_id: str | None = None) -> int:
        where, args = ["1"], []
        if store_id is not None:
            where.append("store_id = ?")
            args.append(store_id)
        if file_id is not None:
            where.append("file_id = ?")
            args.append(file_id)
        row = self._one(f"SELECT COUNT(*) AS n FROM chunks WHERE {' AND '.join(where)}", args)
        return int(row["n"]) if row else 0

    def orphan_fts_rows(self) -> int:
        """Full-text rows whose chunk is gone (always 0 unless something is broken)."""
        row = self._one(
            "SELECT COUNT(*) AS n FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks)"
        )
        return int(row["n"]) if row else 0

    def file_chunks(self, store_id: str, file_id: str) -> list[StoredChunk]:
        rows = self._all(
            'SELECT id, store_id, file_id, text, page, start, "end" FROM chunks '
            "WHERE store_id = ? AND file_id = ? ORDER BY seq",
            (store_id, file_id),
        )
        return [StoredChunk(**r) for r in rows]

    # -- batches ------------------------------------------------------------------------

    def add_batch(self, batch_id: str, store_id: str) -> int:
        created = int(time.time())
        with self._tx() as db:
            db.execute(
                "INSERT INTO batches (id, store_id, created_at) VALUES (?, ?, ?)",
                (batch_id, store_id, created),
            )
        return created

    def batch(self, store_id: str, batch_id: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT id, store_id, created_at, cancelled FROM batches WHERE id = ? AND store_id = ?",
            (batch_id, store_id),
        )

    def cancel_batch(self, store_id: str, batch_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE batches SET cancelled = 1 WHERE id = ?", (batch_id,))
            db.execute(
                "UPDATE vs_files SET status = 'cancelled' WHERE store_id = ? AND batch_id = ? "
                "AND status = 'in_progress'",
                (store_id, batch_id),
            )

    # -- retrieval ----------------------------------------------------------------------

    def bm25(
        self,
        store_ids: Sequence[str],
        match: str,
        limit: int,
        file_ids: Sequence[str] | None = None,
    ) -> list[int]:
        """Chunk ids best first by BM25 for an FTS5 `match` expression."""
        where, args = _chunks_of(store_ids, file_ids)
        rows = self._all(
            "SELECT f.rowid AS id FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
            f"WHERE chunks_fts MATCH ? AND {where} ORDER BY bm25(chunks_fts) LIMIT ?",
            (match, *args, limit),
        )
        return [r["id"] for r in rows]

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
            'SELECT id, store_id, file_id, text, page, start, "end" FROM chunks '
            f"WHERE id IN ({marks})",
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


def _store_values(store: dict[str, Any]) -> tuple[Any, ...]:
    """A new vector store's row, in `STORE_COLUMNS` order (both backends)."""
    return (
        store["id"],
        store["name"],
        store.get("description"),
        store["created_at"],
        store["created_at"],
        json.dumps(store.get("metadata") or {}),
        json.dumps(store["expires_after"]) if store.get("expires_after") else None,
        store["embedding_model"],
    )


def _store_updates(values: dict[str, Any]) -> dict[str, Any]:
    """Column values for an update of a vector store, its JSON columns encoded."""
    return {
        k: json.dumps(v) if k in ("metadata", "expires_after") and v is not None else v
        for k, v in values.items()
    }


def _store_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["metadata"] = json.loads(row["metadata"] or "{}")
    row["expires_after"] = json.loads(row["expires_after"]) if row["expires_after"] else None
    return row


def _vs_file_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["attributes"] = json.loads(row["attributes"] or "{}")
    row["last_error"] = json.loads(row["last_error"]) if row["last_error"] else None
    return row
