"""The model library end to end: a real server, a local stand-in for gpt4all.io serving a real
GGUF and a models3.json catalog, downloads, deletes, several models, keep-alive, the CLI."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from conftest import ServerProcess, default_sigint
from fixtures.catalog_server import CatalogServer, digests, fixture_files

pytestmark = pytest.mark.e2e

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
FRAME_KEYS = {"status", "model", "completed", "total", "bytes_per_second"}
CATALOG_KEYS = {
    "id",
    "object",
    "name",
    "filename",
    "filesize",
    "ramrequired",
    "parameters",
    "quant",
    "type",
    "description",
    "installed",
    "downloading",
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("upstream")
    copy = d / "smol-test.gguf"
    shutil.copy(embedded_model, copy)
    srv = CatalogServer(files=fixture_files(copy), model=copy).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        srv = request.getfixturevalue("upstream")
        srv.rate, srv.drop_after, srv.drop_always = None, None, False


def start_server(
    home: Path, catalog_url: str, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    srv = ServerProcess(
        models_dir=models,
        log_path=home / "server.log",
        args=list(args),
        env={"GPT4ALL_API_CATALOG_URL": catalog_url, **(env or {})},
    )
    return srv.start()


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, upstream: CatalogServer) -> Iterator[Any]:
    srv = start_server(tmp_path_factory.mktemp("lib"), upstream.catalog_url, "--parallel", "2")
    yield srv
    srv.stop()


def pull(base: str, model: str, timeout: float = 120) -> list[Any]:
    """POST /v1/models/pull; every `data:` payload, parsed, and the final [DONE]."""
    frames: list[Any] = []
    with httpx.stream(
        "POST", base + "/v1/models/pull", json={"model": model}, timeout=timeout
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                payload = line[6:]
                frames.append(payload if payload == "[DONE]" else json.loads(payload))
    assert frames[-1] == "[DONE]"
    return frames[:-1]


def models_by_id(base: str) -> dict[str, Any]:
    return {m["id"]: m for m in httpx.get(base + "/v1/models").json()["data"]}


def fresh(srv: ServerProcess, filename: str) -> None:
    """Make sure `filename` is not on disk (nor half-downloaded)."""
    (srv.models_dir / filename).unlink(missing_ok=True)
    (srv.models_dir / f"incomplete-{filename}").unlink(missing_ok=True)


def chat(base: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return httpx.post(base + "/v1/chat/completions", json={**body, **extra}, timeout=120)


# -- catalog -----------------------------------------------------------------------------------


def test_catalog_follows_the_contract(lib: ServerProcess, upstream: CatalogServer) -> None:
    body = httpx.get(lib.base_url + "/v1/catalog").json()
    assert body["object"] == "list" and body["offline"] is False
    assert isinstance(body["fetched_at"], int)
    for item in body["data"]:
        assert set(item) == CATALOG_KEYS and item["object"] == "catalog_model"
    by_id = {m["id"]: m for m in body["data"]}
    # the fixture's broken and hostile entries were skipped, the good ones kept
    assert set(by_id) == {
        "smol-test.gguf",
        "smol-md5.gguf",
        "smol-corrupt.gguf",
        "smol-nosum.gguf",
        "remote-only.gguf",
    }
    smol = by_id["smol-test.gguf"]
    assert smol["name"] == "Smol Test" and smol["ramrequired"] == 1
    assert smol["filesize"] == upstream.model.stat().st_size
    assert smol["quant"] == "q4_1" and smol["parameters"] == "135 million"
    assert isinstance(smol["installed"], bool) and smol["downloading"] is False
    assert by_id["smol-nosum.gguf"]["filesize"] is None


# -- downloads ---------------------------------------------------------------------------------


def test_pull_streams_progress_then_the_model_works(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    fresh(lib, "smol-test.gguf")
    upstream.rate = 40_000_000
    frames = pull(lib.base_url, "Smol Test")  # by catalog name
    for f in frames:
        assert set(f) == FRAME_KEYS and f["model"] == "smol-test.gguf"
    statuses = [f["status"] for f in frames]
    assert statuses[0] == "starting" and statuses[-1] == "success"
    assert "downloading" in statuses and "verifying" in statuses
    done = [f["completed"] for f in frames if f["status"] == "downloading"]
    assert done == sorted(done) and len(done) >= 3
    size = upstream.model.stat().st_size
    assert frames[-1]["completed"] == frames[-1]["total"] == size
    assert any(f["bytes_per_second"] for f in frames if f["status"] == "downloading")
    assert digests(lib.models_dir / "smol-test.gguf") == digests(upstream.model)
    assert not (lib.models_dir / "incomplete-smol-test.gguf").exists()

    card = models_by_id(lib.base_url)["smol-test.gguf"]
    assert card["name"] == "Smol Test" and card["size"] == size
    assert httpx.get(lib.base_url + "/v1/models/Smol Test").json()["id"] == "smol-test.gguf"
    entry = {m["id"]: m for m in httpx.get(lib.base_url + "/v1/catalog").json()["data"]}
    assert entry["smol-test.gguf"]["installed"] is True

    # the model answers by its catalog name, and two models are loaded at once
    r = chat(lib.base_url, "Smol Test")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "smol-test.gguf"
    assert chat(lib.base_url, EMBEDDED).status_code == 200
    loaded = {k for k, v in models_by_id(lib.base_url).items() if v["loaded"]}
    assert {"smol-test.gguf", EMBEDDED} <= loaded

    # pulling what is installed is a quick success
    again = pull(lib.base_url, "smol-test.gguf")
    assert [f["status"] for f in again] == ["starting", "success"]


def test_catalog_defaults_apply_when_the_request_gives_none(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    if not (lib.models_dir / "smol-test.gguf").exists():
        pull(lib.base_url, "smol-test.gguf")
    template = upstream.catalog_json()[0]["promptTemplate"]
    plain = chat(lib.base_url, "Smol Test").json()
    assert plain["usage"]["prompt_template"] == template
    own = chat(
        lib.base_url,
        "Smol Test",
        messages=[{"role": "system", "content": "Hi"}, {"role": "user", "content": "Hi"}],
    ).json()
    # the catalog's (long) system prompt is used only when the request has no system message
    assert plain["usage"]["prompt_tokens"] > own["usage"]["prompt_tokens"] + 10
    mine = chat(lib.base_url, "Smol Test", prompt_template="### Q: %1\n### A:").json()
    assert mine["usage"]["prompt_template"] == "### Q: %1\n### A:"
    r = httpx.post(
        lib.base_url + "/v1/completions",
        json={"model": "smol-test.gguf", "prompt": "Hello", "max_tokens": 2},
        timeout=60,
    ).json()
    assert r["usage"]["prompt_template"] == template
    # a model without a catalog entry keeps the server's defaults
    r = httpx.post(
        lib.base_url + "/v1/completions",
        json={"model": EMBEDDED, "prompt": "Hello", "max_tokens": 2},
        timeout=60,
    ).json()
    assert r["usage"]["prompt_template"] == "%1"


def test_resume_after_the_connection_drops_midway(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    fresh(lib, "smol-md5.gguf")
    before = len(upstream.file_requests("smol-md5.gguf"))
    upstream.drop_after = 30_000_000
    frames = pull(lib.base_url, "smol-md5.gguf")
    assert frames[-1]["status"] == "success", frames[-1]
    ranges = [r.range for r in upstream.file_requests("smol-md5.gguf")[before:]]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] is not None and 0 < int(ranges[1][6:-1]) <= 30_000_000
    assert digests(lib.models_dir / "smol-md5.gguf") == digests(upstream.model)
    assert "connection lost" in lib.log()


def test_checksum_mismatch_deletes_the_download(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    frames = pull(lib.base_url, "Smol Corrupt")
    last = frames[-1]
    assert last["status"] == "error" and last["model"] == "smol-corrupt.gguf"
    assert set(last["error"]) >= {"message", "type", "param", "code"}
    assert last["error"]["code"] == "checksum_mismatch"
    assert "expected sha256 0000" in last["error"]["message"]
    assert "deleted" in last["error"]["message"]
    assert not (lib.models_dir / "smol-corrupt.gguf").exists()
    assert not (lib.models_dir / "incomplete-smol-corrupt.gguf").exists()
    assert "smol-corrupt.gguf" not in models_by_id(lib.base_url)
    # retrieve-or-download reports the same failure as an error response
    r = httpx.get(lib.base_url + "/v1/models/smol-corrupt.gguf")
    assert r.status_code == 202
    deadline = time.monotonic() + 60
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
        r = httpx.get(lib.base_url + "/v1/models/smol-corrupt.gguf")
    assert r.status_code == 502 and r.json()["error"]["code"] == "checksum_mismatch"


def test_retrieve_starts_a_download_and_reports_progress(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    fresh(lib, "smol-nosum.gguf")
    upstream.rate = 30_000_000
    r = httpx.get(lib.base_url + "/v1/models/smol-nosum")
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["object"] == "model.download" and first["id"] == "smol-nosum.gguf"
    assert first["status"] in ("starting", "downloading")
    seen = [first]
    deadline = time.monotonic() + 90
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.3)
        r = httpx.get(lib.base_url + "/v1/models/smol-nosum")
        if r.status_code == 202:
            seen.append(r.json())
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "model" and r.json()["id"] == "smol-nosum.gguf"
    assert any(s["completed"] > 0 for s in seen)
    assert len(upstream.file_requests("smol-nosum.gguf")) == 1


def test_two_pulls_of_one_model_share_one_download(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    fresh(lib, "smol-md5.gguf")
    before = len(upstream.file_requests("smol-md5.gguf"))
    upstream.rate = 30_000_000
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: pull(lib.base_url, "smol-md5.gguf"), range(2)))
    for frames in runs:
        assert frames[-1]["status"] == "success"
    assert len(upstream.file_requests("smol-md5.gguf")) == before + 1


def test_delete(lib: ServerProcess, upstream: CatalogServer) -> None:
    if not (lib.models_dir / "smol-md5.gguf").exists():
        pull(lib.base_url, "smol-md5.gguf")
    r = httpx.delete(lib.base_url + "/v1/models/Smol MD5")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "smol-md5.gguf", "object": "model", "deleted": True}
    assert not (lib.models_dir / "smol-md5.gguf").exists()
    assert "smol-md5.gguf" not in models_by_id(lib.base_url)
    r = httpx.delete(lib.base_url + "/v1/models/smol-md5.gguf")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.delete(lib.base_url + "/v1/models/" + EMBEDDED)
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_protected"
    assert httpx.get(lib.base_url + "/v1/models/" + EMBEDDED).status_code == 200


def test_delete_refuses_a_model_in_use(lib: ServerProcess) -> None:
    if not (lib.models_dir / "smol-test.gguf").exists():
        pull(lib.base_url, "smol-test.gguf")
    body = {
        "model": "smol-test.gguf",
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 400,
        "stream": True,
    }
    with httpx.stream("POST", lib.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        d = httpx.delete(lib.base_url + "/v1/models/smol-test.gguf")
    assert d.status_code == 409 and d.json()["error"]["code"] == "model_in_use"
    assert (lib.models_dir / "smol-test.gguf").exists()


HOSTILE = [
    "..%2F..%2Fsecret.gguf",
    "%2E%2E",
    "%2E%2E%2Fsecret",
    "%2Fetc%2Fpasswd",
    "sub%2F..%2F..%2Fsecret.gguf",
    "..%5Csecret.gguf",
    "secret%00.gguf",
    ".hidden.gguf",
    "C:secret.gguf",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(lib: ServerProcess, name: str) -> None:
    secret = lib.models_dir.parent / "secret.gguf"
    shutil.copy(lib.models_dir.parent / "server.log", secret)
    for method in ("GET", "DELETE"):
        r = httpx.request(method, lib.base_url + "/v1/models/" + name)
        assert r.status_code in (400, 404), (method, name, r.status_code)
        assert r.json()["error"]["code"] in ("invalid_model", "not_found"), r.text
    plain = unquote(name)
    r = httpx.post(lib.base_url + "/v1/models/pull", json={"model": plain})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_model"
    r = chat(lib.base_url, plain)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model"
    assert secret.exists()


def test_pull_validation_errors_are_plain_json(lib: ServerProcess) -> None:
    r = httpx.post(lib.base_url + "/v1/models/pull", json={"model": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(lib.base_url + "/v1/models/pull", json={"url": "http://example.com/x.gguf"})
    assert r.status_code == 400
    r = httpx.get(lib.base_url + "/v1/models/no-such-model")
    assert r.status_code == 404 and "catalog" in r.json()["error"]["message"]


def test_chat_with_a_catalog_model_not_downloaded_says_how(lib: ServerProcess) -> None:
    r = chat(lib.base_url, "Remote Only")
    assert r.status_code == 404
    assert "models pull remote-only.gguf" in r.json()["error"]["message"]


# -- a server restart in the middle of a download ----------------------------------------------


@pytest.mark.slow
def test_resume_after_a_server_restart(tmp_path: Path, upstream: CatalogServer) -> None:
    upstream.rate = 8_000_000
    first = start_server(tmp_path, upstream.catalog_url)
    partial = first.models_dir / "incomplete-smol-test.gguf"
    try:
        assert httpx.get(first.base_url + "/v1/models/smol-test.gguf").status_code == 202
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size > 8_000_000:
                break
            time.sleep(0.1)
    finally:
        assert first.proc is not None
        first.proc.kill()  # a crash: no chance to clean up
        first.stop()
    kept = partial.stat().st_size
    assert 0 < kept < upstream.model.stat().st_size
    assert not (first.models_dir / "smol-test.gguf").exists()

    upstream.rate = None
    before = len(upstream.file_requests("smol-test.gguf"))
    second = start_server(tmp_path, upstream.catalog_url)
    try:
        assert "smol-test.gguf" not in models_by_id(second.base_url)
        frames = pull(second.base_url, "smol-test.gguf")
        assert frames[0]["status"] == "starting" and frames[0]["completed"] >= kept - (1 << 20)
        assert frames[-1]["status"] == "success"
    finally:
        second.stop()
    resumed = upstream.file_requests("smol-test.gguf")[before:]
    assert len(resumed) == 1 and resumed[0].range is not None
    assert int(resumed[0].range[6:-1]) > 0
    assert digests(second.models_dir / "smol-test.gguf") == digests(upstream.model)


# -- several models: LRU eviction, disk space ---------------------------------------------------


@pytest.fixture(scope="module")
def two_models(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, upstream: CatalogServer
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("lru")
    (home / "models").mkdir()
    shutil.copy(embedded_model, home / "models" / "a.gguf")
    shutil.copy(embedded_model, home / "models" / "b.gguf")
    srv = start_server(
        home,
        upstream.catalog_url,
        "--max-loaded-models",
        "1",
        "--parallel",
        "2",
        env={"GPT4ALL_API_DOWNLOAD_RESERVE": str(10**18)},
    )
    yield srv
    srv.stop()


def test_least_recently_used_model_is_unloaded(two_models: ServerProcess) -> None:
    base = two_models.base_url
    assert models_by_id(base)[EMBEDDED]["loaded"] is True
    assert chat(base, "a").status_code == 200
    loaded = {k for k, v in models_by_id(base).items() if v["loaded"]}
    assert loaded == {"a.gguf"}
    assert chat(base, "b").status_code == 200
    loaded = {k for k, v in models_by_id(base).items() if v["loaded"]}
    assert loaded == {"b.gguf"}
    assert list(httpx.get(base + "/v1/stats").json()["models"]) == ["b.gguf"]
    assert chat(base, "a").status_code == 200
    assert "unloading b.gguf to make room for a.gguf" in two_models.log()


def test_not_enough_disk_space(two_models: ServerProcess) -> None:
    r = httpx.get(two_models.base_url + "/v1/models/smol-test.gguf")
    assert r.status_code == 507
    assert r.json()["error"]["code"] == "insufficient_storage"
    assert "not enough disk space" in r.json()["error"]["message"]
    frames = pull(two_models.base_url, "smol-test.gguf")
    assert frames[-1]["status"] == "error"
    assert frames[-1]["error"]["code"] == "insufficient_storage"
    assert sorted(p.name for p in two_models.models_dir.iterdir() if "smol" in p.name) == []


@pytest.mark.slow
def test_memory_budget_unloads_to_make_room(
    tmp_path: Path, embedded_model: Path, upstream: CatalogServer
) -> None:
    (tmp_path / "models").mkdir()
    shutil.copy(embedded_model, tmp_path / "models" / "a.gguf")
    # each copy is estimated at 1.25 x 98 MB: two do not fit in 0.15 GiB, one does
    srv = start_server(tmp_path, upstream.catalog_url, "--memory-budget", "0.15")
    try:
        assert chat(srv.base_url, "a").status_code == 200
        loaded = {k for k, v in models_by_id(srv.base_url).items() if v["loaded"]}
        assert loaded == {"a.gguf"}
        assert "to make room for a.gguf (the memory budget)" in srv.log()
    finally:
        srv.stop()


# -- keep-alive, offline catalog ---------------------------------------------------------------


@pytest.fixture(scope="module")
def short_lived(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("keepalive")
    (home / "models").mkdir()
    shutil.copy(embedded_model, home / "models" / "a.gguf")
    dead = "http://127.0.0.1:9/models3.json"  # nothing listens there: offline
    srv = start_server(home, dead, "--keep-alive", "5", "--parallel", "2")
    yield srv
    srv.stop()


def wait_unloaded(base: str, model: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not models_by_id(base)[model]["loaded"]:
            return True
        time.sleep(0.25)
    return False


def test_idle_models_unload_after_keep_alive(short_lived: ServerProcess) -> None:
    base = short_lived.base_url
    assert chat(base, "a").status_code == 200
    assert models_by_id(base)["a.gguf"]["loaded"] is True
    assert wait_unloaded(base, "a.gguf")
    assert "idle for longer than its keep-alive" in short_lived.log()
    assert chat(base, "a").status_code == 200  # loads again on demand


@pytest.mark.slow
def test_keep_alive_per_request(short_lived: ServerProcess) -> None:
    base = short_lived.base_url
    assert chat(base, "a", keep_alive=-1).status_code == 200
    time.sleep(8)  # longer than the server's keep-alive
    assert models_by_id(base)["a.gguf"]["loaded"] is True
    assert chat(base, "a", keep_alive="0s").status_code == 200
    assert wait_unloaded(base, "a.gguf")
    r = chat(base, "a", keep_alive="soon")
    assert r.status_code == 400 and r.json()["error"]["param"] == "keep_alive"


@pytest.mark.slow
def test_an_ollama_request_naming_no_keep_alive_sets_the_default_again(
    short_lived: ServerProcess,
) -> None:
    """Ollama: each request sets its model's keep-alive, the default when it names none."""
    base = short_lived.base_url

    def generate(**extra: Any) -> httpx.Response:
        body = {"model": "a", "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
        return httpx.post(base + "/api/generate", json={**body, **extra}, timeout=120)

    def expires_in() -> float:
        (running,) = httpx.get(base + "/api/ps").json()["models"]
        expires = datetime.fromisoformat(running["expires_at"])
        return (expires - datetime.now(expires.tzinfo)).total_seconds()

    assert generate(keep_alive=-1).status_code == 200
    assert expires_in() > 50 * 365 * 86400  # forever
    assert generate().status_code == 200  # names none: the server's 5 s again
    assert 0 < expires_in() <= 5
    assert wait_unloaded(base, "a.gguf")


def test_offline_catalog_is_reported_not_an_error(short_lived: ServerProcess) -> None:
    r = httpx.get(short_lived.base_url + "/v1/catalog")
    assert r.status_code == 200
    assert r.json() == {"object": "list", "offline": True, "fetched_at": None, "data": []}


# -- the CLI -----------------------------------------------------------------------------------


def cli(models: Path, catalog_url: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "DEFAULT_MODEL")}
    cmd = [sys.executable, "-m", "gpt4all_api", "models", "--models-dir", str(models)]
    return subprocess.Popen(
        [*cmd, "--catalog-url", catalog_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def run_cli(models: Path, catalog_url: str, *args: str) -> tuple[int, str, str]:
    p = cli(models, catalog_url, *args)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


@pytest.mark.slow
def test_cli_pull_interrupted_then_resumed(tmp_path: Path, upstream: CatalogServer) -> None:
    models = tmp_path / "models"
    partial = models / "incomplete-smol-test.gguf"
    upstream.rate = 8_000_000
    p = cli(models, upstream.catalog_url, "pull", "Smol Test", preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        partial.exists() and partial.stat().st_size > 5_000_000
    ):
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, (out, err)
    assert "interrupted" in err and "run the same command to resume" in err
    kept = partial.stat().st_size
    assert 0 < kept < upstream.model.stat().st_size
    assert not (models / "smol-test.gguf").exists()

    upstream.rate = None
    code, out, err = run_cli(models, upstream.catalog_url, "pull", "Smol Test")
    assert code == 0, err
    assert "resuming smol-test.gguf from" in out and "smol-test.gguf is ready" in out
    assert upstream.file_requests("smol-test.gguf")[-1].range == f"bytes={kept}-"
    assert digests(models / "smol-test.gguf") == digests(upstream.model)

    code, out, _ = run_cli(models, upstream.catalog_url, "list")
    assert code == 0 and "smol-test.gguf" in out and "Smol Test" in out
    code, out, _ = run_cli(models, upstream.catalog_url, "show", "Smol Test")
    assert code == 0 and "sha256:" in out and str(models / "smol-test.gguf") in out
    code, out, _ = run_cli(models, upstream.catalog_url, "catalog")
    assert code == 0 and "Smol Corrupt" in out and "evil" not in out
    code, out, _ = run_cli(models, upstream.catalog_url, "rm", "-y", "smol-test")
    assert code == 0 and not (models / "smol-test.gguf").exists()


def test_cli_failures_are_clear(tmp_path: Path, upstream: CatalogServer) -> None:
    models = tmp_path / "models"
    code, _, err = run_cli(models, upstream.catalog_url, "pull", "Smol Corrupt")
    assert code == 1 and "checksum mismatch for smol-corrupt.gguf" in err and "deleted" in err
    assert not (models / "incomplete-smol-corrupt.gguf").exists()
    code, _, err = run_cli(models, upstream.catalog_url, "pull", "nothing-like-it")
    assert code == 1 and "not in the catalog" in err
    code, _, err = run_cli(models, upstream.catalog_url, "pull", "../../etc/passwd")
    assert code == 1 and "invalid model name" in err
    code, _, err = run_cli(models, upstream.catalog_url, "rm", "-y", EMBEDDED)
    assert code == 1 and "embedded" in err
    code, _, err = run_cli(models, "http://127.0.0.1:9/models3.json", "catalog")
    assert code == 0 and "offline" in err
