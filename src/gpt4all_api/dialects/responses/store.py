"""Stored responses (`store: true`), in an embedded SQLite database in the server's data folder,
so that `previous_response_id` works across restarts. Bounded by count and by age.

Each row keeps the response object as returned, its input items (for `input_items`), and the
whole conversation up to and including its output, as neutral turns, for the next request that
continues it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...core.plan import ToolCall, Turn

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    turns TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""


def turns_to_json(turns: tuple[Turn, ...]) -> str:
    return json.dumps([asdict(t) for t in turns], ensure_ascii=False)


def turns_from_json(text: str) -> tuple[Turn, ...]:
    out = []
    for t in json.loads(text):
        calls = tuple(ToolCall(**c) for c in t.pop("tool_calls", ()))
        out.append(Turn(**t, tool_calls=calls))
    return tuple(out)


def stored_row(
    response: dict[str, Any], input_items: list[dict[str, Any]], turns: tuple[Turn, ...]
) -> tuple[str, float, str, str, str]:
    """A response as a store keeps it: id, creation time, then its parts as JSON text."""
    return (
        response["id"],
        time.time(),
        json.dumps(response, ensure_ascii=False),
        json.dumps(input_items, ensure_ascii=False),
        turns_to_json(turns),
    )


class StoredRows:
    """What a stored response is read as, from a store's `_row(id, column)` (JSON text)."""

    def _row(self, response_id: str, column: str) -> str | None:
        raise NotImplementedError

    def get(self, response_id: str) -> dict[str, Any] | None:
        text = self._row(response_id, "response")
        return json.loads(text) if text is not None else None

    def input_items(self, response_id: str) -> list[dict[str, Any]] | None:
        text = self._row(response_id, "input_items")
        return json.loads(text) if text is not None else None

    def turns(self, response_id: str) -> tuple[Turn, ...] | None:
        text = self._row(response_id, "turns")
        return turns_from_json(text) if text is not None else None


class ResponseStore(StoredRows):
    """Thread-safe; every call is short and meant for `asyncio.to_thread`."""

    def __init__(self, path: Path, *, max_count: int, max_age: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_count = max_count
        self.max_age = max_age
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def put(
        self,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        turns: tuple[Turn, ...],
    ) -> None:
        if self.max_count <= 0:
            return
        row = stored_row(response, input_items, turns)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)
                self._prune()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _prune(self) -> None:
        if self.max_age > 0:
            self._db.execute(
                "DELETE FROM responses WHERE created_at < ?", (time.time() - self.max_age,)
            )
        self._db.execute(
            "DELETE FROM responses WHERE id NOT IN "
            "(SELECT id FROM responses ORDER BY created_at DESC LIMIT ?)",
            (self.max_count,),
        )

    def _row(self, response_id: str, column: str) -> str | None:
        with self._lock:
            cur = self._db.execute(
                f"SELECT {column} FROM responses WHERE id = ? AND (? <= 0 OR created_at >= ?)",
                (response_id, self.max_age, time.time() - self.max_age),
            )
            row = cur.fetchone()
        return row[0] if row else None

    def delete(self, response_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
