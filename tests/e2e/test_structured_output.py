"""Structured output always parses: a property test against the real server and model.

At temperature 1.0, over 100 seeds per case (`n` choices per request, choice j using seed + j):
`json_object`, three `json_schema`s and two forced tool calls. Every choice that ends with
`stop` or `tool_calls` must parse and validate against its schema; a choice cut by `max_tokens`
must say `length`. The counts are printed (run with `-s` to see them) and are in the assertion
message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest

from conftest import HTTP, ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
SEEDS = 100
N = 8  # choices per request: 13 requests cover 100 seeds
MAX_TOKENS = 80

NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "owner": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["city", "zip"],
                    "additionalProperties": False,
                },
            },
            "required": ["name", "age", "address"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "owner"],
    "additionalProperties": False,
}
ARRAYS = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 5},
        "scores": {"type": "array", "items": {"type": "number"}, "minItems": 1},
        "matrix": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "minItems": 2,
        },
    },
    "required": ["tags", "scores", "matrix"],
    "additionalProperties": False,
}
CHOICES = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
        "nickname": {"type": "string", "maxLength": 12},
        "motto": {"type": "string", "minLength": 1, "maxLength": 30},
        "active": {"type": "boolean"},
        "rating": {"type": ["number", "null"]},
    },
    "required": ["color", "size", "nickname", "motto", "active", "rating"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string"},
        "filters": {
            "type": "object",
            "properties": {"site": {"type": "string"}, "year": {"type": "integer"}},
            "additionalProperties": False,
        },
        "limit": {"type": "integer"},
    },
    "required": ["query", "filters"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "web_search", "description": "Search the web", "parameters": SEARCH},
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


CASES: dict[str, dict[str, Any]] = {
    "json_object": {
        "messages": _ask("Give me JSON about a dog."),
        "response_format": {"type": "json_object"},
        "max_tokens": 120,  # free-form objects run long: most must end within the limit
    },
    "json_object_with_stop": {  # a stop string never cuts the JSON: the grammar ends the reply
        "messages": _ask("Give me JSON about a cat."),
        "response_format": {"type": "json_object"},
        "stop": ["}", '",', "\n"],
        "max_tokens": 120,
    },
    "schema_nested": {
        "messages": _ask("Describe a pet and its owner, with the owner's address, as JSON."),
        "response_format": _format("pet", NESTED),
    },
    "schema_arrays": {
        "messages": _ask("Give tags, scores and a small matrix of numbers for a song, as JSON."),
        "response_format": _format("song", ARRAYS),
    },
    "schema_enums": {
        "messages": _ask("Make up a T-shirt with a nickname and a motto, as JSON."),
        "response_format": _format("shirt", CHOICES),
    },
    "tool_required": {
        "messages": _ask("What is the weather in Paris, and find news about it?"),
        "tools": TOOLS,
        "tool_choice": "required",
    },
    "tool_named": {
        "messages": _ask("Look up the best pizza places in Naples."),
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "web_search"}},
    },
}


@dataclass
class Tally:
    valid: int = 0
    cut: int = 0
    invalid: list[str] = field(default_factory=list)

    def line(self, case: str) -> str:
        return f"{case}: valid {self.valid} / cut {self.cut} / invalid {len(self.invalid)}"


def _strict_json(text: str) -> Any:
    """json.loads refusing what JSON does not have (NaN, Infinity) and duplicate keys."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate keys in {keys}")
        return dict(pairs)

    return json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)


def _problem(case: str, body: dict[str, Any], choice: dict[str, Any]) -> str | None:
    """Why a finished (`stop` / `tool_calls`) choice is wrong, or None when it is right."""
    message, finish = choice["message"], choice["finish_reason"]
    try:
        if "tools" in body:
            if finish != "tool_calls" or not message.get("tool_calls"):
                return f"a forced call ended with {finish!r} and no tool call"
            wanted = body["tool_choice"]
            for call in message["tool_calls"]:
                name = call["function"]["name"]
                if isinstance(wanted, dict) and name != wanted["function"]["name"]:
                    return f"called {name!r}, not the named tool"
                jsonschema.validate(_strict_json(call["function"]["arguments"]), SCHEMAS[name])
            return None
        if finish != "stop":
            return f"finish_reason {finish!r}"
        value = _strict_json(message["content"])
        fmt = body["response_format"]
        schema = (
            fmt["json_schema"]["schema"] if fmt["type"] == "json_schema" else {"type": "object"}
        )
        jsonschema.validate(value, schema)
        return None
    except (ValueError, KeyError, jsonschema.ValidationError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"


@pytest.mark.parametrize("case", list(CASES))
def test_structured_output_always_parses(base_url: str, case: str) -> None:
    tally = Tally()
    for seed in range(0, SEEDS, N):
        body = {
            "model": M,
            "temperature": 1.0,
            "seed": seed,
            "n": min(N, SEEDS - seed),
            "max_tokens": MAX_TOKENS,
            **CASES[case],
        }
        r = HTTP.post(base_url + "/chat/completions", json=body)
        assert r.status_code == 200, r.text
        for choice in r.json()["choices"]:
            finish = choice["finish_reason"]
            if finish == "length":
                tally.cut += 1
                if "tools" in body:  # as OpenAI: no text, the call as far as it got
                    assert choice["message"]["content"] is None, choice
                    for call in choice["message"].get("tool_calls") or []:
                        assert call["function"]["name"] in SCHEMAS, choice
                continue
            problem = _problem(case, body, choice)
            if problem is None:
                tally.valid += 1
            else:
                where = f"seed {seed + choice['index']}: {problem}"
                tally.invalid.append(f"{where}\n    {json.dumps(choice['message'])[:400]}")
    print(tally.line(case))
    assert tally.valid + tally.cut + len(tally.invalid) == SEEDS
    assert not tally.invalid, tally.line(case) + "\n" + "\n".join(tally.invalid)
    # the property means something only if most answers finish within the budget
    assert tally.valid >= SEEDS // 2, tally.line(case)


def _top_level_keys(text: str) -> list[str]:
    """The keys of a JSON object's outer level, in order, whether the text is whole or cut:
    each string at depth 1 followed by a colon."""
    keys: list[str] = []
    depth, i = 0, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            end = i + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            rest = text[end + 1 :].lstrip()
            if depth == 1 and end < len(text) and rest.startswith(":"):
                keys.append(json.loads(text[i : end + 1]))
            i = end + 1
            continue
        depth += c in "{["
        depth -= c in "}]"
        i += 1
    return keys


def test_an_object_never_names_a_key_twice_even_when_the_model_wants_to(
    server: ServerProcess,
) -> None:
    """Pushed toward writing `"name": "...", ` again and again (by `logit_bias`), the model
    names the key "name" over and over when nothing stops it (seen with the server's key check
    turned off: `{"name": "Felicia", "age": "12", "name": "Luna", "name": "Mia", ...`). The
    grammar alone cannot stop it; the server makes it write new keys instead."""
    r = HTTP.post(server.base_url + "/tokenize", json={"model": M, "content": '", "name": "'})
    bias = {str(t): 8 for t in r.json()["tokens"]}
    r = HTTP.post(
        server.base_url + "/v1/chat/completions",
        json={
            "model": M,
            "messages": _ask("Give me JSON about a cat."),
            "response_format": {"type": "json_object"},
            "logit_bias": bias,
            "temperature": 0,
            "max_tokens": 60,
        },
    )
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["message"]["content"]
    keys = _top_level_keys(text)
    assert len(keys) >= 4 and sum(k.startswith("name") for k in keys) >= 3, text  # it wanted to
    assert len(keys) == len(set(keys)), text
