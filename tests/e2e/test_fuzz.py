"""Property test: no generated request body makes the real server answer 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import HTTP

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

CHAT_FIELDS = [
    "model",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "presence_penalty",
    "response_format",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "functions",
    "function_call",
    "top_k",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "prompt_template",
    "store",
    "metadata",
    "service_tier",
    "modalities",
]
COMPLETION_FIELDS = [
    "model",
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
    "top_k",
    "min_p",
    "repeat_penalty",
    "prompt_template",
]
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool", "wizard"]),
            "content": st.one_of(st.text(max_size=30), json_values),
        },
    ),
    max_size=3,
)
plausible = {
    "model": st.sampled_from(["SmolLM2-135M-Instruct.Q4_1.gguf", "nope", "../x", ""]),
    "max_tokens": st.integers(min_value=-2, max_value=4),
    "n": st.integers(min_value=-1, max_value=3),
    "temperature": st.floats(min_value=-1, max_value=3),
    "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5)),
    "response_format": st.sampled_from(
        [
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minimum": 1}}},
            {"type": "bogus"},
        ]
    ),
    "tool_choice": st.sampled_from(["none", "auto", "required", {"type": "function"}]),
    "prompt": st.one_of(st.text(max_size=30), st.lists(st.integers(-5, 60000), max_size=5)),
}


def body_for(fields: list[str], core: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    extra = st.dictionaries(
        st.sampled_from([*fields, "bogus_field"]),
        json_values,
        max_size=4,
    )
    typed = st.fixed_dictionaries(
        {}, optional={k: v for k, v in plausible.items() if k in fields or k == "prompt"}
    )
    return st.tuples(st.fixed_dictionaries(core), typed, extra).map(
        lambda t: {**t[0], **t[1], **t[2]}
    )


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()["error"]
        assert {"message", "type", "param", "code"} <= set(err)


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    # keep the real work small: the property is about validation, not long generations
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int) and body[key] > 4:
            body[key] = 4
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = 4  # a null limit means "fill the context": minutes on a busy CPU
    if body.get("stream") is True:
        with HTTP.stream("POST", url, json=body) as r:
            r.read()
            return r
    return HTTP.post(url, json=body)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_for(CHAT_FIELDS, {"messages": messages}))
def test_chat_never_500(base_url: str, body: dict[str, Any]) -> None:
    body.pop("prompt", None)
    _check(_post(base_url + "/chat/completions", body))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_for(COMPLETION_FIELDS, {}))
def test_completions_never_500(base_url: str, body: dict[str, Any]) -> None:
    _check(_post(base_url + "/completions", body))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.dictionaries(
        st.sampled_from(["input", "model", "dimensions", "encoding_format", "user", "x"]),
        json_values,
        max_size=4,
    )
)
def test_embeddings_never_500(base_url: str, body: dict[str, Any]) -> None:
    _check(_post(base_url + "/embeddings", body))


RESPONSES_FIELDS = [
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "text",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "previous_response_id",
    "store",
    "stream",
    "metadata",
    "include",
    "truncation",
    "reasoning",
]
MESSAGES_FIELDS = [
    "model",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
    "stream",
]
OLLAMA_FIELDS = ["model", "format", "options", "stream", "keep_alive", "tools", "think", "raw"]
items = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "developer", "tool"]),
                "content": st.one_of(st.text(max_size=30), json_values),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(
                    ["function_call", "function_call_output", "reasoning", "image"]
                ),
                "call_id": st.one_of(st.none(), st.text(max_size=5)),
                "output": json_values,
            }
        ),
    ),
    max_size=3,
)
blocks = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system"]),
            "content": st.one_of(
                st.text(max_size=30),
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "type": st.sampled_from(
                                ["text", "tool_use", "tool_result", "image", "x"]
                            ),
                            "text": st.one_of(st.text(max_size=10), json_values),
                        }
                    ),
                    max_size=2,
                ),
            ),
        }
    ),
    max_size=3,
)


def _small(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value > 4:
        body[key] = 4


def _check_shape(r: httpx.Response, dialect: str) -> None:
    assert r.status_code < 500, r.text
    if r.status_code < 400:
        return
    body = r.json()
    if dialect == "anthropic":
        assert body["type"] == "error" and {"type", "message"} <= set(body["error"])
    elif dialect == "ollama":
        assert isinstance(body["error"], str) and body["error"]
    else:
        assert {"message", "type", "param", "code"} <= set(body["error"])


def _send(url: str, body: dict[str, Any]) -> httpx.Response:
    if body.get("stream") is not False and ("/api/" in url or body.get("stream") is True):
        with HTTP.stream("POST", url, json=body) as r:
            r.read()
            return r
    return HTTP.post(url, json=body)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_for(RESPONSES_FIELDS, {"input": st.one_of(st.text(max_size=20), items)}))
def test_responses_never_500(base_url: str, body: dict[str, Any]) -> None:
    body.pop("prompt", None)
    _small(body, "max_output_tokens")
    _check_shape(_send(base_url + "/responses", body), "openai")


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_for(MESSAGES_FIELDS, {"messages": blocks}))
def test_messages_never_500(base_url: str, body: dict[str, Any]) -> None:
    body.pop("prompt", None)
    _small(body, "max_tokens")
    _check_shape(_send(base_url + "/messages", body), "anthropic")


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_for(OLLAMA_FIELDS, {"messages": messages}))
def test_ollama_chat_never_500(server: Any, body: dict[str, Any]) -> None:
    body.pop("prompt", None)
    options = body.get("options")
    body["options"] = {**(options if isinstance(options, dict) else {}), "num_predict": 4}
    _check_shape(_send(server.base_url + "/api/chat", body), "ollama")


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_for([*OLLAMA_FIELDS, "prompt", "system", "suffix", "template"], {}))
def test_ollama_generate_never_500(server: Any, body: dict[str, Any]) -> None:
    options = body.get("options")
    body["options"] = {**(options if isinstance(options, dict) else {}), "num_predict": 4}
    _check_shape(_send(server.base_url + "/api/generate", body), "ollama")
