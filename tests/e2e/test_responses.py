"""The OpenAI Responses API end to end: the official `openai` SDK's `responses.*` and the
`openai-agents` SDK against the real server and model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import openai
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture()
def oai(base_url: str):  # type: ignore[no-untyped-def]
    with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300) as c:
        yield c


def test_create_plain(oai: openai.OpenAI) -> None:
    r = oai.responses.create(
        model=M, input="What is the capital of France?", max_output_tokens=24, temperature=0
    )
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.output_text.strip()
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage is not None
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 24
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if r.status == "incomplete":
        assert r.incomplete_details is not None
        assert r.incomplete_details.reason == "max_output_tokens"


def test_stream_sends_the_full_event_sequence(oai: openai.OpenAI) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    final = None
    ask = {"model": M, "input": "Name a color.", "instructions": "Answer briefly."}
    for event in oai.responses.create(**ask, max_output_tokens=12, temperature=0, stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert kind in kinds
    assert final is not None and "".join(deltas) == final.output_text
    whole = oai.responses.create(**ask, max_output_tokens=12, temperature=0)
    assert whole.output_text == final.output_text
    assert whole.usage is not None and final.usage is not None
    assert whole.usage.output_tokens == final.usage.output_tokens


def test_stream_helper_gets_the_final_response(oai: openai.OpenAI) -> None:
    # greedy: a sampled answer now and then runs to the limit, and is then `incomplete`
    with oai.responses.stream(
        model=M, input="Say hi.", max_output_tokens=200, temperature=0
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == text


def test_sequence_numbers_count_up(base_url: str) -> None:
    with HTTP.stream(
        "POST",
        base_url + "/responses",
        json={"model": M, "input": "Hi", "max_output_tokens": 4, "stream": True},
    ) as r:
        assert r.status_code == 200
        numbers = [
            json.loads(line[6:])["sequence_number"]
            for line in r.iter_lines()
            if line.startswith("data: ")
        ]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 5


def test_function_tool_round_trip(oai: openai.OpenAI) -> None:
    first = oai.responses.create(
        model=M,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    second = oai.responses.create(
        model=M,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=[WEATHER],
        max_output_tokens=30,
        temperature=0,
    )
    assert second.output_text.strip()
    assert second.previous_response_id == first.id


def test_streamed_function_call_events(oai: openai.OpenAI) -> None:
    kinds: list[str] = []
    with oai.responses.stream(
        model=M,
        input="Weather in Oslo?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        temperature=0,
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(o for o in final.output if o.type == "function_call")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_chain_reuses_the_cache_and_stored_objects(oai: openai.OpenAI) -> None:
    story = "Here is a list of fruits: " + ", ".join(f"fruit number {i}" for i in range(60))
    first = oai.responses.create(
        model=M, input=story + "\nName one.", max_output_tokens=8, temperature=0
    )
    second = oai.responses.create(
        model=M,
        previous_response_id=first.id,
        input="Name another.",
        max_output_tokens=8,
        temperature=0,
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 8
    got = oai.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    items = oai.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    deleted = oai.responses.delete(second.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(second.id)


def test_store_false_keeps_nothing(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model=M, input="Hi", max_output_tokens=4, store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as err:
        oai.responses.create(model=M, input="Hi", previous_response_id=r.id, max_output_tokens=4)
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_json_schema_text_format(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = oai.responses.create(
        model=M,
        input="Make up a person.",
        text={"format": {"type": "json_schema", "name": "person", "schema": schema}},
        max_output_tokens=60,
        temperature=0,
    )
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), schema)


def test_hosted_tools_beside_functions_are_left_out(base_url: str) -> None:
    r = HTTP.post(
        base_url + "/responses",
        json={
            "model": M,
            "input": "Hi",
            "max_output_tokens": 4,
            "tools": [WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "x"}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-gpt4all-api-ignored-tools"] == "web_search, namespace"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]}, "tool_choice"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"frobnicate": 1}, "frobnicate"),
        ({"background": True}, "background"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(base_url: str, body: dict, param: str) -> None:
    r = HTTP.post(base_url + "/responses", json={"model": M, "input": "Hi", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"]


def test_unknown_model_and_response_are_404(base_url: str) -> None:
    r = HTTP.post(base_url + "/responses", json={"model": "nope", "input": "Hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = HTTP.get(base_url + "/responses/resp_missing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_max_output_tokens_is_a_cap(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model=M, input="Hi", max_output_tokens=1_000_000, temperature=0)
    assert r.status in ("completed", "incomplete")


def test_openai_agents_runner(base_url: str) -> None:
    from agents import (
        Agent,
        ModelSettings,
        Runner,
        function_tool,
        set_default_openai_api,
        set_default_openai_client,
        set_tracing_disabled,
    )

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        calls.append(city)
        return f"Sunny in {city}"

    async def main() -> object:
        set_tracing_disabled(True)
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        set_default_openai_api("responses")
        agent = Agent(
            name="assistant",
            instructions="Answer briefly.",
            model=M,
            tools=[get_weather],
            model_settings=ModelSettings(max_tokens=300, temperature=0, tool_choice="required"),
        )
        result = await Runner.run(agent, "What is the weather in Paris?", max_turns=3)
        await client.close()
        return result

    result = asyncio.run(main())
    assert len(calls) == 1
    assert isinstance(result.final_output, str) and result.final_output.strip()  # type: ignore[attr-defined]


def test_previous_response_survives_a_restart(tmp_path: Path, models_dir: Path) -> None:
    data = tmp_path / "data"
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=tmp_path / "server.log",
        env={"GPT4ALL_API_DATA_DIR": str(data)},
    )
    srv.start()
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
            first = c.responses.create(
                model=M, input="My name is Ada.", max_output_tokens=8, temperature=0
            )
    finally:
        srv.stop()
    assert (data / "responses.sqlite3").exists()
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=tmp_path / "server2.log",
        env={"GPT4ALL_API_DATA_DIR": str(data)},
    )
    srv.start()
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
            assert c.responses.retrieve(first.id).output_text == first.output_text
            second = c.responses.create(
                model=M,
                previous_response_id=first.id,
                input="What is my name?",
                max_output_tokens=8,
                temperature=0,
            )
            assert second.usage is not None
            assert second.usage.input_tokens > first.usage.input_tokens  # type: ignore[union-attr]
    finally:
        srv.stop()
