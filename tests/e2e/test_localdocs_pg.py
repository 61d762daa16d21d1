"""LocalDocs shared by two servers through PostgreSQL (`--database-url`), as replicas on two
machines share it: each server has its own data folder, and a file uploaded through one is
indexed, searched, read and deleted through the other. After a restart of both, a file left
in progress is indexed by one of them only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from conftest import ServerProcess, free_port
from fixtures.postgres import BIN, PostgresServer

pytestmark = pytest.mark.e2e
psycopg = pytest.importorskip("psycopg")

FACT = b"# Vault\n\nThe code word for the vault is PERIWINKLE-42. Keep it secret.\n"
OTHER = b"# Tea\n\nGreen tea is brewed at 80 degrees for two minutes.\n"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if not (BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not in {BIN}")
    pg = PostgresServer.start(free_port())
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[list[ServerProcess]]:
    made = []
    for name in ("a", "b"):
        home = tmp_path_factory.mktemp(f"replica-{name}")
        (home / "models").mkdir()
        made.append(
            ServerProcess(
                models_dir=home / "models",
                log_path=home / "server.log",
                args=["--catalog-url", "", "--database-url", postgres.url],
                env={"GPT4ALL_API_THREADS": "1"},
            )
        )
    _start_together(made)
    yield made
    for s in made:
        s.stop()


def _start_together(servers: list[ServerProcess]) -> None:
    threads = [threading.Thread(target=s.start) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in servers:
        assert s.proc is not None and s.proc.poll() is None, s.log()


def _client(s: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.base_url + "/v1", api_key="x", max_retries=0, timeout=300)


def test_a_file_uploaded_through_one_server_is_seen_by_the_other(
    servers: list[ServerProcess],
) -> None:
    with _client(servers[0]) as a, _client(servers[1]) as b:
        vs = a.vector_stores.create(name="shared")
        f = a.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("vault.md", FACT), poll_interval_ms=200
        )
        assert f.status == "completed"
        assert b.vector_stores.retrieve(vs.id).file_counts.completed == 1
        assert b.files.retrieve(f.id).filename == "vault.md"
        assert b.files.content(f.id).read() == FACT
        hits = b.vector_stores.search(vector_store_id=vs.id, query="code word for the vault")
        assert hits.data and hits.data[0].file_id == f.id
        # the other way round: uploaded through b, indexed by b, searched through a
        g = b.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("tea.md", OTHER), poll_interval_ms=200
        )
        assert g.status == "completed"
        hits = a.vector_stores.search(vector_store_id=vs.id, query="green tea degrees")
        assert hits.data and hits.data[0].file_id == g.id
        assert [c.name for c in a.vector_stores.list().data].count("shared") == 1
        a.files.delete(f.id)
        hits = b.vector_stores.search(vector_store_id=vs.id, query="code word for the vault")
        assert f.id not in {h.file_id for h in hits.data}
        with pytest.raises(openai.NotFoundError):
            b.files.retrieve(f.id)


def test_after_a_restart_a_pending_file_is_indexed_once(
    servers: list[ServerProcess], postgres: PostgresServer
) -> None:
    from gpt4all_api.localdocs.index_pg import PostgresIndex

    with _client(servers[0]) as a:
        vs = a.vector_stores.create(name="restart")
        f = a.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("vault.md", FACT), poll_interval_ms=200
        )
        assert f.status == "completed"
    for s in servers:
        s.stop()
    index = PostgresIndex(postgres.url)
    try:
        index.attach(vs.id, f.id, {})  # as a crash mid-indexing leaves it: in progress
        assert (vs.id, f.id) in index.pending()
    finally:
        index.close()
    before = [len(s.log_path.read_text(errors="replace")) for s in servers]
    _start_together(servers)  # both resume: both queue the file
    with _client(servers[1]) as b:
        done = b.vector_stores.files.poll(f.id, vector_store_id=vs.id, poll_interval_ms=200)
        assert done.status == "completed"
        hits = b.vector_stores.search(vector_store_id=vs.id, query="code word for the vault")
        assert hits.data and hits.data[0].file_id == f.id
    logs = [
        Path(s.log_path).read_text(errors="replace")[n:]
        for s, n in zip(servers, before, strict=True)
    ]
    assert sum(log.count(f"indexed {f.id} into {vs.id}") for log in logs) == 1, logs
