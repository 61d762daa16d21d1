"""API keys, CORS and the bind address, against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e


KEYS = ("first-key", "second-key")
ORIGIN = "http://playground.example"
EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3}


@pytest.fixture(scope="module")
def keyed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with two API keys (one flag each) and one CORS origin."""
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=tmp_path_factory.mktemp("keyed") / "server.log",
        args=["--api-key", KEYS[0], "--api-key", KEYS[1], "--cors-origins", ORIGIN],
    )
    srv.start()
    yield srv
    srv.stop()


def test_default_bind_is_loopback_only(server: ServerProcess) -> None:
    assert server.proc is not None
    listening = [
        c.laddr
        for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the server listens nowhere"
    assert all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_every_key_works_through_the_sdk(keyed: ServerProcess) -> None:
    for key in KEYS:
        with openai.OpenAI(base_url=keyed.base_url + "/v1", api_key=key, max_retries=0) as c:
            assert c.models.list().data
            r = c.chat.completions.create(model=EMBEDDED, **CHAT)
            assert r.choices[0].message.content is not None
            chunks = list(c.chat.completions.create(model=EMBEDDED, stream=True, **CHAT))
            assert chunks


def test_wrong_or_missing_key_is_401_with_the_error_body(keyed: ServerProcess) -> None:
    c = openai.OpenAI(base_url=keyed.base_url + "/v1", api_key="wrong", max_retries=0)
    with c, pytest.raises(openai.AuthenticationError) as e:
        c.models.list()
    assert e.value.status_code == 401
    body = e.value.response.json()["error"]
    assert body["type"] == "authentication_error"
    assert body["code"] == "invalid_api_key"
    assert body["request_id"] == e.value.response.headers["x-request-id"]

    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Token {KEYS[0]}"}):
        for method, path in (
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
            ("GET", "/v1/models"),
            ("GET", "/v1/stats"),
            ("GET", "/metrics"),
            ("POST", "/tokenize"),
        ):
            r = HTTP.request(method, keyed.base_url + path, json=CHAT, headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert set(r.json()["error"]) >= {"message", "type", "param", "code"}


def test_probes_and_the_page_need_no_key(keyed: ServerProcess) -> None:
    assert HTTP.get(keyed.base_url + "/health").status_code == 200
    assert HTTP.get(keyed.base_url + "/ready").status_code == 200
    page = HTTP.get(keyed.base_url + "/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    for name in ("app.js", "style.css"):
        assert HTTP.get(f"{keyed.base_url}/static/{name}").status_code != 401


def test_cors_for_the_configured_origin_only(keyed: ServerProcess) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    url = keyed.base_url + "/v1/chat/completions"
    r = HTTP.options(url, headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = HTTP.options(url, headers={**preflight, "Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers
    r = HTTP.post(url, json=CHAT, headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEYS[1]}"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default(server: ServerProcess) -> None:
    r = HTTP.options(
        server.base_url + "/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = HTTP.get(server.base_url + "/v1/models", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
