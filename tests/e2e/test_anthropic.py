"""The Anthropic Messages API against the real server and model, through the `anthropic` SDK
(its typed parsing of messages and stream events is part of the check)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: This SDK has no `temperature` argument any more; the API still takes the field.
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
HI = [{"role": "user", "content": "Say hi."}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture()
def claude(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=server.base_url, api_key="x", max_retries=0, timeout=300
    ) as c:
        yield c


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_create(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model=M, max_tokens=12, messages=HI, **GREEDY)
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == M
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    u = m.usage
    assert u.output_tokens <= 12 and u.cache_creation_input_tokens == 0
    assert u.input_tokens + (u.cache_read_input_tokens or 0) > 0


def test_stream_gives_the_created_text(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(model=M, max_tokens=16, messages=HI, **GREEDY)
    with claude.messages.stream(model=M, max_tokens=16, messages=HI, **GREEDY) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == _text(final) == _text(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)


def test_stream_events_in_order(server: ServerProcess) -> None:
    body = {"model": M, "max_tokens": 6, "stream": True, "messages": HI, "temperature": 0}
    with HTTP.stream("POST", server.base_url + "/v1/messages?beta=true", json=body) as r:
        assert r.status_code == 200
        names = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model=M,
        max_tokens=40,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        **GREEDY,
    )
    assert m.stop_reason == "tool_use"
    call = next(b for b in m.content if b.type == "tool_use")
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    jsonschema.validate(call.input, WEATHER["input_schema"])
    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}],
        },
    ]
    answer = claude.messages.create(
        model=M,
        max_tokens=24,
        messages=history,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        **GREEDY,
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert _text(answer).strip()


def test_streamed_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=M,
        max_tokens=40,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        **GREEDY,
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    call = final.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    jsonschema.validate(call.input, WEATHER["input_schema"])


def test_hosted_tools_are_left_out_and_named(server: ServerProcess) -> None:
    body = {
        "model": M,
        "messages": HI,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    base = server.base_url + "/v1/messages"
    plain = HTTP.post(base + "/count_tokens", json={"model": M, "messages": HI}).json()
    r = HTTP.post(base + "/count_tokens", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == plain
    assert r.headers["x-gpt4all-api-ignored-tools"] == "web_search_20250305"


def test_count_tokens_matches_create(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Count these words for me, please."}]
    counted = claude.messages.count_tokens(model=M, messages=messages, system="Be brief.")
    m = claude.messages.create(
        model=M, max_tokens=2, messages=messages, system="Be brief.", **GREEDY
    )
    assert counted.input_tokens == m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)


def test_billing_header_is_left_out_of_the_prompt(claude: anthropic.Anthropic) -> None:
    prompt = {"type": "text", "text": "You are terse."}
    billing = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0.1; cch=1234;"}
    with_header = claude.messages.count_tokens(model=M, messages=HI, system=[billing, prompt])
    without = claude.messages.count_tokens(model=M, messages=HI, system=[prompt])
    as_string = claude.messages.count_tokens(model=M, messages=HI, system="You are terse.")
    assert with_header.input_tokens == without.input_tokens == as_string.input_tokens


def test_max_tokens_past_the_context_is_clipped(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=M, max_tokens=32000, messages=HI, **GREEDY) as s:
        first = next(iter(s.text_stream))  # accepted: a 200 stream (hang up after one piece)
    assert first


def test_stop_sequence(claude: anthropic.Anthropic) -> None:
    free = _text(claude.messages.create(model=M, max_tokens=20, messages=HI, **GREEDY))
    words = free.split()
    assert len(words) >= 3, free
    stop = words[2]
    m = claude.messages.create(model=M, max_tokens=20, messages=HI, stop_sequences=[stop], **GREEDY)
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop
    assert free.startswith(_text(m)) and stop not in _text(m)


def test_greedy_text_equals_chat_completions(server: ServerProcess, claude: Any) -> None:
    system, user = "You answer in one sentence.", "What is the sea?"
    m = claude.messages.create(
        model=M,
        max_tokens=24,
        system=system,
        messages=[{"role": "user", "content": user}],
        **GREEDY,
    )
    chat = HTTP.post(
        server.base_url + "/v1/chat/completions",
        json={
            "model": M,
            "max_tokens": 24,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        },
    ).json()
    assert _text(m) == chat["choices"][0]["message"]["content"]
    prompt = chat["usage"]["prompt_tokens"]
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == prompt


# -- errors: Anthropic's body, the right status ---------------------------------------------


def _error(r: Any, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"model": M, "messages": HI}, "max_tokens"),
        ({"model": M, "messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"model": M, "messages": HI, "max_tokens": 4, "frobnicate": 1}, "frobnicate"),
        ({"model": M, "messages": HI, "max_tokens": 4, "temperature": 1.5}, "temperature"),
        (
            {
                "model": M,
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image", "source": {"type": "url", "url": "http://x/y"}},
                        ],
                    }
                ],
            },
            "messages[0].content[1].type",
        ),
        (
            {"model": M, "max_tokens": 4, "messages": HI, "mcp_servers": [{"name": "x"}]},
            "mcp_servers",
        ),
        ({"model": M, "max_tokens": 4, "messages": ASK, "tool_choice": {"type": "any"}}, "any"),
    ],
)
def test_invalid_requests(server: ServerProcess, body: dict, named: str) -> None:
    r = HTTP.post(server.base_url + "/v1/messages", json=body)
    assert named in _error(r, 400, "invalid_request_error")


def test_claude_code_fields_are_accepted(server: ServerProcess) -> None:
    body = {
        "model": M,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 1},  # below max_tokens, as Anthropic asks
        "context_management": {"edits": []},
        "output_config": {"effort": "low"},
        "service_tier": "auto",
        "container": None,
        "mcp_servers": [],
        "temperature": 1,
    }
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "anything-2025-01-01"}
    url = server.base_url + "/v1/messages?beta=true"
    assert HTTP.post(url, json=body, headers=headers).status_code == 200


def test_unknown_model_is_not_found(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=HI)
    assert exc.value.body["error"]["type"] == "not_found_error"


@pytest.fixture(scope="module")
def keyed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=tmp_path_factory.mktemp("anthropic-keyed") / "server.log",
        args=["--api-key", "the-key"],
    )
    srv.start()
    yield srv
    srv.stop()


def test_api_key(keyed: ServerProcess) -> None:
    wrong = anthropic.Anthropic(base_url=keyed.base_url, api_key="wrong", max_retries=0)
    with wrong, pytest.raises(anthropic.AuthenticationError) as exc:
        wrong.messages.count_tokens(model=M, messages=HI)
    assert exc.value.status_code == 401
    assert exc.value.body["error"]["type"] == "authentication_error"
    with anthropic.Anthropic(base_url=keyed.base_url, api_key="the-key", max_retries=0) as c:
        assert c.messages.count_tokens(model=M, messages=HI).input_tokens > 0
