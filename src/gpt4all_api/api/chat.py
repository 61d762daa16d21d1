"""POST /v1/chat/completions: the OpenAI Chat Completions dialect on the core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from ..core import reply
from ..core import tools as tooling
from ..core.plan import Limits, Plan, Reasoning, ToolCall, ToolPlan, Turn, parse_keep_alive
from ..core.run import Run, start
from ..engine.grammar import json_object_grammar, schema_grammar
from ..errors import InvalidRequest
from ..localdocs import references as localdocs
from ..protocol.chat import ChatCompletionRequest
from ..protocol.chat import ToolCall as WireToolCall
from ..state import ServerState
from .logprob_format import chat_logprobs
from .openai_common import check_thread_count, check_unknown, openai_usage, sampling_of
from .streaming import sse_response

router = APIRouter()


# -- translate ------------------------------------------------------------------------------


def turns_of(body: ChatCompletionRequest) -> tuple[Turn, ...]:
    """The conversation; `developer` counts as `system`, legacy `function` as `tool`."""
    out: list[Turn] = []
    for i, m in enumerate(body.messages):
        if m.model_extra:
            name = next(iter(m.model_extra))
            raise InvalidRequest(
                f"Unrecognized field in message: '{name}'", param=f"messages[{i}].{name}"
            )
        text = m.text(i)
        calls = list(m.tool_calls or [])
        if m.function_call is not None:
            calls.append(WireToolCall(id=f"legacy_{i}", function=m.function_call))
        if m.role in ("tool", "function"):
            out.append(Turn("tool", text, tool_call_id=m.tool_call_id, name=m.name))
        elif m.role == "assistant":
            out.append(
                Turn(
                    "assistant",
                    text,
                    tool_calls=tuple(
                        ToolCall(c.id, c.function.name, c.function.arguments) for c in calls
                    ),
                    reasoning=m.reasoning_content or m.reasoning or "",
                )
            )
        else:
            out.append(Turn("system" if m.role == "developer" else m.role, text))
    return tuple(out)


def _tool_plan(body: ChatCompletionRequest) -> ToolPlan:
    mode = body.tool_mode()
    named = body.named_tool()
    tools = tuple(
        tooling.Tool(f.name, f.description or "", f.parameters or {"type": "object"})
        for f in body.function_defs()
        if named is None or f.name == named
    )
    return ToolPlan(tools, mode, body.parallel_tool_calls is not False)  # type: ignore[arg-type]


def _grammar(body: ChatCompletionRequest, tools: ToolPlan) -> str | None:
    if tools.forced:
        return tooling.call_grammar(list(tools.tools))
    rf = body.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return json_object_grammar()
    assert rf.json_schema is not None and rf.json_schema.schema_ is not None
    return schema_grammar(rf.json_schema.schema_, "response_format.json_schema.schema")


def translate(state: ServerState, body: ChatCompletionRequest) -> Plan:
    """All of a chat request's validation, then its plan."""
    check_unknown(state, body)
    body.check_supported()
    check_thread_count(state, body)
    tools = _tool_plan(body)
    limited = body.max_completion_tokens is not None
    return Plan(
        model=body.model,
        turns=turns_of(body),
        prompt_template=body.prompt_template,
        sampling=sampling_of(body),
        stop=body.stop_list,
        limits=Limits(
            max_tokens=body.max_completion_tokens if limited else body.max_tokens,
            max_param="max_completion_tokens" if limited else "max_tokens",
            prompt_param="messages",
        ),
        grammar=_grammar(body, tools),  # a 400 on a bad schema before anything is loaded
        tools=tools,
        n=body.n or 1,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        stream=bool(body.stream),
        keep_alive=parse_keep_alive(body.keep_alive),
        reload=bool(body.reload),
        prompt_chunk=body.prompt_batch_size,
        prompt_lookup=body.prompt_lookup,
        reasoning=_reasoning(body),
        template_vars=tuple((body.chat_template_kwargs or {}).items()),
    )


def _reasoning(body: ChatCompletionRequest) -> Reasoning:
    """`reasoning_effort`, and `enable_thinking` among `chat_template_kwargs`."""
    kwargs = body.chat_template_kwargs or {}
    enabled = kwargs.get("enable_thinking")
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidRequest(
            "enable_thinking must be true or false", param="chat_template_kwargs.enable_thinking"
        )
    budget = body.reasoning_budget
    if body.reasoning_effort is not None:
        return Reasoning(enabled=enabled, effort=body.reasoning_effort, budget=budget)
    if budget is not None:
        return Reasoning(enabled=enabled, budget=budget, param="reasoning_budget")
    return Reasoning(enabled=enabled, param="chat_template_kwargs.enable_thinking")


# -- render ---------------------------------------------------------------------------------


def _message(body: ChatCompletionRequest, end: reply.Finished) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason of a finished choice."""
    message: dict[str, Any] = {"role": "assistant", "content": end.content, "refusal": None}
    if end.reasoning is not None:
        message |= thought(end.reasoning)
    if not (end.calls or end.cut_calls):
        return message, end.finish
    calls = [_wire_call(c) for c in end.calls or end.cut_calls]
    whole = bool(end.calls)  # else a call cut short: `length`, as OpenAI says it
    if body.legacy_functions:
        message["function_call"] = calls[0]["function"]
        return message, "function_call" if whole else end.finish
    message["tool_calls"] = calls
    return message, "tool_calls" if whole else end.finish


def thought(text: str) -> dict[str, str]:
    """A reply's thinking under both names clients read it by: `reasoning_content` (DeepSeek,
    llama-server) and `reasoning` (OpenRouter, Ollama's OpenAI API, LocalAI)."""
    return {"reasoning_content": text, "reasoning": text}


def _wire_call(c: ToolCall) -> dict[str, Any]:
    return {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    plan = translate(state, body)
    references: list[dict[str, Any]] | None = []
    if body.localdocs:
        plan, references = await localdocs.retrieve(state, body.localdocs, plan)
    run = await start(state, plan, "chatcmpl")
    template = run.prompt.template if run.prompt else None
    if plan.stream:
        return sse_response(_stream(state, run, body, plan, template, references), ready=run.ready)
    choices = await run.collect(request)
    out = []
    for c in choices:
        message, finish = _message(body, reply.final(plan.tools, c))
        out.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": chat_logprobs(run.loaded.model, c.logprobs) if body.logprobs else None,
                "finish_reason": finish,
                "references": references,
            }
        )
    return {
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": run.loaded.entry.id,
        "system_fingerprint": None,
        "choices": out,
        "usage": openai_usage(state, run, template),
    }


async def _stream(
    state: ServerState,
    run: Run,
    body: ChatCompletionRequest,
    plan: Plan,
    template: str | None,
    references: list[dict[str, Any]] | None,
) -> AsyncIterator[dict[str, Any]]:
    def chunk(index: int, delta: dict[str, Any], finish: str | None, lp: Any = None) -> dict:
        return {
            "id": run.id,
            "object": "chat.completion.chunk",
            "created": run.created,
            "model": run.loaded.entry.id,
            "system_fingerprint": None,
            "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}],
        }

    for c in run.choices:
        yield chunk(c.index, {"role": "assistant", "content": ""}, None)
    async for ev in reply.stream(run, plan.tools):
        if isinstance(ev, reply.ReasoningDelta):
            yield chunk(ev.index, thought(ev.text), None)
            continue
        if isinstance(ev, reply.TextDelta):
            lp = None
            if body.logprobs and ev.logprob is not None:
                lp = chat_logprobs(run.loaded.model, [ev.logprob])
            yield chunk(ev.index, {"content": ev.text} if ev.text else {}, None, lp)
            continue
        message, finish = _message(body, ev)
        delta: dict[str, Any] = {}
        if ev.tail:
            delta["content"] = ev.tail
        if "tool_calls" in message:
            delta["tool_calls"] = [
                {"index": i, **call} for i, call in enumerate(message["tool_calls"])
            ]
        if "function_call" in message:
            delta["function_call"] = message["function_call"]
        if delta:
            yield chunk(ev.index, delta, None)
        last = chunk(ev.index, {}, finish)
        if body.localdocs:  # as the GPT4All app: the references come with the last chunk
            last["choices"][0]["references"] = references
        yield last
    if body.include_usage:
        yield {
            "id": run.id,
            "object": "chat.completion.chunk",
            "created": run.created,
            "model": run.loaded.entry.id,
            "system_fingerprint": None,
            "choices": [],
            "usage": openai_usage(state, run, template),
        }
