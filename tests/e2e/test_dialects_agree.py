"""One conversation at temperature 0 gives the same text, and the same token counts, in every
dialect, streamed or not: Chat Completions, Responses, Anthropic Messages and Ollama's chat."""

from __future__ import annotations

from typing import Any

import anthropic
import ollama
import openai
import pytest

from conftest import ServerProcess

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a helpful assistant. Answer in one sentence."
USER = "Why is the sky blue?"
N = 24


def _openai_chat(c: openai.OpenAI, stream: bool) -> tuple[str, int]:
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    if not stream:
        r = c.chat.completions.create(model=M, messages=messages, temperature=0, max_tokens=N)
        assert r.usage is not None
        return r.choices[0].message.content or "", r.usage.prompt_tokens
    text, prompt = [], 0
    for chunk in c.chat.completions.create(
        model=M,
        messages=messages,
        temperature=0,
        max_tokens=N,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            prompt = chunk.usage.prompt_tokens
    return "".join(text), prompt


def _responses(c: openai.OpenAI, stream: bool) -> tuple[str, int]:
    ask: Any = {"model": M, "instructions": SYSTEM, "input": USER, "temperature": 0}
    if not stream:
        r = c.responses.create(**ask, max_output_tokens=N)
        assert r.usage is not None
        return r.output_text, r.usage.input_tokens
    text, prompt = [], 0
    for event in c.responses.create(**ask, max_output_tokens=N, stream=True):
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        if event.type in ("response.completed", "response.incomplete"):
            assert event.response.usage is not None
            prompt = event.response.usage.input_tokens
    return "".join(text), prompt


def _anthropic(c: anthropic.Anthropic, stream: bool) -> tuple[str, int]:
    ask: Any = {
        "model": M,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": USER}],
        "max_tokens": N,
        "extra_body": {"temperature": 0},
    }
    if not stream:
        m = c.messages.create(**ask)
    else:
        with c.messages.stream(**ask) as s:
            streamed = "".join(s.text_stream)
            m = s.get_final_message()
        assert streamed == "".join(b.text for b in m.content if b.type == "text")
    text = "".join(b.text for b in m.content if b.type == "text")
    return text, m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)


def _ollama(c: ollama.Client, stream: bool) -> tuple[str, int]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    options = {"temperature": 0, "num_predict": N}
    if not stream:
        r = c.chat(model=M, messages=messages, options=options)
        return r.message.content or "", r.prompt_eval_count or 0
    text, prompt = [], 0
    for part in c.chat(model=M, messages=messages, options=options, stream=True):
        text.append(part.message.content or "")
        if part.done:
            prompt = part.prompt_eval_count or 0
    return "".join(text), prompt


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_same_text_and_prompt_tokens_in_every_dialect(server: ServerProcess, stream: bool) -> None:
    with (
        openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0) as oai,
        anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as claude,
        ollama.Client(host=server.base_url, timeout=300) as local,
    ):
        answers = {
            "chat": _openai_chat(oai, stream),
            "responses": _responses(oai, stream),
            "messages": _anthropic(claude, stream),
            "ollama": _ollama(local, stream),
        }
    texts = {name: text for name, (text, _) in answers.items()}
    prompts = {name: tokens for name, (_, tokens) in answers.items()}
    assert texts["chat"].strip(), texts
    assert len(set(texts.values())) == 1, texts
    assert len(set(prompts.values())) == 1 and prompts["chat"] > 0, prompts


def test_connectivity_checks_get_a_2xx(server: ServerProcess) -> None:
    """Claude Code sends `HEAD /` before its first request; Ollama clients ask `/api/version`."""
    import httpx

    assert httpx.head(server.base_url + "/", timeout=30).status_code == 200
    assert httpx.get(server.base_url + "/api/version", timeout=30).json()["version"]
