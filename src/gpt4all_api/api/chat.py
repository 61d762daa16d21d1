"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from ..engine import templates
from ..engine.request import GenerationRequest, TextEvent
from ..library.registry import Loaded, chat_defaults
from ..protocol.chat import ChatCompletionRequest
from ..state import ServerState
from .generation import (
    Run,
    budget,
    check_thread_count,
    check_unknown,
    load_model,
    new_id,
    sampling_params,
)
from .streaming import sse_response

router = APIRouter()


def render_prompt(
    loaded: Loaded, messages: list[dict[str, str]], prompt_template: str | None
) -> tuple[str, tuple[str, ...], str]:
    """The prompt text, extra stop strings, and which template made it."""
    model = loaded.model
    messages, prompt_template, system_prompt = chat_defaults(loaded, messages, prompt_template)
    if prompt_template:
        text = templates.render_gpt4all(prompt_template, messages, system_prompt)
        return text, (), prompt_template
    if model.chat_template:
        text = templates.render_jinja(
            model.chat_template, messages, bos_token=model.bos_text, eos_token=model.eos_text
        )
        return text, (), "gguf:tokenizer.chat_template"
    return templates.render_plain(messages), templates.PLAIN_STOPS, "plain"


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    body.check_supported()
    check_thread_count(state, body)
    messages = body.plain_messages()
    loaded = await load_model(state, body)
    text, extra_stops, template_name = render_prompt(loaded, messages, body.prompt_template)
    tokens = loaded.model.tokenize(text)
    asked = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    n = budget(
        state,
        loaded,
        len(tokens),
        asked,
        prompt_param="messages",
        max_param="max_completion_tokens"
        if body.max_completion_tokens is not None
        else "max_tokens",
    )
    run = Run(
        loaded,
        [
            GenerationRequest(
                prompt_tokens=tokens,
                max_tokens=n,
                sampling=sampling_params(body, loaded),
                stop=body.stop_list + extra_stops,
                prompt_chunk=body.prompt_batch_size or state.settings.prompt_batch_size,
            )
        ],
    )
    run.id = new_id("chatcmpl")
    if body.stream:
        return sse_response(_stream(state, run, body, template_name))
    choices = await run.collect(request)
    return {
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": loaded.entry.id,
        "system_fingerprint": None,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": "".join(c.text), "refusal": None},
                "logprobs": None,
                "finish_reason": c.finish_reason,
                "references": [],
            }
            for c in choices
        ],
        "usage": run.usage(state, template_name),
    }


async def _stream(
    state: ServerState, run: Run, body: ChatCompletionRequest, template_name: str
) -> AsyncIterator[dict[str, Any]]:
    model = run.loaded.entry.id

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": run.id,
            "object": "chat.completion.chunk",
            "created": run.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }

    for c in run.choices:
        yield chunk(c.index, {"role": "assistant", "content": ""}, None)
    async for ev in run.events():
        if isinstance(ev, TextEvent):
            if ev.text:
                yield chunk(ev.index, {"content": ev.text}, None)
        else:
            yield chunk(ev.index, {}, ev.reason)
    if body.include_usage:
        yield {
            "id": run.id,
            "object": "chat.completion.chunk",
            "created": run.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [],
            "usage": run.usage(state, template_name),
        }
