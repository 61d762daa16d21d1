"""An Anthropic Messages request → a plan (all of its validation happens here).

Anthropic's error body carries no `param`, so each message here starts with the place it is about
(`messages[0].content[1].type: …`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ...api.openai_common import check_unknown
from ...core import tools as tooling
from ...core.plan import Limits, Plan, Reasoning, Sampling, ToolCall, ToolPlan, Turn, call_name
from ...engine.grammar import schema_grammar
from ...errors import InvalidRequest, UnsupportedParameter
from ...state import ServerState
from .protocol import CountTokensRequest, Message, MessagesRequest

#: A system block Claude Code sends that changes on every request: left out of the prompt, so
#: that the prompt's cached prefix stays usable.
BILLING_HEADER = "x-anthropic-billing-header"
#: Blocks of a past assistant turn that never reach the prompt (we do not produce them).
_DROPPED = ("thinking", "redacted_thinking")  # a tuple: `type` may be unhashable JSON
#: How the text blocks of one message (or of the system prompt) are joined.
JOIN = "\n\n"


@dataclass(frozen=True)
class Translated:
    plan: Plan
    ignored_tools: tuple[str, ...]  # hosted tool types left out of the prompt


def _invalid(param: str, message: str, unsupported: bool = False) -> InvalidRequest:
    kind = UnsupportedParameter if unsupported else InvalidRequest
    return kind(f"{param}: {message}", param=param)


def _unsupported_block(kind: Any, where: str) -> InvalidRequest:
    return _invalid(
        f"{where}.type",
        f"content blocks of type {kind!r} are not supported here (text, tool_use and "
        "tool_result only: this server has no image, document or hosted-tool input)",
        unsupported=True,
    )


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text", "a text block needs a string 'text'")
    return text


def _blocks(content: str | list[dict[str, Any]], where: str) -> list[tuple[dict[str, Any], str]]:
    """A message's content as (block, place) pairs; a string is one text block."""
    if isinstance(content, str):
        return [({"type": "text", "text": content}, where)]
    return [(b, f"{where}[{j}]") for j, b in enumerate(content)]


def system_text(system: str | list[dict[str, Any]] | None) -> str:
    """The system prompt; a billing-header block is left out."""
    if system is None or isinstance(system, str):
        return system or ""
    parts = []
    for i, block in enumerate(system):
        if block.get("type") != "text":
            raise _invalid(f"system[{i}].type", "system blocks must be text blocks")
        text = _text(block, f"system[{i}]")
        if not text.startswith(BILLING_HEADER):
            parts.append(text)
    return JOIN.join(parts)


def _tool_result(block: dict[str, Any], where: str, before: list[Turn]) -> Turn:
    """A `tool_result` block as a `tool` turn (named after the call it answers)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise _invalid(f"{where}.tool_use_id", "a tool_result needs a tool_use_id")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        parts = []
        for k, inner in enumerate(content):
            if not isinstance(inner, dict) or inner.get("type") != "text":
                kind = inner.get("type") if isinstance(inner, dict) else None
                raise _unsupported_block(kind, f"{where}.content[{k}]")
            parts.append(_text(inner, f"{where}.content[{k}]"))
        text = JOIN.join(parts)
    else:
        raise _invalid(f"{where}.content", "must be a string or a list of text blocks")
    text = f"Error: {text}" if block.get("is_error") else text
    return Turn("tool", text, tool_call_id=call_id, name=call_name(before, call_id))


def _tool_use(block: dict[str, Any], where: str) -> ToolCall:
    call_id, name, args = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _invalid(where, "a tool_use block needs a string 'id' and 'name'")
    if not isinstance(args, dict):
        raise _invalid(f"{where}.input", "must be an object")
    return ToolCall(call_id, name, json.dumps(args, ensure_ascii=False))


def turns_of(messages: list[Message]) -> list[Turn]:
    """Messages → turns. A user message's `tool_result` blocks become `tool` turns (in their
    place among its text); an assistant message is one turn with its `tool_use` calls."""
    turns: list[Turn] = []
    for i, m in enumerate(messages):
        texts: list[str] = []
        calls: list[ToolCall] = []
        thought: list[str] = []
        for block, where in _blocks(m.content, f"messages[{i}].content"):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(_text(block, where))
            elif kind == "tool_use" and m.role == "assistant":
                calls.append(_tool_use(block, where))
            elif kind == "tool_result" and m.role == "user":
                if texts:
                    turns.append(Turn("user", JOIN.join(texts)))
                    texts = []
                turns.append(_tool_result(block, where, turns))
            elif kind == "thinking" and m.role == "assistant":
                text = block.get("thinking")
                if not isinstance(text, str):
                    raise _invalid(f"{where}.thinking", "a thinking block needs its text")
                thought.append(text)  # the model's template keeps or drops it
            elif kind in _DROPPED and m.role == "assistant":
                continue  # redacted: nothing to give back
            elif kind in ("tool_use", "tool_result"):
                raise _invalid(f"{where}.type", f"{kind} blocks cannot be in a {m.role} message")
            else:
                raise _unsupported_block(kind, where)
        if texts or calls or m.role == "assistant":
            turns.append(Turn(m.role, JOIN.join(texts), tuple(calls), reasoning="".join(thought)))
    return turns


def _tools(body: CountTokensRequest) -> tuple[list[tooling.Tool], list[str]]:
    """Client tools (no `type`, or `custom`), and the types of hosted tools left out."""
    functions: list[tooling.Tool] = []
    ignored: list[str] = []
    for i, tool in enumerate(body.tools or []):
        kind = tool.get("type")
        if kind is not None and not isinstance(kind, str):
            raise _invalid(f"tools[{i}].type", "must be a string")
        if kind not in (None, "custom"):
            ignored.append(kind)
            continue
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _invalid(f"tools[{i}].name", "a tool needs a name")
        if not isinstance(schema, dict):
            raise _invalid(f"tools[{i}].input_schema", "must be a JSON schema object")
        functions.append(tooling.Tool(name, str(tool.get("description") or ""), schema))
    return functions, ignored


def _tool_plan(body: CountTokensRequest, functions: list[tooling.Tool]) -> ToolPlan:
    choice = body.tool_choice
    parallel = not (choice and choice.disable_parallel_tool_use)
    if choice is None or choice.type == "auto":
        return ToolPlan(tuple(functions), "auto" if functions else "none", parallel)
    if choice.type == "none":
        return ToolPlan(tuple(functions), "none", parallel)
    if choice.type == "any":
        if not functions:
            raise _invalid("tool_choice", "type 'any' needs at least one (client) tool")
        return ToolPlan(tuple(functions), "required", parallel)
    named = [t for t in functions if t.name == choice.name]
    if not named:
        raise _invalid("tool_choice.name", f"no client tool is named {choice.name!r}")
    return ToolPlan(tuple(named), "named", parallel)


def _grammar(body: CountTokensRequest, tools: ToolPlan) -> str | None:
    fmt = body.output_config.format if body.output_config else None
    if tools.forced:
        if fmt is not None:
            raise _invalid("output_config.format", "cannot be combined with a forced tool call")
        return tooling.call_grammar(list(tools.tools))
    if fmt is None:
        return None
    return schema_grammar(fmt.schema_, "output_config.format.schema")


_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def _reasoning(body: CountTokensRequest) -> Reasoning:
    """`thinking` (and `output_config.effort`): steers a model that reasons; a model that does
    not answers without thinking blocks (agents ask every model for thinking)."""
    t = body.thinking
    effort = body.output_config.effort if body.output_config else None
    if effort is not None and effort not in _EFFORTS:
        raise _invalid("output_config.effort", f"must be one of {', '.join(_EFFORTS)}")
    ask = Reasoning(effort=_EFFORTS.get(effort or ""), param="thinking", strict=False)
    if t is None or t.type in ("adaptive", "between_tools"):
        return ask
    if t.type == "disabled":
        return replace(ask, enabled=False, effort=None)
    if isinstance(body, MessagesRequest) and t.budget_tokens >= body.max_tokens:
        raise _invalid("thinking.budget_tokens", "must be less than max_tokens")
    return replace(ask, enabled=True, budget=t.budget_tokens)


def _check_supported(body: CountTokensRequest) -> None:
    if body.mcp_servers:
        raise _invalid("mcp_servers", "this server cannot connect to MCP servers", True)
    if isinstance(body, MessagesRequest):
        for i, s in enumerate(body.stop_sequences or []):
            if not s.strip():
                raise _invalid(f"stop_sequences[{i}]", "must hold non-whitespace characters")
        if body.messages[-1].role == "assistant":
            raise _invalid(
                f"messages[{len(body.messages) - 1}].role",
                "prefill (a final assistant message) is not supported; end with a user message",
            )


def translate(state: ServerState, body: CountTokensRequest) -> Translated:
    """The plan for a Messages (or count_tokens) request."""
    check_unknown(state, body)
    _check_supported(body)
    system = system_text(body.system)
    turns = ([Turn("system", system)] if system else []) + turns_of(body.messages)
    functions, ignored = _tools(body)
    tools = _tool_plan(body, functions)
    plan = Plan(
        model=body.model,
        turns=tuple(turns),
        tools=tools,
        grammar=_grammar(body, tools),
        reasoning=_reasoning(body),
    )
    if isinstance(body, MessagesRequest):
        plan = replace(
            plan,
            sampling=Sampling(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p),
            stop=tuple(body.stop_sequences or ()),
            limits=Limits(body.max_tokens, "max_tokens", "messages", clip=True),
            stream=bool(body.stream),
        )
    return Translated(plan, tuple(dict.fromkeys(ignored)))
