"""Stored responses in PostgreSQL (`database_url`), for replicas on several machines: the same
interface and bounds as the SQLite `ResponseStore`, one connection guarded by a lock (every
call is short and meant for `asyncio.to_thread`), reconnected after a failure."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from ...core.plan import Turn
from .store import StoredRows, stored_row

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gpt4all_api_responses (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    turns TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gpt4all_api_responses_created
    ON gpt4all_api_responses (created_at);
"""
_COLUMNS = {"response", "input_items", "turns"}


class PostgresResponseStore(StoredRows):
    def __init__(self, url: str, *, max_count: int, max_age: float):
        self.url = url
        self.max_count = max_count
        self.max_age = max_age
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            self._db().execute(_SCHEMA)

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    def put(
        self,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        turns: tuple[Turn, ...],
    ) -> None:
        if self.max_count <= 0:
            return
        row = stored_row(response, input_items, turns)
        with self._lock, self._db().transaction():
            db = self._db()
            db.execute(
                "INSERT INTO gpt4all_api_responses VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) "
                "DO UPDATE SET created_at = excluded.created_at, response = excluded.response, "
                "input_items = excluded.input_items, turns = excluded.turns",
                row,
            )
            if self.max_age > 0:
                db.execute(
                    "DELETE FROM gpt4all_api_responses WHERE created_at < %s",
                    (time.time() - self.max_age,),
                )
            db.execute(
                "DELETE FROM gpt4all_api_responses WHERE id NOT IN (SELECT id FROM "
                "gpt4all_api_responses ORDER BY created_at DESC LIMIT %s)",
                (self.max_count,),
            )

    def _row(self, response_id: str, column: str) -> str | None:
        assert column in _COLUMNS
        with self._lock:
            row = (
                self._db()
                .execute(
                    f"SELECT {column} FROM gpt4all_api_responses WHERE id = %s "
                    "AND (%s <= 0 OR created_at >= %s)",
                    (response_id, self.max_age, time.time() - self.max_age),
                )
                .fetchone()
            )
        return row[0] if row else None

    def delete(self, response_id: str) -> bool:
        with self._lock:
            cur = self._db().execute(
                "DELETE FROM gpt4all_api_responses WHERE id = %s", (response_id,)
            )
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
