"""A forced tool call cut short by max_tokens: `length`, no answer text, and the call as far as
it got (as OpenAI returns one) for the APIs that can show it."""

from gpt4all_api.core import reply, tools
from gpt4all_api.core.plan import ToolPlan
from gpt4all_api.core.run import Choice

WEATHER = tools.Tool(
    "get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}}
)
PLAN = ToolPlan((WEATHER,), "required")


def cut(text: str) -> reply.Finished:
    return reply.final(PLAN, Choice(0, 0, [text], finish_reason="length"))


def test_a_cut_call_is_length_with_the_call_so_far() -> None:
    end = cut('{"name": "get_weather", "arguments": {"city": "Par')
    assert end.finish == "length" and end.content is None and end.calls == ()
    (call,) = end.cut_calls
    assert call.name == "get_weather" and call.arguments == '{"city": "Par'


def test_a_call_cut_in_its_name_is_no_call() -> None:
    end = cut('{"name": "get_wea')
    assert end.finish == "length" and end.content is None and end.cut_calls == ()


def test_a_whole_call_is_unchanged() -> None:
    c = Choice(
        0, 0, ['{"name": "get_weather", "arguments": {"city": "Paris"}}'], finish_reason="stop"
    )
    end = reply.final(PLAN, c)
    assert (
        end.finish == "tool_calls"
        and end.cut_calls == ()
        and end.calls[0].arguments == '{"city": "Paris"}'
    )


def test_a_call_whole_but_for_its_end_of_turn_is_a_call() -> None:
    end = cut('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert end.finish == "tool_calls" and end.cut_calls == () and len(end.calls) == 1
