"""Request ids, API keys, CORS, body and prompt limits, metrics: in process, without a model.

The app is driven through httpx's ASGI transport without its lifespan, so no model is loaded:
these tests cover everything that happens before a request reaches the engine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gpt4all_api.app import create_app
from gpt4all_api.engine.request import Event, FinishEvent, TextEvent
from gpt4all_api.errors import InvalidRequest, RequestTimeout
from gpt4all_api.middleware import RequestTrace, check_body, key_matches
from gpt4all_api.settings import Settings


def make_settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(models_dir=tmp_path, **kw)


def call(settings: Settings, method: str, path: str, **kw: object) -> httpx.Response:
    async def go() -> httpx.Response:
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


# -- settings ------------------------------------------------------------------------------


def test_keys_and_origins_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("API_KEYS", "alpha, beta,,gamma")
    monkeypatch.setenv("GPT4ALL_API_CORS_ORIGINS", "http://a.example,http://b.example")
    s = make_settings(tmp_path)
    assert s.api_keys == ["alpha", "beta", "gamma"]
    assert s.cors_origins == ["http://a.example", "http://b.example"]


def test_repeated_flags_may_hold_commas(tmp_path: Path) -> None:
    s = make_settings(tmp_path, api_keys=["one", "two,three"])
    assert s.api_keys == ["one", "two", "three"]
    assert make_settings(tmp_path).api_keys == []
    assert make_settings(tmp_path).cors_origins == []


# -- keys ----------------------------------------------------------------------------------


def test_key_matches_any_key_and_nothing_else() -> None:
    keys = [b"first-key", b"second-key"]
    assert key_matches("first-key", keys)
    assert key_matches("second-key", keys)
    assert not key_matches("first-ke", keys)
    assert not key_matches("", keys)
    assert not key_matches("first-key ", keys)
    assert not key_matches("ключ", keys)


def test_missing_and_wrong_keys_get_401(tmp_path: Path) -> None:
    s = make_settings(tmp_path, api_keys=["sekret"])
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic sekret"}):
        r = call(s, "GET", "/v1/models", headers=headers)
        assert r.status_code == 401, headers
        err = r.json()["error"]
        assert err["type"] == "authentication_error"
        assert err["code"] == "invalid_api_key"
        assert err["request_id"] == r.headers["x-request-id"]
        assert r.headers["www-authenticate"] == "Bearer"
    r = call(s, "GET", "/v1/models", headers={"Authorization": "Bearer sekret"})
    assert r.status_code == 200
    r = call(s, "GET", "/v1/models", headers={"Authorization": "bearer sekret"})
    assert r.status_code == 200


def test_probes_and_the_page_stay_open(tmp_path: Path) -> None:
    s = make_settings(tmp_path, api_keys=["sekret"])
    # no lifespan here: the model is not loaded, so the probes answer 503, but not 401
    assert call(s, "GET", "/health").status_code == 503
    assert call(s, "GET", "/ready").status_code == 503
    assert call(s, "GET", "/metrics").status_code == 401
    assert call(s, "GET", "/v1/stats").status_code == 401
    assert call(s, "POST", "/health").status_code == 401


def test_without_keys_everything_is_open(tmp_path: Path) -> None:
    r = call(make_settings(tmp_path), "GET", "/v1/models")
    assert r.status_code == 200


# -- request ids ---------------------------------------------------------------------------


def test_request_id_is_honoured_when_sane(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    r = call(s, "GET", "/v1/models", headers={"X-Request-ID": "trace-42.a:b"})
    assert r.headers["x-request-id"] == "trace-42.a:b"
    r = call(s, "GET", "/v1/models", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"
    assert len(r.headers["x-request-id"]) == 32
    r = call(s, "GET", "/v1/models", headers={"X-Request-ID": "x" * 500})
    assert len(r.headers["x-request-id"]) == 32


def test_error_bodies_carry_the_request_id(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    r = call(s, "GET", "/no/such/route", headers={"X-Request-ID": "abc"})
    assert r.status_code == 404
    assert r.json()["error"]["request_id"] == "abc"
    r = call(
        s,
        "POST",
        "/v1/chat/completions",
        content=b"{not json",
        headers={"X-Request-ID": "def", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["request_id"] == "def"


# -- body and prompt limits ----------------------------------------------------------------


def test_body_over_the_limit_by_content_length(tmp_path: Path) -> None:
    s = make_settings(tmp_path, max_body_size=2048)
    body = json.dumps({"prompt": "a" * 4000}).encode()
    r = call(s, "POST", "/v1/completions", content=body)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_body_over_the_limit_while_streaming_in(tmp_path: Path) -> None:
    s = make_settings(tmp_path, max_body_size=2048)
    sent = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b"x" * 512

    r = call(s, "POST", "/v1/completions", content=chunks())
    assert r.status_code == 413
    assert "content-length" not in {k.lower() for k in r.request.headers}
    # refused once the limit was passed, not after reading all 100 chunks
    assert len(sent) < 100


def test_check_prompt_size() -> None:
    s = Settings(max_messages=3, max_prompt_chars=10, max_tokens_limit=50)
    chat = "/v1/chat/completions"

    def msgs(*contents: object) -> bytes:
        return json.dumps({"messages": [{"role": "user", "content": c} for c in contents]}).encode()

    check_body(chat, msgs("a", "b", "c"), s)
    with pytest.raises(InvalidRequest) as e:
        check_body(chat, msgs("a", "b", "c", "d"), s)
    assert e.value.param == "messages"
    with pytest.raises(InvalidRequest) as e:
        check_body(chat, msgs("12345", "123456"), s)
    assert e.value.param == "messages"
    with pytest.raises(InvalidRequest) as e:
        check_body(chat, msgs([{"type": "text", "text": "x" * 11}]), s)
    assert e.value.param == "messages"
    with pytest.raises(InvalidRequest) as e:
        check_body("/v1/completions", json.dumps({"prompt": ["12345", "123456"]}).encode(), s)
    assert e.value.param == "prompt"
    check_body("/v1/completions", json.dumps({"prompt": [[1, 2, 3] * 10]}).encode(), s)
    for name in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(InvalidRequest) as e:
            check_body(chat, json.dumps({"messages": [], name: 51}).encode(), s)
        assert e.value.param == name
        check_body(chat, json.dumps({"messages": [], name: 50}).encode(), s)
    # what is not a JSON object is left to the router's own validation
    for body in (b"{oops", b"[1, 2]", b"[" * 100_000, b'{"messages": 5}', b'{"max_tokens": "9"}'):
        check_body(chat, body, s)


def test_lone_surrogates_are_refused_anywhere() -> None:
    s = Settings()
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/v1/models/pull"):
        with pytest.raises(InvalidRequest) as e:
            check_body(path, b'{"model": "\\ud83d"}', s)
        assert e.value.code == "invalid_json"
        with pytest.raises(InvalidRequest):
            check_body(path, b'{"a": [{"b": "x\\udc00y"}]}', s)
    # a proper pair is an emoji, and an escaped backslash is no escape at all
    check_body("/v1/completions", b'{"prompt": "\\ud83d\\ude00 \\\\ud83d"}', s)


def test_prompt_limits_answer_400_naming_the_param(tmp_path: Path) -> None:
    s = make_settings(tmp_path, max_messages=5)
    body = {"messages": [{"role": "user", "content": "hi"}] * 6}
    r = call(s, "POST", "/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert r.json()["error"]["code"] == "too_many_messages"


# -- the request trace ---------------------------------------------------------------------


def test_trace_records_first_token_and_tokens() -> None:
    async def go() -> RequestTrace:
        trace = RequestTrace(started=asyncio.get_running_loop().time())
        q: asyncio.Queue[Event] = asyncio.Queue()
        for ev in (
            TextEvent(0, "a", 5),
            TextEvent(0, "b", 6),
            FinishEvent(0, "length", prompt_tokens=3, completion_tokens=2, cached_tokens=0),
        ):
            q.put_nowait(ev)
        for _ in range(3):
            await trace.next_event(q)
        return trace

    trace = asyncio.run(go())
    assert trace.first_token_at is not None
    assert trace.finished_at is not None
    assert trace.tokens_seen == 2
    assert (trace.prompt_tokens, trace.completion_tokens) == (3, 2)


def test_trace_deadline_raises_request_timeout() -> None:
    async def go() -> None:
        import time

        trace = RequestTrace(started=time.monotonic(), timeout=0.05)
        q: asyncio.Queue[Event] = asyncio.Queue()
        assert trace.arm(q) is not None
        q.put_nowait(TextEvent(0, "a", 5))
        # what came before the deadline is delivered, then the deadline ends the wait
        assert (await trace.next_event(q)).text == "a"
        await trace.next_event(q)

    with pytest.raises(RequestTimeout) as e:
        asyncio.run(go())
    assert e.value.status_code == 504


def test_a_trace_without_a_limit_sets_no_timer() -> None:
    async def go() -> None:
        trace = RequestTrace(started=asyncio.get_running_loop().time(), timeout=0)
        assert trace.arm(asyncio.Queue()) is None

    asyncio.run(go())


# -- CORS and metrics ----------------------------------------------------------------------


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    r = call(make_settings(tmp_path), "GET", "/v1/models", headers={"Origin": "http://x.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_configured_origins_only(tmp_path: Path) -> None:
    s = make_settings(tmp_path, cors_origins=["http://ok.example"], api_keys=["k"])
    pre = {
        "Origin": "http://ok.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    r = call(s, "OPTIONS", "/v1/chat/completions", headers=pre)
    assert r.status_code == 200  # preflight needs no key
    assert r.headers["access-control-allow-origin"] == "http://ok.example"
    r = call(s, "OPTIONS", "/v1/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    r = call(s, "GET", "/v1/models", headers={"Origin": "http://ok.example"})
    assert r.status_code == 401  # the browser may read the refusal
    assert r.headers["access-control-allow-origin"] == "http://ok.example"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


def test_metrics_count_requests_by_route_and_status(tmp_path: Path) -> None:
    async def go() -> str:
        app = create_app(make_settings(tmp_path, api_keys=["k"]))
        transport = httpx.ASGITransport(app=app)
        auth = {"Authorization": "Bearer k"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            await c.get("/v1/models", headers=auth)
            await c.get("/v1/models")
            await c.get("/v1/models/nope", headers=auth)
            await c.get("/nowhere/at/all", headers=auth)
            return (await c.get("/metrics", headers=auth)).text

    text = asyncio.run(go())
    assert 'gpt4all_api_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in text
    assert 'gpt4all_api_requests_total{method="GET",route="/v1/models",status="401"} 1.0' in text
    assert 'route="/v1/models/{model_id:path}",status="404"} 1.0' in text
    assert 'gpt4all_api_requests_total{method="GET",route="other",status="404"} 1.0' in text
    assert "gpt4all_api_loaded_models 0.0" in text


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    a = create_app(make_settings(tmp_path))
    b = create_app(make_settings(tmp_path))
    assert a.state.metrics.registry is not b.state.metrics.registry
    a.state.metrics.requests.labels("GET", "/x", "200").inc()
    assert b"/x" not in b.state.metrics.render()
