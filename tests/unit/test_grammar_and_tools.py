import json
import re

import pytest

from gpt4all_api.core import tools
from gpt4all_api.engine.grammar import check_schema, schema_grammar
from gpt4all_api.errors import InvalidRequest, UnsupportedParameter


def test_supported_schema_becomes_a_grammar() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
            "when": {"type": "string", "format": "date"},
            "ref": {"$ref": "#/$defs/x"},
        },
        "required": ["name"],
        "$defs": {"x": {"type": "integer"}},
    }
    grammar = schema_grammar(schema, "p")
    assert "root ::=" in grammar


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "integer", "minimum": 0}, "minimum"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ({"type": "string", "format": "email"}, "format 'email'"),
        ({"$ref": "https://example.com/s.json"}, "non-local $ref"),
        ({"patternProperties": {"^x": {}}}, "patternProperties"),
    ],
)
def test_unenforceable_keywords_are_named(schema: dict, named: str) -> None:
    with pytest.raises(UnsupportedParameter, match=re.escape(named)):
        check_schema(schema, "response_format")


def test_malformed_schema_is_invalid() -> None:
    with pytest.raises(InvalidRequest):
        check_schema({"type": "banana"}, "p")
    with pytest.raises(InvalidRequest):
        check_schema({"anyOf": []}, "p")


WEATHER = tools.Tool(
    "get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)


def test_parse_forced_call() -> None:
    calls = tools.parse_forced('{"name": "get_weather", "arguments": {"city": "Oslo"}}', [WEATHER])
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert tools.parse_forced('{"name": "other", "arguments": {}}', [WEATHER]) == []


def test_parse_auto_calls_and_prose() -> None:
    text = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    content, calls = tools.parse_auto(text, [WEATHER])
    assert content == "Sure." and json.loads(calls[0]["function"]["arguments"]) == {"city": "Rome"}
    assert tools.parse_auto("just prose", [WEATHER]) == ("just prose", [])
    bad = "<tool_call>{not json}</tool_call>"
    assert tools.parse_auto(bad, [WEATHER]) == (bad, [])


def test_may_become_call() -> None:
    assert tools.may_become_call("  <tool")
    assert tools.may_become_call("<tool_call>{")
    assert not tools.may_become_call("Hello")


def test_fallback_prompt_lists_functions() -> None:
    text = tools.fallback_system_prompt([WEATHER], parallel=False)
    assert '"name": "get_weather"' in text and "<tool_call>" in text and "at most one" in text


def test_call_grammar_for_one_or_several_tools() -> None:
    assert "root ::=" in tools.call_grammar([WEATHER])
    other = tools.Tool("get_time", "", {"type": "object"})
    assert "get_time" in tools.call_grammar([WEATHER, other])


def test_grammar_strings_exclude_control_characters() -> None:
    from gpt4all_api.engine.grammar import json_object_grammar

    for g in (json_object_grammar(), schema_grammar({"type": "string"}, "x")):
        char = next(line for line in g.splitlines() if line.startswith("char ::="))
        assert "\\x00-\\x1F" in char


def test_grammar_without_strings() -> None:
    g = tools.call_grammar([tools.Tool("noop", "", {"type": "object", "properties": {}})])
    assert "root ::=" in g
