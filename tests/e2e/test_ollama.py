"""Ollama's API against the real server and model, through the official `ollama` client (its
typed responses parsing is part of the check), plus raw HTTP for what the client hides."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import ollama
import pytest

from conftest import HTTP, ServerProcess
from fixtures.catalog_server import CatalogServer, digests, fixture_files
from gpt4all_api.engine.devices import supports_gpu_offload

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct.Q4_1:latest"  # how /api/tags names it
GREEDY = {"temperature": 0, "num_predict": 24}
HI = [{"role": "user", "content": "Name a fruit."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a country",
        "parameters": {
            "type": "object",
            "properties": {"country": {"type": "string"}},
            "required": ["country"],
        },
    },
}


@pytest.fixture(scope="module")
def ol(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url, timeout=300) as c:
        yield c


def _error(exc: pytest.ExceptionInfo[ollama.ResponseError], status: int, *words: str) -> None:
    assert exc.value.status_code == status, exc.value
    for w in words:
        assert w in exc.value.error


# -- the model library -------------------------------------------------------------------------


def test_version_is_ollama_compatible(server: ServerProcess) -> None:
    version = HTTP.get(server.base_url + "/api/version").json()["version"]
    assert tuple(int(x) for x in version.split(".")) >= (0, 5, 0)


def test_list_shows_the_models_on_disk(ol: ollama.Client) -> None:
    models = {m.model: m for m in ol.list().models}
    assert {NAME, "smollm2-copy:latest"} <= set(models)
    m = models[NAME]
    assert m.size and m.size > 1_000_000 and m.modified_at is not None
    assert m.digest and len(m.digest) == 64 and int(m.digest, 16) >= 0
    assert m.details is not None and m.details.format == "gguf"
    assert (m.details.family, m.details.parameter_size) == ("llama", "135M")
    assert m.details.quantization_level == "Q4_1"


def test_show_reports_template_metadata_and_capabilities(ol: ollama.Client) -> None:
    for name in (M, NAME, "SmolLM2-135M-Instruct.Q4_1"):
        info = ol.show(name)
        assert info.template and "<|im_start|>" in info.template
        assert info.capabilities and "completion" in info.capabilities
        assert "embedding" not in info.capabilities
        assert info.modelinfo and info.modelinfo["llama.context_length"] == 8192
        assert info.modelinfo["general.parameter_count"] > 100_000_000
        assert info.details and info.details.quantization_level == "Q4_1"
        assert info.parameters and "num_ctx" in info.parameters
        assert info.modelfile and "FROM " in info.modelfile
    legacy = HTTP.post(ol._client.base_url.join("/api/show"), json={"name": M})
    assert legacy.status_code == 200 and legacy.json()["details"]["family"] == "llama"


def test_ps_lists_loaded_models(ol: ollama.Client) -> None:
    ol.generate(model=M, prompt="Hi", options={"num_predict": 1})
    running = {m.model: m for m in ol.ps().models}
    m = running[NAME]
    assert m.size and m.size > 0
    # device memory llama.cpp allocated: none on a CPU-only build
    assert (m.size_vram or 0) > 0 if supports_gpu_offload() else m.size_vram == 0
    assert m.expires_at is not None and m.context_length and m.context_length > 0


def test_load_then_unload_with_keep_alive_zero(ol: ollama.Client) -> None:
    loaded = ol.generate(model="smollm2-copy")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    assert "smollm2-copy:latest" in {m.model for m in ol.ps().models}
    gone = ol.chat(model="smollm2-copy:latest", messages=[], keep_alive=0)
    assert gone.done and gone.done_reason == "unload"
    deadline = time.monotonic() + 10  # unloaded once idle (it was just handed out)
    while "smollm2-copy:latest" in {m.model for m in ol.ps().models}:
        assert time.monotonic() < deadline, "not unloaded"
        time.sleep(0.2)


# -- chat and generate -------------------------------------------------------------------------


def test_chat(ol: ollama.Client) -> None:
    r = ol.chat(model=M, messages=HI, options=GREEDY)
    assert r.model == M and r.done is True and r.done_reason in ("stop", "length")
    assert r.message.role == "assistant" and r.message.content
    assert r.prompt_eval_count and r.prompt_eval_count > 5
    assert r.eval_count and 0 < r.eval_count <= 24
    assert r.total_duration and r.eval_duration and r.total_duration >= r.eval_duration
    assert r.load_duration is not None and r.created_at


def test_chat_streamed_gives_the_same_text(ol: ollama.Client) -> None:
    whole = ol.chat(model=M, messages=HI, options=GREEDY).message.content
    parts = list(ol.chat(model=M, messages=HI, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == whole
    last = parts[-1]
    assert last.message.content == "" and last.done_reason in ("stop", "length")
    assert last.eval_count and last.prompt_eval_count and last.total_duration


def test_temperature_zero_matches_chat_completions(
    ol: ollama.Client, server: ServerProcess
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *HI]
    mine = ol.chat(model=M, messages=messages, options=GREEDY).message.content
    r = HTTP.post(
        server.base_url + "/v1/chat/completions",
        json={"model": M, "messages": messages, "temperature": 0, "max_tokens": 24},
    )
    assert r.json()["choices"][0]["message"]["content"] == mine


def test_chat_format_schema_parses_and_validates(ol: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    ask = [{"role": "user", "content": "Give me a JSON object: a person named Ann, aged 31."}]
    r = ol.chat(model=M, messages=ask, format=schema, options={"temperature": 0, "num_predict": 40})
    jsonschema.validate(json.loads(r.message.content or ""), schema)
    r = ol.chat(model=M, messages=ask, format="json", options={"temperature": 0, "num_predict": 40})
    assert isinstance(json.loads(r.message.content or ""), dict)


def _weather_history() -> list[dict[str, Any]]:
    """Two earlier calls, so that even this small model answers with a third."""
    out: list[dict[str, Any]] = []
    for country in ("France", "Germany"):
        call = {"function": {"name": "get_weather", "arguments": {"country": country}}}
        out += [
            {"role": "user", "content": f"Weather in {country}?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
    return [*out, {"role": "user", "content": "Weather in Italy?"}]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_call_arguments_validate(ol: ollama.Client, stream: bool) -> None:
    opts = {"temperature": 0, "num_predict": 40}
    kw: dict[str, Any] = dict(model=M, messages=_weather_history(), tools=[WEATHER], options=opts)
    if stream:
        parts = list(ol.chat(**kw, stream=True))
        calls = [c for p in parts for c in (p.message.tool_calls or [])]
        last = parts[-1]
    else:
        last = ol.chat(**kw)
        calls = list(last.message.tool_calls or [])
    assert last.done and last.done_reason == "stop"
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    args = dict(calls[0].function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    assert args == {"country": "Italy"}


def test_chat_with_a_tool_result_in_the_history(ol: ollama.Client) -> None:
    history = [
        *_weather_history()[:-1],
        {"role": "tool", "tool_name": "get_weather", "content": "Sunny, 20 C"},
        {"role": "user", "content": "Thanks. Is it warm?"},
    ]
    r = ol.chat(model=M, messages=history, tools=[WEATHER], options=GREEDY)
    assert r.done and (r.message.content or r.message.tool_calls)


def test_generate_plain_and_streamed(ol: ollama.Client) -> None:
    r = ol.generate(model=M, prompt="Name a fruit.", options=GREEDY)
    assert r.done and r.response and r.done_reason in ("stop", "length")
    assert r.eval_count and r.eval_count <= 24 and r.prompt_eval_count
    parts = list(ol.generate(model=M, prompt="Name a fruit.", options=GREEDY, stream=True))
    assert "".join(p.response or "" for p in parts) == r.response
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    # generate applies the chat template: the same text as a one-message chat
    assert ol.chat(model=M, messages=HI, options=GREEDY).message.content == r.response


def test_generate_system_raw_and_length(ol: ollama.Client) -> None:
    r = ol.generate(model=M, prompt="Hi", system="Answer in French.", options={"num_predict": 3})
    assert r.done_reason == "length" and r.eval_count == 3
    raw = ol.generate(model=M, prompt="1, 2, 3, 4,", raw=True, options=GREEDY | {"stop": ["7"]})
    assert raw.done_reason == "stop" and "5" in (raw.response or "")
    assert "7" not in (raw.response or "")
    own = ol.generate(model=M, prompt="Hi", template="Q: %1\nA:", options={"num_predict": 2})
    assert own.done


def test_embed(ol: ollama.Client) -> None:
    r = ol.embed(model=M, input=["a cat", "a dog"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576
    assert np.isclose(np.linalg.norm(r.embeddings[0]), 1.0, atol=1e-3)
    assert r.prompt_eval_count and r.prompt_eval_count >= 2
    short = ol.embed(model=M, input="a cat", dimensions=64)
    assert len(short.embeddings[0]) == 64
    assert np.isclose(np.linalg.norm(short.embeddings[0]), 1.0, atol=1e-3)
    legacy = ol.embeddings(model=M, prompt="a cat")
    assert np.allclose(legacy.embedding, r.embeddings[0], atol=1e-4)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"bogus": 1}, "bogus"),
        ({"mirostat": 2}, "mirostat"),
        ({"typical_p": 0.5}, "typical_p"),
        ({"num_ctx": 1_000_000}, "num_ctx"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 3}, "top_p"),
    ],
)
def test_bad_options_are_400(ol: ollama.Client, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ollama.ResponseError) as exc:
        ol.chat(model=M, messages=HI, options=options)
    _error(exc, 400, named)


def test_resource_options_and_a_smaller_num_ctx_are_accepted(ol: ollama.Client) -> None:
    opts = {"num_ctx": 512, "num_thread": 2, "num_gpu": 0, "use_mmap": True, "num_predict": 2}
    assert ol.generate(model=M, prompt="Hi", options=opts).done


def test_refusals(ol: ollama.Client) -> None:
    pixel = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
        "RU5ErkJggg=="
    )
    with pytest.raises(ollama.ResponseError) as exc:
        ol.chat(model=M, messages=[{"role": "user", "content": "?", "images": [pixel]}])
    _error(exc, 400, "images")
    with pytest.raises(ollama.ResponseError) as exc:
        ol.generate(model=M, prompt="Hi", think=True)
    _error(exc, 400, "does not support thinking")
    with pytest.raises(ollama.ResponseError) as exc:
        ol.generate(model=M, prompt="def f(", suffix="return x")
    _error(exc, 400, "does not support insert")
    with pytest.raises(ollama.ResponseError) as exc:
        ol.generate(model=M, prompt="Hi", template="{{ .Prompt }}")
    _error(exc, 400, "template")


@pytest.mark.parametrize("name", ["nope", "nope:latest", f"{M}:7b", "library/nope"])
def test_unknown_model_is_404(ol: ollama.Client, name: str) -> None:
    for call in (
        lambda: ol.chat(model=name, messages=HI),
        lambda: ol.generate(model=name, prompt="Hi"),
        lambda: ol.show(name),
        lambda: ol.embed(model=name, input="x"),
    ):
        with pytest.raises(ollama.ResponseError) as exc:
            call()
        _error(exc, 404, f"model '{name}' not found")


def test_raw_http_shapes(server: ServerProcess) -> None:
    base = server.base_url
    # stream defaults to true: NDJSON
    body = {"model": M, "prompt": "Hi", "options": {"num_predict": 2}}
    r = HTTP.post(base + "/api/generate", json=body)
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1]["done"] is True and "context" not in lines[-1]
    # `curl -d` sends JSON as a form; Ollama reads it anyway
    r = HTTP.post(base + "/api/generate", content=json.dumps(body | {"stream": False}))
    assert r.status_code == 200 and r.json()["done"] is True
    for bad in (b"{not json", b'{"model": 3}', b'{"model": "x", "messages": [{}]}'):
        r = HTTP.post(base + "/api/chat", content=bad)
        assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    r = HTTP.post(base + "/api/chat", json={"model": M, "messages": HI, "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["error"]
    r = HTTP.post(base + "/api/chat", json={"messages": HI})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}


# -- pull and delete, against a local stand-in for the GPT4All catalog -------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("ollama-upstream")
    copy = d / "smol-test.gguf"
    shutil.copy(embedded_model, copy)
    srv = CatalogServer(files=fixture_files(copy), model=copy, rate=20_000_000).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, upstream: CatalogServer) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("ollama-lib")
    (home / "models").mkdir()
    srv = ServerProcess(
        models_dir=home / "models",
        log_path=home / "server.log",
        args=["--parallel", "2"],
        env={"GPT4ALL_API_CATALOG_URL": upstream.catalog_url},
    ).start()
    yield srv
    srv.stop()


def test_pull_streams_progress_and_the_model_appears(
    lib: ServerProcess, upstream: CatalogServer
) -> None:
    with ollama.Client(host=lib.base_url, timeout=300) as c:
        frames = list(c.pull("smol-test", stream=True))
        statuses = [f.status for f in frames]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert "verifying sha256 digest" in statuses
        progress = [f for f in frames if f.digest]
        sha = digests(upstream.model)[0]
        assert progress and {(f.status, f.digest) for f in progress} == {
            (f"pulling {sha[:12]}", f"sha256:{sha}")
        }
        size = upstream.model.stat().st_size
        assert all(f.total == size for f in progress)
        assert progress[-1].completed == size
        done = [f.completed or 0 for f in progress]
        assert done == sorted(done)
        assert "smol-test:latest" in {m.model for m in c.list().models}
        r = c.generate(model="smol-test:latest", prompt="Hi", options={"num_predict": 2})
        assert r.done
        # pulling what is on disk, and pulling without streaming
        assert [f.status for f in c.pull("smol-test.gguf", stream=True)][-1] == "success"
        assert c.pull("smol-md5").status == "success"
        assert "smol-md5:latest" in {m.model for m in c.list().models}


def test_pull_errors(lib: ServerProcess) -> None:
    with ollama.Client(host=lib.base_url, timeout=300) as c:
        with pytest.raises(ollama.ResponseError) as exc:
            c.pull("no-such-model")
        _error(exc, 404, "not found")
        with pytest.raises(ollama.ResponseError) as exc:
            list(c.pull("smol-corrupt", stream=True))
        assert "checksum mismatch" in exc.value.error
        with pytest.raises(ollama.ResponseError) as exc:
            c.pull("smol-corrupt")
        _error(exc, 502, "checksum mismatch")


def test_delete(lib: ServerProcess) -> None:
    with ollama.Client(host=lib.base_url, timeout=300) as c:
        if "smol-md5:latest" not in {m.model for m in c.list().models}:
            c.pull("smol-md5")
        assert c.delete("smol-md5:latest").status == "success"
        assert "smol-md5:latest" not in {m.model for m in c.list().models}
        assert not (lib.models_dir / "smol-md5.gguf").exists()
        with pytest.raises(ollama.ResponseError) as exc:
            c.delete("smol-md5")
        _error(exc, 404, "model 'smol-md5' not found")
    r = httpx.request("DELETE", lib.base_url + "/api/delete", json={"model": M}, timeout=60)
    assert r.status_code == 409 and set(r.json()) == {"error"}  # the default model stays
