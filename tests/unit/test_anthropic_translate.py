"""The Anthropic Messages translator (request → plan) and the pure parts of its renderer, with
no model and no server."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from gpt4all_api.core.plan import Limits, Sampling, ToolCall, Turn
from gpt4all_api.core.reply import Finished
from gpt4all_api.dialects.anthropic import render
from gpt4all_api.dialects.anthropic.protocol import CountTokensRequest, MessagesRequest
from gpt4all_api.dialects.anthropic.translate import translate, turns_of
from gpt4all_api.errors import InvalidRequest, UnknownParameter, UnsupportedParameter

STATE: Any = SimpleNamespace(settings=SimpleNamespace(reject_unknown_fields=True))
HI = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
}


def plan_of(**fields: Any) -> Any:
    return translate(STATE, MessagesRequest(**{"max_tokens": 8, "messages": HI, **fields}))


def test_plain_request() -> None:
    t = plan_of(model="m", temperature=0, top_p=0.5, top_k=3, stop_sequences=["END"], stream=True)
    p = t.plan
    assert p.model == "m" and p.turns == (Turn("user", "Hi"),)
    assert p.sampling == Sampling(temperature=0, top_k=3, top_p=0.5)
    assert p.stop == ("END",) and p.stream
    assert p.limits == Limits(8, max_param="max_tokens", prompt_param="messages", clip=True)
    assert p.tools.mode == "none" and p.grammar is None and t.ignored_tools == ()


def test_system_blocks_and_billing_header() -> None:
    billing = {"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=ab;"}
    system = [billing, {"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    p = plan_of(system=system).plan
    assert p.turns[0] == Turn("system", "One.\n\nTwo.")
    assert plan_of(system="Sys").plan.turns[0] == Turn("system", "Sys")
    assert plan_of(system=[billing]).plan.turns == (Turn("user", "Hi"),)


def test_tool_round_trip_turns() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "P"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    p = plan_of(messages=messages, tools=[WEATHER]).plan
    assert p.turns == (
        Turn("user", "a\n\nb"),
        Turn(
            "assistant",
            "Let me look.",
            (ToolCall("toolu_1", "get_weather", '{"city": "P"}'),),
            reasoning="hm",  # the thinking goes to the model's template, which keeps or drops it
        ),
        Turn("tool", "sunny", tool_call_id="toolu_1", name="get_weather"),
        Turn("tool", "Error: no", tool_call_id="toolu_2", name=None),
        Turn("user", "Thanks"),
    )
    assert p.tools.mode == "auto" and p.tools.parallel


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "text", "text": "x"}, {"type": "image", "source": {}}], "content[1].type"),
        ([{"type": "document", "source": {}}], "content[0].type"),
        (
            [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}],
            "content[0].content[0].type",
        ),
        ([{"type": "tool_use", "id": "t", "name": "n", "input": {}}], "content[0].type"),
        ([{"type": "text", "text": 3}], "content[0].text"),
        ([{"type": ["not", "hashable"]}], "content[0].type"),
    ],
)
def test_bad_blocks_name_their_place(content: list, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        plan_of(messages=[{"role": "user", "content": content}])
    assert exc.value.param == "messages[0]." + param
    assert exc.value.message.startswith("messages[0]." + param)


def test_tool_choice_modes() -> None:
    assert plan_of(tools=[WEATHER, TIME]).plan.tools.mode == "auto"
    none = plan_of(tools=[WEATHER], tool_choice={"type": "none"}).plan
    assert none.tools.mode == "none" and none.grammar is None
    anyone = plan_of(tools=[WEATHER, TIME], tool_choice={"type": "any"}).plan
    assert anyone.tools.mode == "required" and len(anyone.tools.tools) == 2 and anyone.grammar
    named = plan_of(
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
    ).plan
    assert named.tools.mode == "named" and [t.name for t in named.tools.tools] == ["get_time"]
    assert not named.tools.parallel and named.grammar
    with pytest.raises(InvalidRequest, match="tool_choice"):
        plan_of(tool_choice={"type": "any"})
    with pytest.raises(InvalidRequest, match=r"tool_choice\.name"):
        plan_of(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})


def test_hosted_tools_are_left_out() -> None:
    hosted = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    t = plan_of(tools=[*hosted, {**WEATHER, "type": "custom"}])
    assert [tool.name for tool in t.plan.tools.tools] == ["get_weather"]
    assert t.ignored_tools == ("web_search_20250305", "bash_20250124", "text_editor_20250728")
    with pytest.raises(InvalidRequest, match="input_schema"):
        plan_of(tools=[{"name": "x"}])
    with pytest.raises(InvalidRequest, match=r"tools\[0\]\.type"):
        plan_of(tools=[{"type": ["x"], "name": "x"}])


def test_output_format_is_a_grammar() -> None:
    fmt = {"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"}
    assert plan_of(output_config=fmt).plan.grammar
    assert plan_of(output_config={"effort": "high"}).plan.grammar is None
    with pytest.raises(InvalidRequest, match=r"output_config\.format"):
        plan_of(output_config=fmt, tools=[WEATHER], tool_choice={"type": "any"})


def test_accepted_and_refused_fields() -> None:
    plan_of(
        metadata={"user_id": "u"},
        thinking={"type": "adaptive"},
        context_management={"edits": []},
        service_tier="auto",
        container=None,
        mcp_servers=[],
        cache_control={"type": "ephemeral"},
    )
    with pytest.raises(UnsupportedParameter):
        plan_of(mcp_servers=[{"type": "url", "url": "http://x", "name": "x"}])
    with pytest.raises(UnknownParameter) as exc:
        plan_of(frobnicate=1)
    assert exc.value.param == "frobnicate"
    with pytest.raises(InvalidRequest, match="budget_tokens"):
        plan_of(thinking={"type": "enabled"})
    with pytest.raises(InvalidRequest, match="stop_sequences"):
        plan_of(stop_sequences=[" "])


def test_prefill_is_refused_but_counted() -> None:
    messages = [*HI, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(InvalidRequest, match="prefill"):
        plan_of(messages=messages)
    counted = translate(STATE, CountTokensRequest(messages=messages)).plan
    assert counted.turns[-1] == Turn("assistant", "Hello")
    with pytest.raises(UnknownParameter, match="max_tokens"):
        translate(STATE, CountTokensRequest(messages=HI, max_tokens=3))


# -- render ---------------------------------------------------------------------------------


def test_stop_reasons_and_usage() -> None:
    plan = plan_of(stop_sequences=["END"]).plan
    calls = (ToolCall("call_abc", "f", '{"a": 1}'),)

    def reason(finish: str, stop: str | None = None) -> tuple:
        return render.stop_reason(Finished(0, finish, "", calls, stop_string=stop), plan)

    assert reason("tool_calls") == ("tool_use", None)
    assert reason("length") == ("max_tokens", None)
    assert reason("stop") == ("end_turn", None)
    assert reason("stop", "END") == ("stop_sequence", "END")
    assert reason("stop", "### User:") == ("end_turn", None)  # the prompt format's own stop
    assert render.usage(10, 3, 4) == {
        "input_tokens": 6,
        "output_tokens": 3,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }
    block = render.tool_use(calls[0])
    assert block == {"type": "tool_use", "id": "toolu_abc", "name": "f", "input": {"a": 1}}
    assert json.dumps(render.tool_use(calls[0], whole=False)["input"]) == "{}"


def test_system_messages_among_the_messages_are_kept_in_place() -> None:
    body = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            ],
        }
    )
    turns = turns_of(body.messages)
    assert [(t.role, t.content) for t in turns] == [("user", "hi"), ("system", "be brief")]
