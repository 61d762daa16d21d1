"""What the two LocalDocs databases share: the records' columns, and every query that reads the
same in SQLite (`Index`, index.py) and PostgreSQL (`PostgresIndex`, index_pg.py), written once.

The shared queries use `?` marks; `IndexSQL` hands them to PostgreSQL's driver with `%s`
(none of them holds a `?` or a `%` of its own). Each backend names its tables, its insertion
order column, and how it runs a statement (`_all`, `_tx`) and drops chunks (`_drop_chunks`);
its own queries (file contents, claims, chunks, retrieval) stay in its module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

FILE_COLUMNS = "id, filename, bytes, created_at, purpose"
STORE_COLUMNS = (
    "id, name, description, created_at, last_active_at, metadata, expires_after, embedding_model"
)
VS_FILE_COLUMNS = (
    "store_id, file_id, created_at, status, last_error, attributes, usage_bytes, batch_id, "
    "title, author, date"
)
CHUNK_COLUMNS = 'id, store_id, file_id, text, page, start, "end"'
#: What `update_store` may set.
STORE_UPDATES = frozenset(
    {"name", "description", "last_active_at", "metadata", "expires_after", "embedding_model"}
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


class IndexSQL:
    """The queries both backends share. A subclass sets the names below and implements
    `_all`, `_tx` and `_drop_chunks`."""

    FILES = "files"
    STORES = "vector_stores"
    VS_FILES = "vs_files"
    BATCHES = "batches"
    CHUNKS = "chunks"
    ORDER = "rowid"  # the column that keeps insertion order
    MARK = "?"  # the driver's parameter mark
    #: More to set when a file is attached again (PostgreSQL: its claim is dropped).
    REATTACH = ""

    # -- the backend's part -------------------------------------------------------------

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a query in the backend's own dialect."""
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[Any]:
        """A transaction: its connection's `execute(sql, args)` takes the backend's dialect."""
        raise NotImplementedError

    def _drop_chunks(
        self, db: Any, where: str, args: Sequence[Any], store_id: str | None = None
    ) -> None:
        """Delete the chunks `where` (a shared-dialect condition) selects, in transaction `db`;
        `store_id`: the store they belong to, when the caller knows it."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        return sql if self.MARK == "?" else sql.replace("?", self.MARK)

    def _select(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._all(self._q(sql), args)

    def _first(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._select(sql, args)
        return rows[0] if rows else None

    def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        row = self._first(sql, args)
        return int(row["n"]) if row else 0

    def _write(self, *statements: tuple[str, Sequence[Any]]) -> None:
        """Run the statements in one transaction."""
        with self._tx() as db:
            for sql, args in statements:
                db.execute(self._q(sql), args)

    # -- files --------------------------------------------------------------------------

    def file(self, file_id: str) -> dict[str, Any] | None:
        return self._first(f"SELECT {FILE_COLUMNS} FROM {self.FILES} WHERE id = ?", (file_id,))

    def files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE purpose = ? ", (purpose,)) if purpose else ("", ())
        return self._select(
            f"SELECT {FILE_COLUMNS} FROM {self.FILES} {where}ORDER BY created_at, {self.ORDER}",
            args,
        )

    # -- vector stores ------------------------------------------------------------------

    def add_store(self, store: dict[str, Any]) -> None:
        marks = ", ".join("?" * len(STORE_COLUMNS.split(", ")))
        self._write(
            (f"INSERT INTO {self.STORES} ({STORE_COLUMNS}) VALUES ({marks})", _store_values(store))
        )

    def store(self, store_id: str) -> dict[str, Any] | None:
        row = self._first(f"SELECT {STORE_COLUMNS} FROM {self.STORES} WHERE id = ?", (store_id,))
        return _store_row(row) if row else None

    def stores(self) -> list[dict[str, Any]]:
        rows = self._select(
            f"SELECT {STORE_COLUMNS} FROM {self.STORES} ORDER BY created_at, {self.ORDER}"
        )
        return [_store_row(r) for r in rows]

    def stores_named(self, name: str) -> list[dict[str, Any]]:
        rows = self._select(
            f"SELECT {STORE_COLUMNS} FROM {self.STORES} WHERE name = ? OR id = ? "
            f"ORDER BY created_at, {self.ORDER}",
            (name, name),
        )
        return [_store_row(r) for r in rows]

    def update_store(self, store_id: str, **values: Any) -> None:
        unknown = set(values) - STORE_UPDATES
        if unknown:
            raise ValueError(f"not a vector store column: {', '.join(sorted(unknown))}")
        encoded = _store_updates(values)
        if encoded:
            sets = ", ".join(f"{k} = ?" for k in encoded)
            self._write(
                (f"UPDATE {self.STORES} SET {sets} WHERE id = ?", (*encoded.values(), store_id))
            )

    def touch_store(self, store_id: str) -> None:
        self.update_store(store_id, last_active_at=int(time.time()))

    def delete_store(self, store_id: str) -> bool:
        with self._tx() as db:
            self._drop_chunks(db, "store_id = ?", (store_id,), store_id)
            for table in (self.VS_FILES, self.BATCHES):
                db.execute(self._q(f"DELETE FROM {table} WHERE store_id = ?"), (store_id,))
            sql = self._q(f"DELETE FROM {self.STORES} WHERE id = ?")
            return db.execute(sql, (store_id,)).rowcount > 0

    def file_counts(self, store_id: str, batch_id: str | None = None) -> dict[str, int]:
        where, args = _and("store_id = ?", [store_id], batch_id=batch_id)
        rows = self._select(
            f"SELECT status, COUNT(*) AS n FROM {self.VS_FILES} WHERE {where} GROUP BY status",
            args,
        )
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for r in rows:
            counts[r["status"]] = int(r["n"])
        counts["total"] = sum(counts.values())
        return counts

    def usage_bytes(self, store_id: str) -> int:
        return self._count(
            f"SELECT COALESCE(SUM(usage_bytes), 0) AS n FROM {self.VS_FILES} WHERE store_id = ?",
            (store_id,),
        )

    # -- a store's files ----------------------------------------------------------------

    def attach(
        self, store_id: str, file_id: str, attributes: dict[str, Any], batch_id: str | None = None
    ) -> None:
        """Add a file to a store (in progress), or set an attached file back to in progress."""
        with self._tx() as db:
            self._drop_chunks(db, "store_id = ? AND file_id = ?", (store_id, file_id), store_id)
            sql = (
                f"INSERT INTO {self.VS_FILES} (store_id, file_id, created_at, status, "
                "attributes, batch_id) VALUES (?, ?, ?, 'in_progress', ?, ?) "
                "ON CONFLICT (store_id, file_id) DO UPDATE SET status = 'in_progress', "
                "last_error = NULL, usage_bytes = 0, attributes = excluded.attributes, "
                f"batch_id = excluded.batch_id{self.REATTACH}"
            )
            args = (store_id, file_id, int(time.time()), json.dumps(attributes), batch_id)
            db.execute(self._q(sql), args)

    def vs_file(self, store_id: str, file_id: str) -> dict[str, Any] | None:
        row = self._first(
            f"SELECT {VS_FILE_COLUMNS} FROM {self.VS_FILES} WHERE store_id = ? AND file_id = ?",
            (store_id, file_id),
        )
        return _vs_file_row(row) if row else None

    def vs_files(
        self, store_id: str, status: str | None = None, batch_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = _and("store_id = ?", [store_id], status=status, batch_id=batch_id)
        rows = self._select(
            f"SELECT {VS_FILE_COLUMNS} FROM {self.VS_FILES} WHERE {where} "
            f"ORDER BY created_at, {self.ORDER}",
            args,
        )
        return [_vs_file_row(r) for r in rows]

    def pending(self) -> list[tuple[str, str]]:
        """(store, file) of every file still to be indexed (after a restart too), claimed or
        not: `claim` tells who indexes it."""
        rows = self._select(
            f"SELECT store_id, file_id FROM {self.VS_FILES} WHERE status = 'in_progress' "
            f"ORDER BY created_at, {self.ORDER}"
        )
        return [(r["store_id"], r["file_id"]) for r in rows]

    def detach(self, store_id: str, file_id: str) -> bool:
        with self._tx() as db:
            self._drop_chunks(db, "store_id = ? AND file_id = ?", (store_id, file_id), store_id)
            sql = self._q(f"DELETE FROM {self.VS_FILES} WHERE store_id = ? AND file_id = ?")
            return db.execute(sql, (store_id, file_id)).rowcount > 0

    def set_status(
        self, store_id: str, file_id: str, status: str, error: dict[str, str] | None = None
    ) -> None:
        self._write(
            (
                f"UPDATE {self.VS_FILES} SET status = ?, last_error = ? "
                "WHERE store_id = ? AND file_id = ?",
                (status, json.dumps(error) if error else None, store_id, file_id),
            )
        )

    def set_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        self._write(
            (
                f"UPDATE {self.VS_FILES} SET attributes = ? WHERE store_id = ? AND file_id = ?",
                (json.dumps(attributes), store_id, file_id),
            )
        )

    def chunk_count(self, store_id: str | None = None, file_id: str | None = None) -> int:
        where, args = _and("1 = 1", [], store_id=store_id, file_id=file_id)
        return self._count(f"SELECT COUNT(*) AS n FROM {self.CHUNKS} WHERE {where}", args)

    def file_chunks(self, store_id: str, file_id: str) -> list[StoredChunk]:
        rows = self._select(
            f"SELECT {CHUNK_COLUMNS} FROM {self.CHUNKS} "
            "WHERE store_id = ? AND file_id = ? ORDER BY seq",
            (store_id, file_id),
        )
        return [StoredChunk(**r) for r in rows]

    # -- batches ------------------------------------------------------------------------

    def add_batch(self, batch_id: str, store_id: str) -> int:
        created = int(time.time())
        self._write(
            (
                f"INSERT INTO {self.BATCHES} (id, store_id, created_at) VALUES (?, ?, ?)",
                (batch_id, store_id, created),
            )
        )
        return created

    def batch(self, store_id: str, batch_id: str) -> dict[str, Any] | None:
        return self._first(
            f"SELECT id, store_id, created_at, cancelled FROM {self.BATCHES} "
            "WHERE id = ? AND store_id = ?",
            (batch_id, store_id),
        )

    def cancel_batch(self, store_id: str, batch_id: str) -> None:
        self._write(
            (f"UPDATE {self.BATCHES} SET cancelled = 1 WHERE id = ?", (batch_id,)),
            (
                f"UPDATE {self.VS_FILES} SET status = 'cancelled' WHERE store_id = ? "
                "AND batch_id = ? AND status = 'in_progress'",
                (store_id, batch_id),
            ),
        )


def _and(where: str, args: list[Any], **equal: Any) -> tuple[str, list[Any]]:
    """`where` and `column = ?` for each of `equal` that is not None."""
    for column, value in equal.items():
        if value is not None:
            where += f" AND {column} = ?"
            args.append(value)
    return where, args


def _store_values(store: dict[str, Any]) -> tuple[Any, ...]:
    """A new vector store's row, in `STORE_COLUMNS` order."""
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
