"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from ..engine import templates
from ..engine.grammar import json_object_grammar, schema_grammar
from ..engine.request import FinishEvent, GenerationRequest, TextEvent
from ..errors import InvalidRequest
from ..library.registry import Loaded, chat_defaults
from ..protocol.chat import ChatCompletionRequest, ToolCall
from ..state import ServerState
from . import tools as tooling
from .generation import (
    Choice,
    Run,
    budget,
    check_thread_count,
    check_unknown,
    load_model,
    new_id,
    sampling_params,
)
from .logprob_format import chat_logprobs
from .streaming import sse_response

router = APIRouter()


def render_prompt(
    loaded: Loaded,
    messages: list[dict[str, Any]],
    prompt_template: str | None,
    tools: list[tooling.Tool] | None = None,
) -> tuple[str, tuple[str, ...], str]:
    """The prompt text, extra stop strings, and which template made it."""
    model = loaded.model
    messages, prompt_template, system_prompt = chat_defaults(loaded, messages, prompt_template)
    if prompt_template:
        text = templates.render_gpt4all(prompt_template, messages, system_prompt)
        return text, (), prompt_template
    if model.chat_template:
        extra: dict[str, Any] = {}
        if tools and tooling.template_knows_tools(model.chat_template):
            extra["tools"] = [t.as_openai() for t in tools]
        text = templates.render_jinja(
            model.chat_template,
            messages,
            bos_token=model.bos_text,
            eos_token=model.eos_text,
            **extra,
        )
        return text, (), "gguf:tokenizer.chat_template"
    return templates.render_plain(messages), templates.PLAIN_STOPS, "plain"


def template_messages(body: ChatCompletionRequest, native_tools: bool) -> list[dict[str, Any]]:
    """Messages for the chat template. `developer` counts as `system`. Tool calls and tool
    results pass through to templates that know them, else in the fallback text format."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(body.messages):
        if m.model_extra:
            name = next(iter(m.model_extra))
            raise InvalidRequest(
                f"Unrecognized field in message: '{name}'", param=f"messages[{i}].{name}"
            )
        text = m.text(i)
        calls = list(m.tool_calls or [])
        if m.function_call is not None:
            calls.append(ToolCall(id=f"legacy_{i}", function=m.function_call))
        if m.role in ("tool", "function"):
            if native_tools:
                out.append(
                    {
                        "role": "tool",
                        "content": text,
                        "tool_call_id": m.tool_call_id,
                        "name": m.name,
                    }
                )
            else:
                out.append(
                    {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}
                )
        elif m.role == "assistant" and calls:
            if native_tools:
                out.append(
                    {
                        "role": "assistant",
                        "content": text,
                        "tool_calls": [
                            {
                                "id": c.id,
                                "type": "function",
                                "function": {
                                    "name": c.function.name,
                                    "arguments": c.function.arguments,
                                },
                            }
                            for c in calls
                        ],
                    }
                )
            else:
                text += "".join(
                    tooling.render_call_text(c.function.name, c.function.arguments) for c in calls
                )
                out.append({"role": "assistant", "content": text})
        else:
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": text})
    return out


def _tools(body: ChatCompletionRequest) -> list[tooling.Tool]:
    mode = body.tool_mode()
    if mode == "none":
        return []
    named = body.named_tool()
    return [
        tooling.Tool(f.name, f.description or "", f.parameters or {"type": "object"})
        for f in body.function_defs()
        if named is None or f.name == named
    ]


def _with_fallback_tools(
    messages: list[dict[str, Any]], tools: list[tooling.Tool], parallel: bool
) -> list[dict[str, Any]]:
    section = tooling.fallback_system_prompt(tools, parallel)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": messages[0]["content"] + "\n\n" + section}
        return [first, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


def _grammar(body: ChatCompletionRequest, tools: list[tooling.Tool]) -> str | None:
    if body.tool_mode() in ("required", "named"):
        return tooling.call_grammar(tools)
    rf = body.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return json_object_grammar()
    assert rf.json_schema is not None and rf.json_schema.schema_ is not None
    return schema_grammar(rf.json_schema.schema_, "response_format.json_schema.schema")


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    body.check_supported()
    check_thread_count(state, body)
    tools = _tools(body)
    grammar = _grammar(body, tools)  # 400 on a bad schema before anything is loaded
    loaded = await load_model(state, body)
    native = tooling.template_knows_tools(loaded.model.chat_template) and not body.prompt_template
    messages = template_messages(body, native_tools=native)
    if tools and not native:
        messages = _with_fallback_tools(messages, tools, body.parallel_tool_calls is not False)
    text, extra_stops, template_name = render_prompt(loaded, messages, body.prompt_template, tools)
    tokens = loaded.model.tokenize(text)
    asked = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    n_tokens = budget(
        state,
        loaded,
        len(tokens),
        asked,
        prompt_param="messages",
        max_param="max_completion_tokens"
        if body.max_completion_tokens is not None
        else "max_tokens",
    )
    sampling = sampling_params(body, loaded, grammar=grammar)
    run = Run(
        loaded,
        [
            GenerationRequest(
                prompt_tokens=tokens,
                max_tokens=n_tokens,
                sampling=sampling,
                stop=body.stop_list + extra_stops,
                prompt_chunk=body.prompt_batch_size or state.settings.prompt_batch_size,
                n=body.n or 1,
                logprobs=(body.top_logprobs or 0) if body.logprobs else None,
            )
        ],
    )
    run.id = new_id("chatcmpl")
    if body.stream:
        return sse_response(_stream(state, run, body, template_name, tools))
    choices = await run.collect(request)
    return {
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": loaded.entry.id,
        "system_fingerprint": None,
        "choices": [_choice(run.loaded, body, tools, c) for c in choices],
        "usage": run.usage(state, template_name),
    }


def _reply(
    body: ChatCompletionRequest, tools: list[tooling.Tool], text: str, finish: str | None
) -> tuple[dict[str, Any], str | None]:
    """The assistant message and finish reason for a finished choice's text."""
    mode = body.tool_mode()
    content: str | None = text
    calls: list[dict[str, Any]] = []
    if mode in ("required", "named") and finish == "stop":
        calls = tooling.parse_forced(text, tools)
        content = None if calls else text
    elif mode == "auto":
        content, calls = tooling.parse_auto(text, tools)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if not calls:
        return message, finish
    if body.legacy_functions:
        message["function_call"] = calls[0]["function"]
        return message, "function_call"
    message["tool_calls"] = calls
    return message, "tool_calls"


def _choice(
    loaded: Loaded, body: ChatCompletionRequest, tools: list[tooling.Tool], c: Choice
) -> dict[str, Any]:
    message, finish = _reply(body, tools, "".join(c.text), c.finish_reason)
    return {
        "index": c.index,
        "message": message,
        "logprobs": chat_logprobs(loaded.model, c.logprobs) if body.logprobs else None,
        "finish_reason": finish,
        "references": [],
    }


async def _stream(
    state: ServerState,
    run: Run,
    body: ChatCompletionRequest,
    template_name: str,
    tools: list[tooling.Tool],
) -> AsyncIterator[dict[str, Any]]:
    model = run.loaded.entry.id
    mode = body.tool_mode()
    held = {c.index: "" for c in run.choices}  # text kept back while it may be a tool call
    streaming = {c.index: mode != "auto" for c in run.choices}

    def chunk(index: int, delta: dict[str, Any], finish: str | None, lp: Any = None) -> dict:
        return {
            "id": run.id,
            "object": "chat.completion.chunk",
            "created": run.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}],
        }

    for c in run.choices:
        yield chunk(c.index, {"role": "assistant", "content": ""}, None)
    async for ev in run.events():
        if isinstance(ev, TextEvent):
            lp = None
            if body.logprobs and ev.logprob is not None:
                lp = chat_logprobs(run.loaded.model, [ev.logprob])
            if mode in ("required", "named"):
                if lp is not None:
                    yield chunk(ev.index, {}, None, lp)
                continue  # the call is sent whole once it is complete
            if not streaming[ev.index]:
                held[ev.index] += ev.text
                if tooling.may_become_call(held[ev.index]):
                    if lp is not None:
                        yield chunk(ev.index, {}, None, lp)
                    continue
                streaming[ev.index] = True
                text, held[ev.index] = held[ev.index], ""
            else:
                text = ev.text
            if text or lp is not None:
                yield chunk(ev.index, {"content": text} if text else {}, None, lp)
        elif isinstance(ev, FinishEvent):
            c = run.choices[ev.index]
            finish = ev.reason
            if (mode == "auto" and not streaming[ev.index]) or mode in ("required", "named"):
                message, finish = _reply(body, tools, "".join(c.text), ev.reason)
                delta: dict[str, Any] = {}
                if message.get("content"):
                    delta["content"] = message["content"]
                if "tool_calls" in message:
                    delta["tool_calls"] = [
                        {"index": i, **call} for i, call in enumerate(message["tool_calls"])
                    ]
                if "function_call" in message:
                    delta["function_call"] = message["function_call"]
                if delta:
                    yield chunk(ev.index, delta, None)
            yield chunk(ev.index, {}, finish)
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
