"""The app on a real local Ray cluster (2 engine replicas, 1 thread each) behind one Ray Serve
endpoint, with stored responses in a real PostgreSQL started here: every dialect, streamed or
not, errors in each dialect's shape, prefix affinity, a client that hangs up, a replica killed
mid-load, and the autoscaler adding a replica under load and removing it after. One Serve
application serves the whole module; the replica-killing and autoscaling tests run last."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from fixtures.postgres import PostgresServer
from gpt4all_api.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
psycopg = pytest.importorskip("psycopg")

log = logging.getLogger(__name__)

REPLICA = "x-gpt4all-api-replica"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: A stream that runs until the client or the replica goes: the end-of-turn tokens are banned.
ENDLESS = {"max_tokens": 1500, "stream": True, "logit_bias": {"0": -100, "2": -100}}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer.start(free_port())
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def cluster_settings(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Settings:
    home = tmp_path_factory.mktemp("ray-home")
    (home / "models").mkdir()
    return Settings(
        port=free_port(),
        models_dir=home / "models",
        data_dir=home / "data",
        threads=1,
        parallel=4,
        context_size=2048,
        catalog_url="",
        min_replicas=2,
        max_replicas=2,
        replica_cpus=0.5,
        database_url=postgres.url,
        request_timeout=120,
    )


@pytest.fixture(scope="module")
def cluster(cluster_settings: Settings) -> Iterator[str]:
    from gpt4all_api.cluster import launch

    settings = cluster_settings
    launch.connect(settings, num_cpus=2, log_to_driver=False)
    try:
        launch.deploy(settings)
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def http(cluster: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster, timeout=120) as c:
        yield c


CHAT = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_openai_chat_and_completions(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert r.headers[REPLICA].startswith("SERVE_REPLICA::")
    r = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    data = sse_data(r.text)
    assert data[-1] == "[DONE]" and json.loads(data[0])["object"] == "chat.completion.chunk"
    r = http.post("/v1/completions", json={"prompt": "Once upon", "max_tokens": 6, "stream": True})
    assert sse_data(r.text)[-1] == "[DONE]"
    assert http.get("/v1/models").json()["data"]


def test_openai_sdk_streams_through_ray(cluster: str) -> None:
    import openai

    with openai.OpenAI(base_url=cluster + "/v1", api_key="x", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model=MODEL, **CHAT, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_anthropic_and_ollama(http: httpx.Client) -> None:
    body = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_tokens": 8, **CHAT}
    r = http.post("/v1/messages", json=body)
    assert r.status_code == 200 and r.json()["type"] == "message", r.text
    r = http.post("/v1/messages", json={**body, "stream": True})
    assert "event: message_stop" in r.text
    ollama = {"model": MODEL, "messages": CHAT["messages"], "options": {"num_predict": 6}}
    r = http.post("/api/chat", json=ollama)
    assert r.status_code == 200, r.text
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert r.headers["content-type"].startswith("application/x-ndjson") and lines[-1]["done"]
    r = http.post(
        "/api/generate",
        json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}},
    )
    assert r.status_code == 200 and r.json()["done"]


def test_responses_chain_lands_on_its_replica_and_is_stored_in_postgres(
    http: httpx.Client, postgres: PostgresServer
) -> None:
    r = http.post(
        "/v1/responses", json={"model": MODEL, "input": "Say hi.", "max_output_tokens": 8}
    )
    assert r.status_code == 200, r.text
    first, replica = r.json()["id"], r.headers[REPLICA]
    for stream in (False, True):
        r = http.post(
            "/v1/responses",
            json={
                "model": MODEL,
                "input": "Again.",
                "max_output_tokens": 8,
                "previous_response_id": first,
                "stream": stream,
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers[REPLICA] == replica
    assert "event: response.created" in r.text and "response.incomplete" in r.text
    with psycopg.connect(postgres.url) as db:
        (n,) = db.execute("SELECT count(*) FROM gpt4all_api_responses").fetchone()
    assert n >= 3
    for _ in range(6):  # every replica reads it, whichever answers
        assert http.get(f"/v1/responses/{first}").json()["id"] == first


def test_conversations_stick_to_their_replica(http: httpx.Client) -> None:
    history = [{"role": "system", "content": "You are terse. " * 40}]
    seen = set()
    for turn in range(3):
        history.append({"role": "user", "content": f"Question {turn}?"})
        r = http.post("/v1/chat/completions", json={"messages": history, "max_tokens": 6})
        assert r.status_code == 200, r.text
        seen.add(r.headers[REPLICA])
        history.append(r.json()["choices"][0]["message"])
    assert len(seen) == 1
    body = {
        "model": MODEL,
        "max_tokens": 6,
        "metadata": {"user_id": "session-42"},
        "system": "Be brief. " * 40,
    }
    msgs: list[dict[str, str]] = []
    seen = set()
    for turn in range(3):
        msgs.append({"role": "user", "content": f"Point {turn}?"})
        r = http.post("/v1/messages", json={**body, "messages": msgs})
        seen.add(r.headers[REPLICA])
        msgs.append({"role": "assistant", "content": r.json()["content"][0]["text"] or "ok"})
    assert len(seen) == 1


def test_errors_keep_each_dialects_shape(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={"messages": "no"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.post("/v1/messages", json={"messages": "no"})
    assert r.status_code == 400 and r.json()["type"] == "error"
    r = http.post("/api/chat", content=b"{not json")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = http.get("/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = http.post("/v1/chat/completions", content=b"x" * (1024 * 1024 + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def _gauge(text: str, name: str) -> float:
    m = re.search(rf"^gpt4all_api_{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _metrics_of(http: httpx.Client, replica: str) -> str:
    """/metrics of one replica, asked for by name."""
    r = http.get("/metrics", headers={REPLICA: replica})
    assert r.headers[REPLICA] == replica
    return r.text


def test_metrics_show_engine_gauges(http: httpx.Client) -> None:
    text = http.get("/metrics").text
    for name in ("queue_depth", "running_sequences", "kv_cache_usage_ratio"):
        assert f"gpt4all_api_{name}" in text
    replicas = {http.get("/metrics").headers[REPLICA] for _ in range(20)}
    assert len(replicas) == 2  # requests without a prompt spread over both


def test_client_disconnect_frees_the_slot(cluster: str, http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Write about a ship."}], **ENDLESS}
    with (
        httpx.Client(base_url=cluster, timeout=120) as c,
        c.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        replica = r.headers[REPLICA]
        lines = r.iter_lines()  # not closed here: closing it would hang up
        for _ in range(4):
            next(lines)
        busy = _gauge(_metrics_of(http, replica), "running_sequences")
    assert busy >= 1  # still generating while the client was there
    deadline = time.monotonic() + 20
    while _gauge(_metrics_of(http, replica), "running_sequences") != 0:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.5)


def test_models_pull_reaches_every_node(cluster: str, tmp_path: Path, embedded_model: Path) -> None:
    from click.testing import CliRunner

    from fixtures.catalog_server import CatalogServer, fixture_files
    from gpt4all_api.cli import main

    upstream = CatalogServer(files=fixture_files(embedded_model), model=embedded_model).start()
    try:
        args = ["models", "--models-dir", str(tmp_path), "--catalog-url", upstream.catalog_url]
        result = CliRunner().invoke(main, [*args, "pull", "smol-test.gguf", "--ray"])
        assert result.exit_code == 0, result.output
        assert result.output.count("downloaded:") == len(ray.nodes()) == 1
        assert (tmp_path / "smol-test.gguf").stat().st_size == embedded_model.stat().st_size
        again = CliRunner().invoke(main, [*args, "pull", "smol-test.gguf", "--ray"])
        assert "already installed" in again.output
    finally:
        upstream.stop()


def _engine_replicas() -> int:
    app = serve.status().applications["gpt4all-api"]
    states = app.deployments["Engine"].replica_states
    return states.get("RUNNING", 0)


def test_zz_killed_replica_ends_its_streams_with_an_error_and_is_restarted(
    cluster: str, http: httpx.Client
) -> None:
    body = ENDLESS
    results: dict[int, tuple[str, str]] = {}
    started = threading.Barrier(5)
    killed: dict[str, str] = {}

    def run(i: int) -> None:
        msgs = [{"role": "user", "content": f"Story {i}: tell me about the sea, at length."}]
        with (
            httpx.Client(base_url=cluster, timeout=120) as c,
            c.stream("POST", "/v1/chat/completions", json={**body, "messages": msgs}) as r,
        ):
            lines = []
            for n, line in enumerate(r.iter_lines()):
                lines.append(line)
                if n == 2:
                    started.wait(60)
                if killed.get("name") not in (None, r.headers[REPLICA]):
                    break  # a survivor: nothing more to see
            results[i] = (r.headers[REPLICA], "\n".join(lines))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait(120)
    # the replicas serving those streams, as the ingress saw them (headers come first)
    time.sleep(0.5)
    victim = _victim(http)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    killed["name"] = victim
    for t in threads:
        t.join(120)
    assert len(results) == 4
    on_victim = [text for name, text in results.values() if name == victim]
    assert on_victim, "no stream was on the killed replica"
    for text in on_victim:
        data = sse_data(text)
        assert data[-1] == "[DONE]"
        assert json.loads(data[-2])["error"]["code"] == "service_unavailable"
    for _ in range(3):  # new requests go to the others meanwhile
        r = http.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.headers[REPLICA] != victim
    deadline = time.monotonic() + 180
    while _engine_replicas() < 2:
        assert time.monotonic() < deadline, "Ray did not restart the replica"
        time.sleep(1)
    names: set[str] = set()
    while len(names) < 2:  # the router takes the new replica in within seconds
        assert time.monotonic() < deadline, f"only {names} answer"
        names.add(http.get("/metrics").headers[REPLICA])
    assert victim not in names


def _victim(http: httpx.Client) -> str:
    names = [n for n in ray.util.list_named_actors(all_namespaces=True)]
    engines = [n["name"] for n in names if "#Engine#" in n["name"] and n["namespace"] == "serve"]
    busy = [e for e in engines if _gauge(_metrics_of(http, e), "running_sequences") > 0]
    assert busy, engines
    return busy[0]


def test_zzz_autoscaling_adds_a_replica_under_load_and_removes_it_after(
    cluster: str, cluster_settings: Settings, http: httpx.Client
) -> None:
    """Redeployed with 1 to 2 replicas and a target of 1 ongoing request each: three endless
    streams on the one replica make Ray add a second, which then takes the new requests; once
    the streams end, it goes."""
    from gpt4all_api.cluster import launch

    launch.deploy(
        cluster_settings.model_copy(
            update={
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 1,
                "upscale_delay": 1,
                "downscale_delay": 2,
            }
        )
    )
    deadline = time.monotonic() + 180
    while _engine_replicas() != 1 or http.post("/v1/chat/completions", json=CHAT).is_error:
        assert time.monotonic() < deadline, "the redeployed application did not come up"
        time.sleep(1)
    first = http.get("/metrics").headers[REPLICA]
    stop = threading.Event()

    def load(i: int) -> None:
        msgs = [{"role": "user", "content": f"Load {i}: tell me about rivers, at length."}]
        with httpx.Client(base_url=cluster, timeout=120) as c:
            while not stop.is_set():
                with c.stream(
                    "POST", "/v1/chat/completions", json={**ENDLESS, "messages": msgs}
                ) as r:
                    for _ in r.iter_lines():
                        if stop.is_set():
                            break

    workers = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(3)]
    for t in workers:
        t.start()
    try:
        started = time.monotonic()
        deadline = started + 240
        while _engine_replicas() < 2:
            assert time.monotonic() < deadline, "no replica was added under load"
            time.sleep(1)
        log.info("a replica was added after %.0f s of load", time.monotonic() - started)
        deadline = time.monotonic() + 60
        # the added replica serves requests: the least loaded, it gets those without a prompt
        while http.get("/metrics").headers[REPLICA] == first:
            assert time.monotonic() < deadline, f"only {first} answers"
            time.sleep(0.2)
    finally:
        stop.set()
        for t in workers:
            t.join(60)
    idle = time.monotonic()
    deadline = idle + 240
    while _engine_replicas() > 1:
        assert time.monotonic() < deadline, "the idle replica was not removed"
        time.sleep(2)
    log.info("the idle replica was removed after %.0f s", time.monotonic() - idle)
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
