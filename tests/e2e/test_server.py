"""The real server, the real model, the official `openai` SDK: what a user sees."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import openai
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"


GREEDY = {"temperature": 0}


def test_models_list_has_embedded_and_local_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert EMBEDDED in ids
    assert "smollm2-copy.gguf" in ids  # found in a subfolder
    assert not any(i.startswith("incomplete-") for i in ids)
    model = client.models.retrieve(EMBEDDED)
    assert model.id == EMBEDDED and model.object == "model" and isinstance(model.created, int)
    assert client.models.retrieve("SmolLM2-135M-Instruct.Q4_1").id == EMBEDDED


def test_chat_completion(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=EMBEDDED,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=24,
        **GREEDY,
    )
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == EMBEDDED
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 10
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    extra = r.model_dump()
    assert extra["choices"][0]["references"] == []
    assert extra["usage"]["thread_count"] >= 1


def test_default_model_is_used_when_none_given(base_url: str) -> None:
    r = HTTP.post(
        base_url + "/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == EMBEDDED


def test_chat_stream_matches_non_stream(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=EMBEDDED,
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=30,
        **GREEDY,
    )
    full = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kwargs
    )
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert roles == ["assistant"]
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_served_on_uvloop_and_httptools(server: ServerProcess, client: openai.OpenAI) -> None:
    """`serve` says at startup which event loop and HTTP parser uvicorn runs; the package's
    dependencies make them the C ones, and a streamed answer comes through them."""
    stream = client.chat.completions.create(
        model=EMBEDDED, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "event loop uvloop, HTTP httptools" in server.log_path.read_text(errors="replace")


def test_completion_and_tokenize_agree(client: openai.OpenAI, base_url: str) -> None:
    prompt = "The quick brown fox"
    r = client.completions.create(model=EMBEDDED, prompt=prompt, **GREEDY)
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    c = r.choices[0]
    assert c.text
    # default max_tokens is 16, as in OpenAI's API
    assert r.usage.completion_tokens <= 16
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 16
    tok = HTTP.post(
        base_url.removesuffix("/v1") + "/tokenize", json={"model": EMBEDDED, "content": prompt}
    ).json()
    assert r.usage.prompt_tokens == len(tok["tokens"])
    back = HTTP.post(
        base_url.removesuffix("/v1") + "/detokenize",
        json={"model": EMBEDDED, "tokens": tok["tokens"]},
    ).json()
    assert back["content"] == prompt


def test_completion_stream(client: openai.OpenAI) -> None:
    full = client.completions.create(
        model=EMBEDDED, prompt="Once upon a time", max_tokens=20, **GREEDY
    )
    text = "".join(
        ch.choices[0].text
        for ch in client.completions.create(
            model=EMBEDDED, prompt="Once upon a time", max_tokens=20, stream=True, **GREEDY
        )
        if ch.choices
    )
    assert text == full.choices[0].text


def test_prompt_forms(client: openai.OpenAI, base_url: str) -> None:
    tokens = HTTP.post(
        base_url.removesuffix("/v1") + "/tokenize",
        json={"model": EMBEDDED, "content": "Hello there"},
    ).json()["tokens"]
    as_text = client.completions.create(
        model=EMBEDDED, prompt="Hello there", max_tokens=8, **GREEDY
    )
    as_tokens = client.completions.create(model=EMBEDDED, prompt=tokens, max_tokens=8, **GREEDY)
    assert as_tokens.choices[0].text == as_text.choices[0].text
    many = client.completions.create(
        model=EMBEDDED, prompt=["Hello there", "1, 2, 3,"], max_tokens=8, **GREEDY
    )
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == as_text.choices[0].text
    other = HTTP.post(
        base_url.removesuffix("/v1") + "/tokenize", json={"model": EMBEDDED, "content": "1, 2, 3,"}
    ).json()["tokens"]
    assert many.usage.prompt_tokens == len(tokens) + len(other)


def test_prompt_template_wraps_the_prompt(base_url: str) -> None:
    body = {
        "model": EMBEDDED,
        "prompt": "Paris",
        "max_tokens": 1,
        "temperature": 0,
        "prompt_template": "The capital of France is %1",
    }
    r = HTTP.post(base_url + "/completions", json=body).json()
    plain = HTTP.post(
        base_url + "/completions",
        json={**body, "prompt": "The capital of France is Paris", "prompt_template": "%1"},
    ).json()
    assert r["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    assert r["choices"][0]["text"] == plain["choices"][0]["text"]
    assert r["usage"]["prompt_template"] == "The capital of France is %1"


def test_multi_turn_chat(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=EMBEDDED,
        messages=[
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Nice to meet you, Ada!"},
            {"role": "user", "content": "What is my name?"},
        ],
        max_tokens=20,
        # the default repeat penalty (1.18) pushes this small model away from repeating the name
        extra_body={"repeat_penalty": 1.0},
        **GREEDY,
    )
    assert "Ada" in r.choices[0].message.content


def test_stop_sequences_are_not_emitted(client: openai.OpenAI) -> None:
    kwargs = dict(model=EMBEDDED, prompt="The history of Rome", max_tokens=24, **GREEDY)
    base = client.completions.create(**kwargs).choices[0].text
    # a stop string from the middle of the greedy output (it spans token edges in general)
    mid = len(base) // 2
    stop = base[mid : mid + 4]
    expected = base[: base.index(stop)]
    r = client.completions.create(stop=[stop, "NEVER-SEEN"], **kwargs)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == expected
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(stop=stop, stream=True, **kwargs)
        if c.choices
    )
    assert streamed == expected


def test_seed_reproduces_sampled_output(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=EMBEDDED,
        prompt="Write a word:",
        max_tokens=16,
        temperature=1.0,
        extra_body={"top_k": 0},
    )
    a = client.completions.create(seed=1234, **kwargs).choices[0].text
    b = client.completions.create(seed=1234, **kwargs).choices[0].text
    assert a == b


def test_batched_greedy_equals_sequential(client: openai.OpenAI) -> None:
    prompts = [
        "The capital of France is",
        "Water boils at",
        "def fibonacci(n):",
        "My favourite fruit is",
        "In 1492, Columbus",
        "The largest planet is",
        "Roses are red,",
        "To make tea, first",
    ]

    def run(p: str) -> str:
        r = client.chat.completions.create(
            model=EMBEDDED, messages=[{"role": "user", "content": p}], max_tokens=32, **GREEDY
        )
        return r.choices[0].message.content

    alone = [run(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(run, prompts))
    assert together == alone


def test_disconnected_stream_frees_its_slot(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    body = {
        "model": EMBEDDED,
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 1500,
        "stream": True,
        "temperature": 0.8,
        "seed": 1,
    }
    with httpx.Client(timeout=300) as h:
        for _ in range(3):
            with h.stream("POST", base_url + "/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                # an event stream, which neither caches nor proxies hold back
                assert resp.headers["content-type"].startswith("text/event-stream")
                assert resp.headers["cache-control"] == "no-store"
                assert resp.headers["x-accel-buffering"] == "no"
                lines = 0
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        lines += 1
                    if lines >= 5:
                        break
            # closing the response drops the connection mid-stream
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = h.get(root + "/v1/stats").json()["models"][EMBEDDED]
            if s["busy_slots"] == 0 and s["waiting"] == 0:
                break
            time.sleep(0.1)
        assert s["busy_slots"] == 0 and s["waiting"] == 0, s


def test_second_local_model_and_reload(client: openai.OpenAI, base_url: str) -> None:
    r = client.chat.completions.create(
        model="smollm2-copy", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert r.model == "smollm2-copy.gguf"
    models = {m["id"]: m for m in HTTP.get(base_url + "/models").json()["data"]}
    assert models["smollm2-copy.gguf"]["loaded"] is True
    r2 = client.chat.completions.create(
        model="smollm2-copy",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=5,
        extra_body={"reload": True},
    )
    assert r2.choices[0].message.content is not None


# -- bad input ----------------------------------------------------------------------------


def _post(base_url: str, path: str, body: object, **kw: object) -> httpx.Response:
    return HTTP.post(base_url + path, json=body, **kw)  # type: ignore[arg-type]


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope.gguf")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/completions", {"prompt": "x", "max_tokens": -1}, "max_tokens"),
        ("/completions", {"prompt": "x", "temperature": -0.5}, "temperature"),
        ("/completions", {"prompt": "x", "top_p": 1.5}, "top_p"),
        ("/completions", {"prompt": "x", "bogus_field": 1}, "bogus_field"),
        ("/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/completions", {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ("/chat/completions", {"messages": []}, "messages"),
        (
            "/chat/completions",
            {"messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ("/chat/completions", {"messages": "hello"}, "messages"),
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}},
            "logit_bias",
        ),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "thread_count": 999},
            "thread_count",
        ),
    ],
)
def test_bad_fields_are_400_naming_the_param(
    base_url: str, path: str, body: dict, param: str
) -> None:
    err = _error(_post(base_url, path, body), 400)
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"


def test_empty_prompt(base_url: str) -> None:
    for body in ({"prompt": ""}, {}, {"prompt": []}):
        err = _error(_post(base_url, "/completions", body), 400)
        assert err["message"] == "empty prompt"


def test_malformed_json(base_url: str) -> None:
    r = HTTP.post(
        base_url + "/chat/completions",
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
    )
    err = _error(r, 400)
    assert err["code"] == "invalid_json"


def test_context_length_exceeded_gives_the_numbers(base_url: str) -> None:
    long_prompt = "hello " * 3000
    n = len(
        HTTP.post(base_url.removesuffix("/v1") + "/tokenize", json={"content": long_prompt}).json()[
            "tokens"
        ]
    )
    err = _error(_post(base_url, "/completions", {"prompt": long_prompt}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    assert "2048" in err["message"] and str(n) in err["message"]
    err = _error(_post(base_url, "/completions", {"prompt": "hi", "max_tokens": 5000}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "max_tokens"
    assert "2048" in err["message"]


def test_unsupported_values_are_refused_by_name_and_neutral_ones_accepted(
    base_url: str,
) -> None:
    neutral = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "n": 1,
        "logprobs": False,
        "tools": None,
        "user": "someone",
        "store": False,
    }
    assert _post(base_url, "/chat/completions", neutral).status_code == 200
    for field_, value in [
        ("store", True),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("web_search_options", {}),
        ("reasoning_effort", "high"),
        ("service_tier", "flex"),
    ]:
        err = _error(_post(base_url, "/chat/completions", {**neutral, field_: value}), 400)
        assert err["param"] == field_
        assert err["code"] == "unsupported_parameter"


def test_image_parts_are_refused(base_url: str) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    }
    err = _error(_post(base_url, "/chat/completions", body), 400)
    assert err["param"] == "messages[0].content[1]"


def test_unknown_route_is_openai_style_404(base_url: str) -> None:
    _error(HTTP.get(base_url + "/nothing-here"), 404)


def test_stream_error_after_start_is_an_error_chunk(base_url: str) -> None:
    # A stream that begins fine always ends with [DONE]; errors before it starts are plain 4xx.
    with HTTP.stream(
        "POST",
        base_url + "/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3,
            "stream": True,
        },
    ) as r:
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    assert all("choices" in json.loads(f) for f in frames[:-1])
