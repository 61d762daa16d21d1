"""Surviving bad clients: hostile bodies, limits, time limits, clients that hang up, SIGTERM.

Every test talks to a real server process with the real model.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e


EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
NO_EOS = {"logit_bias": {"0": -100, "2": -100}}  # <|endoftext|>, <|im_end|>: run to max_tokens
HI = [{"role": "user", "content": "hi"}]


def own_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory, name: str, *args: str
) -> ServerProcess:
    """A server of this module's own. One llama.cpp thread: on a CPU shared with other work,
    llama.cpp's threads waiting on each other can slow decoding down many times over."""
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=tmp_path_factory.mktemp(name) / "server.log",
        args=["--threads", "1", *args],
    )
    return srv.start()


def assert_error(r: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """A 4xx (or the given status) with OpenAI's error body; returns the error."""
    if status is None:
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    else:
        assert r.status_code == status, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def wait_idle(base: str, timeout: float = 60.0) -> dict[str, Any]:
    """Engine stats of the default model once no slot is busy and nothing waits."""
    deadline = time.monotonic() + timeout
    while True:
        stats = HTTP.get(base + "/v1/stats").json()["models"][EMBEDDED]
        if (stats["busy_slots"], stats["waiting"]) == (0, 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


# -- hostile bodies ------------------------------------------------------------------------


def _chat(**fields: Any) -> bytes:
    return json.dumps({"messages": HI, "max_tokens": 1, **fields}).encode()


RAW_BODIES: dict[str, bytes] = {
    "malformed": b'{"messages": [',
    "trailing garbage": b'{"messages": []} and more',
    "empty": b"",
    "null": b"null",
    "a list": b"[]",
    "a string": b'"hello"',
    "a number": b"42",
    "invalid utf-8": b'{"messages":[{"role":"user","content":"\xff\xfe\xfd"}]}',
    "raw NUL byte": b'{"messages":[{"role":"user","content":"a\x00b"}]}',
    "lone surrogate in model": b'{"messages":[{"role":"user","content":"hi"}],"model":"\\ud83d"}',
    "lone surrogate in template": _chat()[:-1] + b',"prompt_template":"\\udc00 %1"}',
    "deeply nested arrays": b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deeply nested objects": b'{"messages":[{"role":"user","content":"hi","name":'
    + b'{"a":' * 50_000
    + b"1"
    + b"}" * 50_000
    + b"}]}",
    "huge string over the body limit": json.dumps(
        {"messages": [{"role": "user", "content": "a" * (2 * 1024 * 1024)}]}
    ).encode(),
    "huge string under the body limit": json.dumps(
        {"messages": [{"role": "user", "content": "a" * 900_000}]}
    ).encode(),
    "longer than the context": json.dumps(
        {"messages": [{"role": "user", "content": "word " * 30_000}]}
    ).encode(),
    "10,000 messages": json.dumps(
        {"messages": [{"role": "user", "content": "hi"}] * 10_000, "max_tokens": 1}
    ).encode(),
    "emoji model": _chat(model="😀🔥"),
    "emoji role": json.dumps({"messages": [{"role": "🤖", "content": "hi"}]}).encode(),
    "emoji field": _chat(**{"🦄": 1}),
}

WRONG_TYPES: list[tuple[str, Any]] = [
    ("messages", "hi"),
    ("messages", 5),
    ("messages", {}),
    ("messages", []),
    ("messages", [1]),
    ("messages", [[]]),
    ("messages", [None]),
    ("messages", [{"role": 5, "content": "x"}]),
    ("messages", [{"role": "user", "content": 5}]),
    ("messages", [{"role": "user", "content": [5]}]),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": 5}]}]),
    ("messages", [{"role": "user", "content": "x", "name": []}]),
    ("model", 5),
    ("model", []),
    ("temperature", "hot"),
    ("temperature", []),
    ("temperature", 99),
    ("top_p", {}),
    ("top_p", -1),
    ("max_tokens", "many"),
    ("max_tokens", -1),
    ("max_tokens", 1.5),
    ("max_tokens", 10**30),
    ("max_completion_tokens", "x"),
    ("n", "x"),
    ("n", 0),
    ("stream", "sometimes"),
    ("stream", []),
    ("stop", 5),
    ("stop", [1, 2]),
    ("stop", {}),
    ("logit_bias", []),
    ("logit_bias", {"x": "y"}),
    ("logit_bias", {"5": 1000}),
    ("logit_bias", {"99999999": 1}),
    ("seed", "s"),
    ("seed", 1.5),
    ("presence_penalty", "p"),
    ("frequency_penalty", 5),
    ("user", 5),
    ("stream_options", "x"),
    ("stream_options", {"include_usage": "maybe"}),
    ("top_k", "k"),
    ("min_p", []),
    ("repeat_penalty", 0),
    ("prompt_template", 5),
    ("prompt_batch_size", 0),
    ("reload", "x"),
    ("thread_count", "x"),
    ("response_format", "json"),
    ("tools", "x"),
    ("metadata", []),
]

WRONG_COMPLETION_TYPES: list[tuple[str, Any]] = [
    ("prompt", 5),
    ("prompt", {}),
    ("prompt", [{}]),
    ("prompt", [[-1]]),
    ("prompt", [[10**12]]),
    ("prompt", [[1.5]]),
    ("echo", "x"),
    ("suffix", 5),
    ("best_of", "x"),
    ("logprobs", "x"),
    ("max_tokens", "x"),
]


def _log_tracebacks(server: ServerProcess) -> int:
    return server.log_path.read_text(errors="replace").count("Traceback")


def test_hostile_bodies_get_4xx_and_the_server_stays_up(server: ServerProcess) -> None:
    base = server.base_url
    tracebacks = _log_tracebacks(server)
    json_headers = {"Content-Type": "application/json"}
    seen: dict[str, int] = {}
    for name, body in RAW_BODIES.items():
        r = HTTP.post(base + "/v1/chat/completions", content=body, headers=json_headers)
        assert_error(r)
        seen[name] = r.status_code
    assert seen["huge string over the body limit"] == 413
    for name in ("huge string under the body limit", "10,000 messages"):
        r = HTTP.post(base + "/v1/chat/completions", content=RAW_BODIES[name], headers=json_headers)
        assert assert_error(r, 400)["param"] == "messages", name
    r = HTTP.post(
        base + "/v1/chat/completions",
        content=RAW_BODIES["longer than the context"],
        headers=json_headers,
    )
    assert assert_error(r, 400)["code"] == "context_length_exceeded"
    assert seen["emoji model"] == 404

    for field, bad in WRONG_TYPES:
        r = HTTP.post(
            base + "/v1/chat/completions", content=_chat(**{field: bad}), headers=json_headers
        )
        err = assert_error(r)
        assert r.status_code == 400, (field, bad, r.text[:300])
        if err["param"] is not None:
            assert err["param"].split("[")[0].split(".")[0] == field, (field, bad, err)
    for field, bad in WRONG_COMPLETION_TYPES:
        body = {"prompt": "hi", "max_tokens": 1, field: bad}
        assert_error(HTTP.post(base + "/v1/completions", json=body), 400)
    for body in (b"{", b"[]", b'{"content": 5}', b'{"content": "\\ud800"}', b'{"tokens": ["a"]}'):
        assert_error(HTTP.post(base + "/tokenize", content=body, headers=json_headers))
    assert_error(HTTP.post(base + "/detokenize", json={"tokens": [-5, 10**15]}))

    # fine, if odd: emoji and escaped NUL characters are text like any other
    for content in ("😀" * 200, "a\u0000b", "\U0001f9d1\u200d\U0001f4bb"):
        r = HTTP.post(
            base + "/v1/chat/completions",
            content=_chat(messages=[{"role": "user", "content": content}]),
            headers=json_headers,
        )
        assert r.status_code == 200, r.text[:300]

    assert HTTP.get(base + "/health").status_code == 200
    assert server.proc is not None and server.proc.poll() is None
    assert _log_tracebacks(server) == tracebacks, server.log()
    r = HTTP.post(base + "/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert r.status_code == 200


# -- limits --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv = own_server(
        models_dir,
        tmp_path_factory,
        "limited",
        *("--parallel", "1", "--max-queue", "1", "--max-tokens-limit", "200"),
        *("--max-messages", "20", "--max-prompt-chars", "4000", "--max-body-size", "65536"),
    )
    yield srv.base_url
    srv.stop()


def test_max_tokens_ceiling(limited: str) -> None:
    for path, body in (
        ("/v1/chat/completions", {"messages": HI, "max_tokens": 201}),
        ("/v1/chat/completions", {"messages": HI, "max_completion_tokens": 201}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 201}),
    ):
        err = assert_error(HTTP.post(limited + path, json=body), 400)
        assert err["param"] == next(k for k in body if k.startswith("max_"))
        assert "200" in err["message"]
    # asking nothing: the ceiling caps the default (the rest of the context)
    r = HTTP.post(limited + "/v1/chat/completions", json={"messages": HI, **NO_EOS})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 200


def test_message_and_character_limits(limited: str) -> None:
    url = limited + "/v1/chat/completions"
    err = assert_error(HTTP.post(url, json={"messages": HI * 21}), 400)
    assert err["param"] == "messages" and "20" in err["message"]
    assert HTTP.post(url, json={"messages": HI * 20, "max_tokens": 1}).status_code == 200
    many = [{"role": "user", "content": "x" * 2001}] * 2
    assert assert_error(HTTP.post(url, json={"messages": many}), 400)["param"] == "messages"
    long_prompt = {"prompt": ["y" * 2000, "z" * 2001]}
    r = HTTP.post(limited + "/v1/completions", json=long_prompt)
    assert assert_error(r, 400)["param"] == "prompt"


def test_body_limit(limited: str) -> None:
    url = limited + "/v1/chat/completions"
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 70_000}]})
    assert_error(HTTP.post(url, content=big), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 4096
        yield b'"}]}'

    assert_error(HTTP.post(url, content=chunks()), 413)  # chunked: no Content-Length


def test_content_length_is_checked_before_the_body_is_read(limited: str) -> None:
    host, port = limited.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        )
        # no body at all: the answer comes from the header alone
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data[:300]
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_full_queue_is_503_with_retry_after(limited: str) -> None:
    url = limited + "/v1/chat/completions"
    long = {"messages": HI, "max_tokens": 200, "stream": True, **NO_EOS}
    with HTTP.stream("POST", url, json=long) as running:
        lines = running.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        with HTTP.stream("POST", url, json=long) as waiting:
            assert waiting.status_code == 200
            deadline = time.monotonic() + 30
            while HTTP.get(limited + "/v1/stats").json()["models"][EMBEDDED]["waiting"] < 1:
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.02)
            r = HTTP.post(url, json={"messages": HI, "max_tokens": 1})
            err = assert_error(r, 503)
            assert err["code"] == "server_overloaded"
            assert r.headers["retry-after"] == "1"
            ready = HTTP.get(limited + "/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "overloaded"
    stats = wait_idle(limited)
    assert (stats["busy_slots"], stats["waiting"]) == (0, 0)
    assert HTTP.get(limited + "/ready").status_code == 200


# -- the per-request time limit ------------------------------------------------------------


@pytest.fixture(scope="module")
def timed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv = own_server(models_dir, tmp_path_factory, "timed", "--request-timeout", "1.5")
    yield srv.base_url
    srv.stop()


def test_time_limit_non_stream_is_504_and_frees_the_slot(timed: str) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 1800, **NO_EOS}
    t0 = time.monotonic()
    r = HTTP.post(timed + "/v1/completions", json=body, headers={"X-Request-ID": "slow-1"})
    took = time.monotonic() - t0
    err = assert_error(r, 504)
    assert err["code"] == "request_timeout"
    assert err["request_id"] == "slow-1"
    assert "1.5 seconds" in err["message"]
    assert 1.4 < took < 60
    stats = wait_idle(timed, timeout=10)
    assert (stats["busy_slots"], stats["waiting"]) == (0, 0)


def test_time_limit_stream_ends_with_an_error_chunk(timed: str) -> None:
    body = {"messages": HI, "max_tokens": 1800, "stream": True, **NO_EOS}
    with HTTP.stream("POST", timed + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    assert json.loads(frames[-2])["error"]["code"] == "request_timeout"
    assert any("choices" in json.loads(f) for f in frames[:-2])
    stats = wait_idle(timed, timeout=10)
    assert (stats["busy_slots"], stats["waiting"]) == (0, 0)


# -- clients that hang up ------------------------------------------------------------------


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def _stream_storm(base: str, count: int, seed: int, concurrency: int = 8) -> list[str]:
    """`count` streaming chats, a random half of which hang up after their second chunk."""
    rng = random.Random(seed)
    drops = [True] * (count // 2) + [False] * (count - count // 2)
    rng.shuffle(drops)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency * 2)

    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(i: int, drop: bool) -> str:
            body = {
                "messages": [{"role": "user", "content": "Tell me about the number seven."}],
                "max_tokens": 16,
                "stream": True,
                **NO_EOS,
            }
            async with gate, client.stream("POST", base + "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    return f"status {r.status_code}"
                chunks = 0
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        return "finished"
                    if line.startswith("data: {"):
                        chunks += 1
                        if drop and chunks == 2:
                            return "dropped"  # leaving the block closes the connection
                return "cut short"

        return await asyncio.gather(*(one(i, d) for i, d in enumerate(drops)))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a minute or two on 2 free cores; more when the CPU is shared
def test_clients_hanging_up_mid_stream_leak_nothing(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = own_server(models_dir, tmp_path_factory, "storm")
    try:
        _storm(server)
    finally:
        server.stop()


def _storm(server: ServerProcess) -> None:
    assert server.proc is not None
    base = server.base_url
    pid = server.proc.pid
    warm = asyncio.run(_stream_storm(base, 16, seed=1))
    assert set(warm) <= {"finished", "dropped"}, warm
    warm_kept = wait_idle(base)["prompt_cache_bytes"]
    time.sleep(1)
    baseline = _rss(pid)

    t0 = time.monotonic()
    results = asyncio.run(_stream_storm(base, 200, seed=2))
    took = time.monotonic() - t0
    assert results.count("dropped") == 100, results
    assert results.count("finished") == 100, results

    stats = wait_idle(base)
    assert stats["busy_slots"] == 0, stats
    assert stats["waiting"] == 0, stats
    time.sleep(1)
    after = _rss(pid)
    # The prompt cache keeps the KV of conversations whose sequence went to another request, up
    # to its budget (--prompt-cache-mb), in mappings of its own: that much more is by design;
    # nothing else may stay.
    kept = wait_idle(base)["prompt_cache_bytes"] - warm_kept
    print(
        f"200 streams in {took:.1f}s; RSS {baseline / 2**20:.1f} -> {after / 2**20:.1f} MiB, "
        f"{kept / 2**20:.1f} MiB more in the prompt cache"
    )
    assert 0 <= stats["prompt_cache_bytes"] <= 1024 << 20
    assert after - kept <= baseline * 1.10, (baseline, after, kept)
    assert HTTP.get(base + "/health").status_code == 200


# -- graceful shutdown ---------------------------------------------------------------------


def _stream_in_thread(url: str, body: dict[str, Any]) -> tuple[threading.Thread, list[str]]:
    lines: list[str] = []

    def run() -> None:
        try:
            with httpx.stream("POST", url, json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
        except httpx.HTTPError as exc:
            lines.append(f"error: {type(exc).__name__}")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not any(line.startswith("data: {") for line in lines):
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)
    return t, lines


def test_sigterm_lets_running_streams_finish_then_exits_0(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    srv = own_server(models_dir, tmp_path_factory, "shutdown", "--shutdown-grace", "60")
    assert srv.proc is not None
    try:
        body = {"messages": HI, "max_tokens": 60, "stream": True, **NO_EOS}
        t, lines = _stream_in_thread(srv.base_url + "/v1/chat/completions", body)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no new connections
            httpx.get(srv.base_url + "/health", timeout=5)
        t.join(90)
        assert lines[-1] == "data: [DONE]", lines[-3:]
        last = json.loads(lines[-2][6:])
        assert last["choices"][0]["finish_reason"] == "length"
        assert srv.proc.wait(60) == 0
    finally:
        srv.stop()
    assert "Finished server process" in srv.log()


def test_sigterm_grace_period_ends(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    srv = own_server(models_dir, tmp_path_factory, "impatient", "--shutdown-grace", "1")
    assert srv.proc is not None
    try:
        body = {"messages": HI, "max_tokens": 1800, "stream": True, **NO_EOS}
        t, lines = _stream_in_thread(srv.base_url + "/v1/chat/completions", body)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        assert time.monotonic() - t0 < 30
        t.join(30)
        assert "data: [DONE]" not in lines  # cut off: the stream could not finish in time
    finally:
        srv.stop()
