"""Tool calls parsed from a model's text keep arguments that every client can read."""

from __future__ import annotations

import json

from gpt4all_api.api.streaming import JSONBody
from gpt4all_api.core.tools import Tool, parse_forced
from gpt4all_api.jsontext import json_bytes, json_text

TOOLS1 = [Tool(name="f", description="", parameters={"type": "object"})]


def test_a_lone_surrogate_the_model_wrote_stays_escaped() -> None:
    # a model may write "\ud8ca" in a JSON string; json.loads keeps it as a lone surrogate,
    # which has no UTF-8: the arguments keep the escape instead of failing the response (500)
    (call,) = parse_forced('{"name": "f", "arguments": {"city": "a\\ud8ca b", "n": "é"}}', TOOLS1)
    text = call["function"]["arguments"]
    text.encode("utf-8")
    assert json.loads(text) == {"city": "a\ud8ca b", "n": "é"}
    assert json_text({"n": "é"}) == '{"n": "é"}'  # other characters stay as they are
    assert JSONBody({"x": "\ud8ca"}).body == b'{"x":"\\ud8ca"}'


def test_streamed_chunks_are_compact_utf8_and_survive_a_lone_surrogate() -> None:
    assert json_bytes({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    assert json_bytes({"x": "\ud8ca"}) == b'{"x":"\\ud8ca"}'
