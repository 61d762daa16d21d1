"""The wider OpenAI request surface against the real server and model, through the `openai` SDK
(its typed responses parsing is part of the check)."""

from __future__ import annotations

import base64
import json

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from conftest import HTTP

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = {"temperature": 0}


CHAT = [{"role": "user", "content": "Name a fruit."}]


def _err(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


# -- n, seed, stop ------------------------------------------------------------------------


def test_n_greedy_choices_equal_the_single_answer(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(model=M, messages=CHAT, max_tokens=24, **GREEDY)
    many = client.chat.completions.create(model=M, messages=CHAT, max_tokens=24, n=3, **GREEDY)
    assert [c.index for c in many.choices] == [0, 1, 2]
    # the prompt KV copied to the other slots gives exactly the same greedy continuation
    assert {c.message.content for c in many.choices} == {one.choices[0].message.content}
    assert many.usage.prompt_tokens == one.usage.prompt_tokens  # evaluated once
    assert many.usage.completion_tokens == 3 * one.usage.completion_tokens


def test_n_sampled_choices_differ_and_seed_reproduces_them(client: openai.OpenAI) -> None:
    kw = dict(model=M, messages=CHAT, max_tokens=16, n=4, temperature=1.0, seed=7)
    a = [c.message.content for c in client.chat.completions.create(**kw).choices]
    b = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert a == b
    assert len(set(a)) > 1


def test_n_streamed_and_for_several_prompts(client: openai.OpenAI) -> None:
    texts: dict[int, str] = {}
    finished = set()
    for chunk in client.completions.create(
        model=M, prompt=["Hello", "Goodbye"], n=2, max_tokens=6, stream=True, seed=1
    ):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1, 2, 3}


def test_n_beyond_the_slots_is_refused(base_url: str) -> None:
    err = _err(
        HTTP.post(base_url + "/chat/completions", json={"messages": CHAT, "n": 64, "max_tokens": 2})
    )
    assert err["param"] == "n"


# -- logprobs, echo, best_of, logit_bias ---------------------------------------------------


def test_completion_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model=M, prompt="The capital of France is", max_tokens=6, logprobs=3, **GREEDY
    )
    c = r.choices[0]
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text
    assert len(lp.tokens) == r.usage.completion_tokens
    assert all(x <= 0 for x in lp.token_logprobs)
    for tok, val, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3
        # greedy: the chosen token is the most likely one listed (penalties included)
        assert top[tok] == pytest.approx(val) and val == pytest.approx(max(top.values()))
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI) -> None:
    prompt = "One, two, three,"
    r = client.completions.create(
        model=M, prompt=prompt, max_tokens=3, echo=True, logprobs=1, **GREEDY
    )
    c = r.choices[0]
    assert c.text.startswith(prompt)
    lp = c.logprobs
    assert len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == c.text
    plain = client.completions.create(model=M, prompt=prompt, max_tokens=3, echo=True, **GREEDY)
    assert plain.choices[0].text == c.text


def test_best_of_returns_n(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model=M, prompt="A poem:", max_tokens=8, n=2, best_of=4, temperature=1.0, seed=3
    )
    assert [c.index for c in r.choices] == [0, 1]


def test_chat_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=M, messages=CHAT, max_tokens=8, logprobs=True, top_logprobs=2, **GREEDY
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    text = b"".join(bytes(t.bytes) for t in content).decode()
    assert text == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 2 and t.logprob <= 0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob


def test_logit_bias_bans_a_token(client: openai.OpenAI, base_url: str) -> None:
    r = client.completions.create(
        model=M, prompt="The capital of France is", max_tokens=1, logprobs=1, **GREEDY
    )
    first = r.choices[0].logprobs.tokens[0]
    tok = HTTP.post(
        base_url.removesuffix("/v1") + "/tokenize", json={"content": first, "add_special": False}
    ).json()["tokens"]
    assert len(tok) == 1
    banned = client.completions.create(
        model=M,
        prompt="The capital of France is",
        max_tokens=1,
        logit_bias={str(tok[0]): -100},
        **GREEDY,
    )
    assert banned.choices[0].text != first


def test_max_completion_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=M,
        messages=CHAT,
        max_completion_tokens=3,
        temperature=1.0,
        seed=5,
        presence_penalty=0.5,
        frequency_penalty=0.5,
    )
    assert r.usage.completion_tokens <= 3


def test_suffix_needs_a_fill_in_the_middle_model(base_url: str) -> None:
    err = _err(
        HTTP.post(
            base_url + "/completions",
            json={"prompt": "def f(", "suffix": "return x", "max_tokens": 4},
        )
    )
    assert err["param"] == "suffix" and "fill-in-the-middle" in err["message"]


# -- structured output -------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_json_schema_output_always_validates(client: openai.OpenAI, seed: int) -> None:
    r = client.chat.completions.create(
        model=M,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=80,
        temperature=1.0,
        seed=seed,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    jsonschema.validate(json.loads(c.message.content), PERSON)


def test_json_object_output_parses(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=M,
        messages=[{"role": "user", "content": "Give me JSON about cats."}],
        max_tokens=60,
        temperature=0.7,
        seed=1,
        response_format={"type": "json_object"},
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].finish_reason == "length"


def test_json_schema_cut_by_max_tokens_says_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=M,
        messages=[{"role": "user", "content": "A person"}],
        max_tokens=3,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
    )
    assert r.choices[0].finish_reason == "length"


def test_unsupported_schema_features_are_named(base_url: str) -> None:
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0}},
        "uniqueItems": True,
    }
    err = _err(
        HTTP.post(
            base_url + "/chat/completions",
            json={
                "messages": CHAT,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema},
                },
            },
        )
    )
    assert "minimum" in err["message"] and "uniqueItems" in err["message"]
    assert err["code"] == "unsupported_parameter"


# -- tools -------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time",
        "parameters": {"type": "object", "properties": {}},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_call_validates(client: openai.OpenAI, choice: object) -> None:
    r = client.chat.completions.create(
        model=M, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=60, **GREEDY
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    if isinstance(choice, dict):
        assert call.function.name == "get_weather"
    params = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), params["function"]["parameters"])


def test_streamed_tool_call_deltas(client: openai.OpenAI) -> None:
    calls, finish = [], None
    for chunk in client.chat.completions.create(
        model=M,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        stream=True,
        **GREEDY,
    ):
        d = chunk.choices[0].delta
        calls += d.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments)


def test_tool_history_and_auto(client: openai.OpenAI) -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    r = client.chat.completions.create(
        model=M, messages=messages, tools=[WEATHER], max_tokens=30, **GREEDY
    )
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    assert c.message.content or c.message.tool_calls
    none = client.chat.completions.create(
        model=M, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=20, **GREEDY
    )
    assert none.choices[0].message.tool_calls is None


def test_legacy_functions(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=M,
        messages=ASK,
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
        max_tokens=60,
        **GREEDY,
    )
    c = r.choices[0]
    assert c.finish_reason == "function_call"
    assert c.message.function_call.name == "get_weather"
    json.loads(c.message.function_call.arguments)


def test_tool_choice_for_an_unknown_function_is_refused(base_url: str) -> None:
    err = _err(
        HTTP.post(
            base_url + "/chat/completions",
            json={
                "messages": ASK,
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
        )
    )
    assert err["param"] == "tool_choice"


# -- embeddings, tokenize -------------------------------------------------------------------


def test_embeddings(client: openai.OpenAI, base_url: str) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on a rug.", "Interest rates rose."]
    r = client.embeddings.create(model=M, input=texts)
    vecs = [np.array(d.embedding) for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vecs)
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    # related sentences are closer than unrelated ones
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    short = client.embeddings.create(model=M, input=texts[0], dimensions=32)
    assert len(short.data[0].embedding) == 32
    assert abs(np.linalg.norm(short.data[0].embedding) - 1) < 1e-4
    raw = HTTP.post(
        base_url + "/embeddings", json={"model": M, "input": texts[0], "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vecs[0], atol=1e-6)
    tokens = HTTP.post(
        base_url.removesuffix("/v1") + "/tokenize", json={"content": texts[0]}
    ).json()["tokens"]
    by_tokens = client.embeddings.create(model=M, input=[tokens, tokens])
    assert np.allclose(by_tokens.data[1].embedding, vecs[0], atol=1e-4)


@pytest.mark.parametrize(
    "body",
    [
        {"input": ""},
        {"input": []},
        {"input": "x", "dimensions": 0},
        {"input": "x", "dimensions": 100000},
        {"input": "x", "encoding_format": "int8"},
    ],
)
def test_bad_embedding_requests(base_url: str, body: dict) -> None:
    err = _err(HTTP.post(base_url + "/embeddings", json=body))
    assert err["param"] in ("input", "dimensions", "encoding_format")


def test_tokenize_with_pieces(base_url: str) -> None:
    r = HTTP.post(
        base_url.removesuffix("/v1") + "/tokenize",
        json={"content": "Hello world", "with_pieces": True},
    ).json()
    assert "".join(t["piece"] for t in r["tokens"]) == "Hello world"
