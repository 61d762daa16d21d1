"""Reasoning models, end to end: copies of the embedded model carrying an R1-distill, a Qwen3 and
a harmony (gpt-oss) chat template, served for real, driven through each API's official client.

The server runs with `--reasoning-budget 12`: every reply thinks for exactly 12 tokens (the
closing marker included), then the server closes the thinking and the model answers. The tags
are written by the engine as tokens and split from the stream like any model output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from conftest import HTTP, ServerProcess
from fixtures.reasoning_models import make_models

pytestmark = pytest.mark.e2e

R1, QWEN3, HARMONY = "r1-distill.gguf", "qwen3.gguf", "harmony.gguf"
PLAIN = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUDGET = 12
ASK = [{"role": "user", "content": "What is two plus two?"}]
#: an answer that ends by construction: one object with one integer (at most 16 digits)
SUM_SCHEMA = {
    "name": "sum",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"sum": {"type": "integer"}},
        "required": ["sum"],
        "additionalProperties": False,
    },
}
MARKUP = ("<think>", "</think>", "<|channel|>", "<|message|>", "<|end|>", "<|start|>")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def server(
    embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("reasoning")
    models = home / "models"
    make_models(embedded_model, models)
    (models / PLAIN).symlink_to(embedded_model)
    srv = ServerProcess(
        models_dir=models,
        log_path=home / "server.log",
        args=["--reasoning-budget", str(BUDGET), "--parallel", "2", "--max-loaded-models", "4"],
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def _clean(text: str | None) -> None:
    for tag in MARKUP:
        assert tag not in (text or ""), text


def _chat(oai: openai.OpenAI, model: str, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 40)
    return oai.chat.completions.create(model=model, messages=ASK, temperature=0, **kw)


# -- Chat Completions ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", [R1, QWEN3, HARMONY])
def test_chat_keeps_thinking_apart(oai: openai.OpenAI, model: str) -> None:
    r = _chat(oai, model)
    msg = r.choices[0].message
    thinking = msg.reasoning_content
    assert thinking and msg.reasoning == thinking
    assert msg.content  # the model answered after the server closed its thinking
    _clean(thinking)
    _clean(msg.content)
    assert thinking not in msg.content
    usage = r.usage
    assert usage.completion_tokens_details.reasoning_tokens == BUDGET
    assert usage.completion_tokens > BUDGET

    # streamed: the same pieces, each in its field, and never a tag
    chunks = list(
        oai.chat.completions.create(
            model=model,
            messages=ASK,
            temperature=0,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed_thinking, streamed_answer = [], []
    for c in chunks:
        if not c.choices:
            continue
        d = c.choices[0].delta
        if getattr(d, "reasoning_content", None):
            assert d.reasoning == d.reasoning_content and not d.content
            streamed_thinking.append(d.reasoning_content)
        if d.content:
            streamed_answer.append(d.content)
    assert "".join(streamed_thinking) == thinking
    assert "".join(streamed_answer) == msg.content
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == BUDGET


def _tokens(server: ServerProcess, model: str, text: str) -> list[int]:
    r = HTTP.post(server.base_url + "/tokenize", json={"model": model, "content": text})
    return list(r.json()["tokens"])


#: Logit biases tried on the close marker's tokens, weakest first: greedy words differ with the
#: CPU's kernels, and so does the bias after which the model writes the marker itself.
BIASES = [b / 10 for b in range(50, 151)]


@pytest.mark.parametrize(
    ("model", "close"), [(R1, "</think>"), (QWEN3, "</think>"), (HARMONY, "<|end|>")]
)
def test_the_model_closes_its_thinking_itself(
    oai: openai.OpenAI, server: ServerProcess, model: str, close: str
) -> None:
    """A logit bias on the close marker's tokens makes the model write it after a few words: the
    marker, sampled token by token, is held back from the stream and ends the thinking; the JSON
    schema's grammar takes over after it. The schema has one integer, so the answer ends within
    the token limit. The weakest bias (of `BIASES`) after which the model thinks a few words,
    closes the thinking and answers is the one checked, streamed and not (greedy: the same)."""
    ids = _tokens(server, model, close)

    def ask(bias: float) -> dict[str, Any]:
        return {
            "max_tokens": 60,
            "response_format": {"type": "json_schema", "json_schema": SUM_SCHEMA},
            "logit_bias": {str(t): bias for t in ids},
            "extra_body": {"reasoning_budget": 100},
        }

    for bias in BIASES:
        kw = ask(bias)
        r = _chat(oai, model, **kw)
        choice = r.choices[0]
        if (
            choice.finish_reason == "stop"
            and choice.message.reasoning_content
            and choice.message.content
        ):
            break
    else:
        pytest.fail(f"no logit bias of {BIASES[0]}-{BIASES[-1]} made {model} close its thinking")
    thinking = r.choices[0].message.reasoning_content
    _clean(thinking)
    assert r.usage.completion_tokens_details.reasoning_tokens < 60  # the model closed it
    assert isinstance(json.loads(r.choices[0].message.content)["sum"], int)
    chunks = list(
        oai.chat.completions.create(model=model, messages=ASK, temperature=0, stream=True, **kw)
    )
    pieces = [getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices]
    assert "".join(p for p in pieces if p) == thinking
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer == r.choices[0].message.content


def test_chat_budget_stops_thinking_at_n(oai: openai.OpenAI) -> None:
    for n in (5, 20):
        r = _chat(oai, QWEN3, extra_body={"reasoning_budget": n}, max_tokens=60)
        assert r.usage.completion_tokens_details.reasoning_tokens == n
        assert r.choices[0].message.reasoning_content


def test_cut_while_thinking_says_length_with_empty_content(
    oai: openai.OpenAI, server: ServerProcess
) -> None:
    """The model may neither close its thinking nor end its turn (a bias of -100 on the close
    marker's tokens and the end-of-turn tokens), so the token limit falls inside the thinking."""
    banned = _tokens(server, R1, "</think><|im_end|><|endoftext|>")
    r = _chat(
        oai,
        R1,
        extra_body={"reasoning_budget": 500},
        max_tokens=10,
        logit_bias={str(t): -100 for t in banned},
    )
    choice = r.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == ""
    assert choice.message.reasoning_content
    assert r.usage.completion_tokens_details.reasoning_tokens == 10 == r.usage.completion_tokens


@pytest.mark.parametrize("model", [R1, QWEN3, HARMONY])
def test_thinking_turned_off(oai: openai.OpenAI, model: str) -> None:
    r = _chat(oai, model, reasoning_effort="none")
    msg = r.choices[0].message
    assert getattr(msg, "reasoning_content", None) is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    _clean(msg.content)


def test_enable_thinking_false_uses_the_template_switch(oai: openai.OpenAI) -> None:
    off = _chat(oai, QWEN3, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    on = _chat(oai, QWEN3)
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    # the template itself wrote the empty thinking block into the prompt
    assert off.usage.prompt_tokens > on.usage.prompt_tokens


def test_efforts(oai: openai.OpenAI) -> None:
    low = _chat(oai, HARMONY, reasoning_effort="low", max_tokens=8)
    assert low.choices[0].message.reasoning_content
    with pytest.raises(openai.BadRequestError) as exc:
        _chat(oai, HARMONY, reasoning_effort="minimal")
    assert exc.value.body["param"] == "reasoning_effort"
    assert "minimal" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError) as exc:
        _chat(oai, PLAIN, reasoning_effort="high")
    assert exc.value.body["param"] == "reasoning_effort"
    assert "does not support thinking" in exc.value.body["message"]
    assert _chat(oai, PLAIN, reasoning_effort="none", max_tokens=4).choices[0].message.content


def test_json_mode_after_thinking(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    for model in (R1, HARMONY):
        r = _chat(oai, model, max_tokens=80, response_format={"type": "json_object"})
        assert r.choices[0].message.reasoning_content
        json.loads(r.choices[0].message.content)
        r = _chat(
            oai,
            model,
            max_tokens=80,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": schema, "strict": True},
            },
        )
        assert r.choices[0].message.reasoning_content
        assert isinstance(json.loads(r.choices[0].message.content)["answer"], int)


def test_tool_call_after_thinking(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=QWEN3,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.reasoning_content
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    _clean(choice.message.reasoning_content)


def test_history_is_kept_or_dropped_as_the_template_says(oai: openai.OpenAI) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }

    def prompt_tokens(model: str, thought: str | None) -> int:
        turn: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
        if thought is not None:
            turn["reasoning_content"] = thought
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            turn,
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        r = oai.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER], max_tokens=1, temperature=0
        )
        return r.usage.prompt_tokens

    thought = "I should look up the weather for the user in Paris."
    # Qwen3 keeps the thinking of a tool-call chain after the last user message ...
    assert prompt_tokens(QWEN3, thought) > prompt_tokens(QWEN3, None)
    # ... R1 drops earlier thinking
    assert prompt_tokens(R1, thought) == prompt_tokens(R1, None)


# -- Responses ----------------------------------------------------------------------------------


def test_responses_reasoning_item(oai: openai.OpenAI) -> None:
    # the answer is one integer in a schema: it ends (status completed, which the SDK's stream
    # helper needs for its final response) within the limit whatever the model's words
    text = {"format": {"type": "json_schema", **SUM_SCHEMA}}
    r = oai.responses.create(
        model=R1,
        input="What is two plus two?",
        temperature=0,
        max_output_tokens=40,
        reasoning={"summary": "auto"},
        text=text,
    )
    assert r.status == "completed"
    assert isinstance(json.loads(r.output_text)["sum"], int)
    kinds = [o.type for o in r.output]
    assert kinds == ["reasoning", "message"]
    item = r.output[0]
    thinking = item.content[0].text
    assert thinking and item.summary[0].text == thinking
    _clean(thinking)
    _clean(r.output_text)
    assert r.output_text and thinking not in r.output_text
    assert r.usage.output_tokens_details.reasoning_tokens == BUDGET
    assert r.reasoning.summary == "auto"

    # an effort without a budget of its own (`high`): cut by the limit while still thinking
    cut = oai.responses.create(
        model=R1, input="Hi", max_output_tokens=10, reasoning={"effort": "high"}
    )
    assert cut.status == "incomplete" and cut.reasoning.effort == "high"
    assert [(o.type, o.status) for o in cut.output] == [("reasoning", "incomplete")]
    assert cut.output_text == ""
    assert cut.usage.output_tokens_details.reasoning_tokens == 10

    # streamed: the reasoning events, then the text
    with oai.responses.stream(
        model=R1, input="What is two plus two?", temperature=0, max_output_tokens=40, text=text
    ) as s:
        events = list(s)
        final = s.get_final_response()
    types = [e.type for e in events]
    assert "response.reasoning_text.delta" in types
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert deltas == thinking
    assert final.output_text == r.output_text
    assert [o.type for o in final.output] == ["reasoning", "message"]

    # the output sent back as input (reasoning item included) is accepted
    again = oai.responses.create(
        model=R1,
        input=[
            *[o.model_dump(exclude_none=True) for o in r.output],
            {"role": "user", "content": "And 3+3?"},
        ],
        max_output_tokens=16,
        temperature=0,
    )
    assert again.status in ("completed", "incomplete")
    # and a stored chain continues with it
    chained = oai.responses.create(
        model=R1, previous_response_id=r.id, input="And 3+3?", max_output_tokens=16
    )
    assert chained.output[0].type == "reasoning"


def test_responses_json_after_thinking(oai: openai.OpenAI) -> None:
    r = oai.responses.create(
        model=QWEN3,
        input="Give me a JSON object.",
        temperature=0,
        max_output_tokens=80,
        text={"format": {"type": "json_object"}},
    )
    assert r.output[0].type == "reasoning"
    json.loads(r.output_text)


def test_responses_effort_on_a_model_that_does_not_reason_is_ignored(oai: openai.OpenAI) -> None:
    r = oai.responses.create(
        model=PLAIN, input="Hi", max_output_tokens=4, reasoning={"effort": "medium"}
    )
    assert [o.type for o in r.output] == ["message"]
    assert r.usage.output_tokens_details.reasoning_tokens == 0


# -- Anthropic Messages -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("model", [R1, QWEN3, HARMONY])
def test_messages_thinking_blocks(claude: anthropic.Anthropic, model: str) -> None:
    kw: dict[str, Any] = {
        "model": model,
        "max_tokens": 40,
        "extra_body": {"temperature": 0},
        "messages": ASK,
        "thinking": {"type": "enabled", "budget_tokens": 10},
    }
    m = claude.messages.create(**kw)
    assert [b.type for b in m.content] == ["thinking", "text"]
    thinking, text = m.content[0].thinking, m.content[1].text
    assert thinking and text and m.content[0].signature
    _clean(thinking)
    _clean(text)

    with claude.messages.stream(**kw) as s:
        events = list(s)
        final = s.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == thinking
    assert any(d.type == "signature_delta" for d in deltas)
    assert "".join(d.text for d in deltas if d.type == "text_delta") == text
    assert [b.type for b in final.content] == ["thinking", "text"]

    # the reply (thinking block included) goes back as history without a 400
    again = claude.messages.create(
        **{
            **kw,
            "messages": [
                *ASK,
                {"role": "assistant", "content": [b.model_dump() for b in m.content]},
                {"role": "user", "content": "And three plus three?"},
            ],
        }
    )
    assert again.content[0].type == "thinking"


def test_messages_thinking_disabled_and_errors(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model=R1,
        max_tokens=20,
        messages=ASK,
        thinking={"type": "disabled"},
        extra_body={"temperature": 0},
    )
    assert [b.type for b in m.content] == ["text"]
    _clean(m.content[0].text)
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.create(
            model=R1, max_tokens=20, messages=ASK, thinking={"type": "enabled", "budget_tokens": 20}
        )
    assert exc.value.body["type"] == "error"
    assert "budget_tokens" in exc.value.body["error"]["message"]
    # a model that does not reason answers without a thinking block
    m = claude.messages.create(
        model=PLAIN, max_tokens=8, messages=ASK, thinking={"type": "enabled", "budget_tokens": 4}
    )
    assert [b.type for b in m.content] == ["text"]


# -- Ollama -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ol(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url, timeout=300) as c:
        yield c


@pytest.mark.parametrize("model", [R1, QWEN3, HARMONY])
def test_ollama_thinking(ol: ollama.Client, model: str) -> None:
    opts = {"temperature": 0, "num_predict": 40}
    r = ol.chat(model=model, messages=ASK, think=True, options=opts)
    thinking, content = r.message.thinking, r.message.content
    assert thinking and content
    _clean(thinking)
    _clean(content)
    streamed = list(ol.chat(model=model, messages=ASK, think=True, options=opts, stream=True))
    assert "".join(c.message.thinking or "" for c in streamed) == thinking
    assert "".join(c.message.content or "" for c in streamed) == content

    g = ol.generate(model=model, prompt="What is two plus two?", think=True, options=opts)
    assert g.thinking and g.response
    _clean(g.response)

    off = ol.chat(model=model, messages=ASK, think=False, options=opts)
    assert not off.message.thinking
    _clean(off.message.content)


def test_ollama_think_levels_and_errors(ol: ollama.Client, server: ServerProcess) -> None:
    r = ol.chat(
        model=HARMONY, messages=ASK, think="low", options={"temperature": 0, "num_predict": 8}
    )
    assert r.message.thinking
    with pytest.raises(ollama.ResponseError) as exc:
        ol.chat(model=PLAIN, messages=ASK, think=True)
    assert exc.value.status_code == 400 and "does not support thinking" in exc.value.error
    bad = HTTP.post(
        server.base_url + "/api/chat",
        json={"model": R1, "messages": ASK, "think": "max", "stream": False},
    )
    assert bad.status_code == 400 and "think" in bad.json()["error"]
    assert "thinking" in ol.show(R1).capabilities
    assert "thinking" not in (ol.show(PLAIN).capabilities or [])


# -- counting -----------------------------------------------------------------------------------


def test_metrics_count_reasoning_tokens(oai: openai.OpenAI, server: ServerProcess) -> None:
    _chat(oai, R1, max_tokens=20)
    text = httpx.get(server.base_url + "/metrics").text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("gpt4all_api_reasoning_tokens_total") and R1 in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= BUDGET


def test_auto_tools_the_grammar_cannot_enforce_are_still_served(oai: openai.OpenAI) -> None:
    """`minimum` cannot be enforced by a grammar: in `auto` mode such tools are offered all the
    same (a forced call of one is refused by name)."""
    tool = {
        "type": "function",
        "function": {
            "name": "wait",
            "parameters": {
                "type": "object",
                "properties": {"seconds": {"type": "integer", "minimum": 1}},
            },
        },
    }
    r = oai.chat.completions.create(
        model=PLAIN, messages=ASK, tools=[tool], max_tokens=8, temperature=0
    )
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    with pytest.raises(openai.BadRequestError) as exc:
        oai.chat.completions.create(
            model=PLAIN, messages=ASK, tools=[tool], tool_choice="required", max_tokens=8
        )
    assert "minimum" in exc.value.body["message"]
