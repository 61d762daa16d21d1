"""The PostgreSQL response store, against a real PostgreSQL 15 started here: the same behaviour
as the SQLite one (bounds by count and age, turns kept whole), shared by two stores as two
replicas would share it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conftest import free_port
from fixtures.postgres import PostgresServer
from gpt4all_api.core.plan import ToolCall, Turn

psycopg = pytest.importorskip("psycopg")
from gpt4all_api.dialects.responses.store_pg import PostgresResponseStore  # noqa: E402


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    pg = PostgresServer.start(free_port())
    yield pg.url
    pg.stop()


@pytest.fixture()
def store(url: str) -> Iterator[PostgresResponseStore]:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS gpt4all_api_responses")
    s = PostgresResponseStore(url, max_count=3, max_age=0)
    yield s
    s.close()


def test_two_replicas_share_stored_responses(store: PostgresResponseStore, url: str) -> None:
    turns = (
        Turn(role="user", content="hi"),
        Turn(
            role="assistant", content="", tool_calls=(ToolCall(id="c1", name="f", arguments="{}"),)
        ),
    )
    store.put({"id": "resp_1", "object": "response"}, [{"type": "message"}], turns)
    other = PostgresResponseStore(url, max_count=3, max_age=0)
    try:
        assert other.get("resp_1") == {"id": "resp_1", "object": "response"}
        assert other.input_items("resp_1") == [{"type": "message"}]
        assert other.turns("resp_1") == turns
        assert other.delete("resp_1") and store.get("resp_1") is None
        assert not other.delete("resp_1")
    finally:
        other.close()


def test_bounds_by_count_and_age(store: PostgresResponseStore, url: str) -> None:
    for i in range(5):
        store.put({"id": f"resp_{i}"}, [], ())
    assert store.get("resp_0") is None and store.get("resp_1") is None
    assert store.get("resp_4") == {"id": "resp_4"}
    aging = PostgresResponseStore(url, max_count=10, max_age=0.5)
    try:
        aging.put({"id": "resp_old"}, [], ())
        time.sleep(0.7)
        assert aging.get("resp_old") is None
    finally:
        aging.close()
