"""Ollama requests → plans, with no model: the `options` map, names, messages, tools, formats."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from gpt4all_api.core.plan import Sampling, ToolCall, Turn
from gpt4all_api.dialects.ollama import translate
from gpt4all_api.dialects.ollama.protocol import ChatRequest, GenerateRequest
from gpt4all_api.errors import (
    InvalidRequest,
    NotFound,
    UnknownParameter,
    UnsupportedParameter,
)

STATE: Any = SimpleNamespace(settings=SimpleNamespace(reject_unknown_fields=True))


def test_sampling_options_map_onto_the_plan() -> None:
    opts = translate.options(
        {
            "temperature": 0,
            "top_k": 20,
            "top_p": 0.9,
            "min_p": 0.05,
            "repeat_penalty": 1.1,
            "repeat_last_n": 33,
            "presence_penalty": 1.5,
            "frequency_penalty": 1.0,
            "seed": 42,
            "stop": ["\n", "user:"],
            "num_predict": 100,
            "num_ctx": 1024,
        }
    )
    assert opts.sampling == Sampling(
        temperature=0.0,
        top_k=20,
        top_p=0.9,
        min_p=0.05,
        repeat_penalty=1.1,
        repeat_last_n=33,
        presence_penalty=1.5,
        frequency_penalty=1.0,
        seed=42,
    )
    assert opts.stop == ("\n", "user:") and opts.max_tokens == 100 and opts.num_ctx == 1024


def test_unset_options_keep_the_server_defaults() -> None:
    assert translate.options(None) == translate.Options()
    assert translate.options({"temperature": None}).sampling == Sampling()


@pytest.mark.parametrize(("value", "expected"), [(-1, None), (-2, None), (0, None), (7, 7)])
def test_num_predict(value: int, expected: int | None) -> None:
    assert translate.options({"num_predict": value}).max_tokens == expected


def test_numbers_are_read_as_ollama_reads_json() -> None:
    opts = translate.options({"top_k": 20.0, "temperature": 1, "seed": -1, "stop": "x"})
    assert opts.sampling.top_k == 20 and isinstance(opts.sampling.top_k, int)
    assert opts.sampling.temperature == 1.0 and opts.sampling.seed is None  # -1: random
    assert opts.stop == ("x",)


def test_resource_options_are_accepted_and_change_nothing() -> None:
    raw = {
        "num_keep": 5,
        "num_batch": 2,
        "num_gpu": 1,
        "main_gpu": 0,
        "num_thread": 8,
        "numa": False,
        "use_mmap": True,
        "use_mlock": False,
        "low_vram": False,
        "f16_kv": True,
        "draft_num_predict": 4,
        # sampler options this server lacks, at the value it does
        "mirostat": 0,
        "typical_p": 1.0,
        "tfs_z": 1,
        "penalize_newline": True,
    }
    assert translate.options(raw) == translate.Options()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"mirostat": 1}, UnsupportedParameter),
        ({"mirostat_eta": 0.2}, UnsupportedParameter),
        ({"mirostat_tau": 3.0}, UnsupportedParameter),
        ({"typical_p": 0.7}, UnsupportedParameter),
        ({"tfs_z": 0.5}, UnsupportedParameter),
        ({"penalize_newline": False}, UnsupportedParameter),
        ({"vocab_only": True}, UnsupportedParameter),
        ({"bogus": 1}, UnknownParameter),
        ({"temperature": "hot"}, InvalidRequest),
        ({"temperature": -0.1}, InvalidRequest),
        ({"top_p": 1.5}, InvalidRequest),
        ({"top_k": 2.5}, InvalidRequest),
        ({"seed": True}, InvalidRequest),
        ({"use_mmap": 1}, InvalidRequest),
        ({"num_predict": -3}, InvalidRequest),
        ({"num_ctx": 0}, InvalidRequest),
        ({"stop": [1]}, InvalidRequest),
    ],
)
def test_bad_options_are_refused_by_name(raw: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as exc:
        translate.options(raw)
    key = next(iter(raw))
    assert exc.value.param == f"options.{key}" and key in exc.value.message  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "local"),
    [("smollm2", "smollm2"), ("smollm2:latest", "smollm2"), ("a.gguf:latest", "a.gguf")],
)
def test_model_names(name: str, local: str) -> None:
    assert translate.local_name(name) == local


@pytest.mark.parametrize("name", ["smollm2:135m", "library/smollm2", "hf.co/x/y:Q4"])
def test_other_tags_and_registries_are_not_here(name: str) -> None:
    with pytest.raises(NotFound, match=f"model '{name}' not found"):
        translate.local_name(name)


def test_model_is_required() -> None:
    with pytest.raises(InvalidRequest, match="model is required"):
        translate.chat(STATE, ChatRequest(messages=[]))


def test_chat_turns_tools_and_format() -> None:
    body = ChatRequest.model_validate(
        {
            "model": "m:latest",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "tool", "tool_name": "get_weather", "content": "Sunny"},
                {"role": "User", "content": "Thanks"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ],
            "format": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "options": {"temperature": 0, "num_predict": 5},
            "keep_alive": "5m",
        }
    )
    t = translate.chat(STATE, body)
    plan = t.plan
    assert plan.model == "m" and plan.stream is True and plan.keep_alive == 300.0
    call = ToolCall("call_2_0", "get_weather", json.dumps({"city": "Paris"}))
    assert plan.turns == (
        Turn("system", "Be brief."),
        Turn("user", "Weather?"),
        Turn("assistant", "", (call,)),
        Turn("tool", "Sunny", tool_call_id="call_2_0", name="get_weather"),
        Turn("user", "Thanks"),
    )
    assert plan.tools.mode == "auto" and plan.tools.tools[0].name == "get_weather"
    assert plan.grammar and "root" in plan.grammar
    assert plan.limits.max_tokens == 5 and plan.limits.clip is True
    assert plan.limits.max_param == "options.num_predict"
    assert translate.chat(STATE, ChatRequest(model="m", stream=False)).plan.stream is False


def test_format_json_and_none() -> None:
    assert translate.grammar_of("json") and translate.grammar_of("") is None
    assert translate.grammar_of(None) is None
    with pytest.raises(UnsupportedParameter):  # a keyword the grammar cannot enforce
        translate.grammar_of({"type": "integer", "minimum": 3})


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "?", "images": ["aGk="]}, "messages[0].images"),
        ({"role": "robot", "content": "?"}, "messages[0].role"),
        ({"role": "user", "content": "?", "extra": 1}, "messages[0].extra"),
        ({"role": "assistant", "tool_calls": [{"function": {}}]}, "messages[0].tool_calls[0]"),
    ],
)
def test_bad_messages(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        translate.chat(STATE, ChatRequest.model_validate({"model": "m", "messages": [message]}))
    assert exc.value.param == param


@pytest.mark.parametrize(
    ("think", "enabled", "effort"),
    [(True, True, None), (False, False, None), (None, None, None), ("high", True, "high")],
)
def test_think_becomes_the_reasoning_ask(think: Any, enabled: Any, effort: Any) -> None:
    r = translate.chat(STATE, ChatRequest(model="m", think=think)).plan.reasoning
    assert (r.enabled, r.effort, r.param, r.strict) == (enabled, effort, "think", True)


def test_think_levels_are_checked() -> None:
    with pytest.raises(InvalidRequest, match="think must be"):
        translate.chat(STATE, ChatRequest(model="m", think="max"))


def test_generate_uses_the_chat_template_unless_raw() -> None:
    t = translate.generate(STATE, GenerateRequest(model="m", prompt="Hi", system="Be brief."))
    assert t.plan.turns == (Turn("system", "Be brief."), Turn("user", "Hi"))
    assert t.plan.prompt is None and not t.plan.raw
    raw = translate.generate(STATE, GenerateRequest(model="m", prompt="[INST] Hi", raw=True))
    assert raw.plan.turns == () and raw.plan.prompt == "[INST] Hi" and raw.plan.raw
    own = translate.generate(STATE, GenerateRequest(model="m", prompt="Hi", template="Q: %1 A:"))
    assert own.plan.prompt_template == "Q: %1 A:"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"template": "{{ .Prompt }}"}, "template"),
        ({"suffix": "end"}, "suffix"),
        ({"context": [1, 2]}, "context"),
        ({"images": ["aGk="]}, "images"),
        ({"raw": True, "system": "x"}, "raw"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_generate_refusals(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        translate.generate(STATE, GenerateRequest(model="m", prompt="Hi", **fields))
    assert exc.value.param == param
