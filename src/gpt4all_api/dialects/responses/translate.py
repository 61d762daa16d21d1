"""A Responses API request → a plan (all of its validation happens here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ...api.openai_common import check_unknown
from ...core import tools as tooling
from ...core.plan import (
    Limits,
    Plan,
    Reasoning,
    Sampling,
    ToolCall,
    ToolPlan,
    Turn,
    call_name,
    parse_keep_alive,
)
from ...engine.grammar import json_object_grammar, schema_grammar
from ...errors import InvalidRequest, UnsupportedParameter
from ...protocol.common import refuse_unless
from ...state import ServerState
from .protocol import ResponsesRequest

#: Hosted tools this server cannot run: left out of the prompt when offered beside functions.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "computer_use_preview",
        "computer_use",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "custom",
        "namespace",
    }
)
_ROLES = {"user", "assistant", "system", "developer"}
_TEXT_PARTS = {"input_text", "output_text", "text", "summary_text", "reasoning_text"}


@dataclass(frozen=True)
class Translated:
    plan: Plan
    input_items: list[dict[str, Any]]  # the request's input, as stored for `input_items`
    ignored_tools: tuple[str, ...]  # hosted tool types left out of the prompt


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of parts", param=where)
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind == "refusal":
            out.append(str(part.get("refusal", "")))
        else:
            raise UnsupportedParameter(
                f"content parts of type '{kind}' are not supported (text only; this server has "
                "no vision, audio or file inputs)",
                param=f"{where}[{j}].type",
            )
    return "".join(out)


def _items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return value


def input_turns(items: list[dict[str, Any]]) -> tuple[Turn, ...]:
    """Input items → turns. Function calls join the assistant turn before them."""
    turns: list[Turn] = []
    thought = ""  # a reasoning item's text, for the assistant turn that follows it
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest("each input item must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidRequest(
                    f"role must be one of {sorted(_ROLES)}, got {role!r}", param=f"{where}.role"
                )
            text = _text_of(item.get("content"), f"{where}.content")
            if role == "assistant":
                turns.append(Turn("assistant", text, reasoning=thought))
            else:
                turns.append(Turn("system" if role == "developer" else role, text))
            thought = ""
        elif kind == "function_call":
            call = _call_of(item, where)
            if turns and turns[-1].role == "assistant" and not thought:
                last = turns.pop()
                turns.append(replace(last, tool_calls=(*last.tool_calls, call)))
            else:
                turns.append(Turn("assistant", "", (call,), reasoning=thought))
            thought = ""
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise InvalidRequest("function_call_output needs a call_id", param=where)
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"{where}.output")
            turns.append(Turn("tool", text, tool_call_id=call_id, name=call_name(turns, call_id)))
        elif kind == "reasoning":
            # earlier thinking sent back: the model's template keeps or drops it
            thought += _reasoning_text(item, where)
        else:
            raise UnsupportedParameter(
                f"input items of type '{kind}' are not supported", param=f"{where}.type"
            )
    return tuple(turns)


def _reasoning_text(item: dict[str, Any], where: str) -> str:
    """A reasoning item's text: its `content` (reasoning_text), else its summary."""
    for key in ("content", "summary"):
        parts = item.get(key)
        if parts:
            return _text_of(parts, f"{where}.{key}")
    return ""


def _call_of(item: dict[str, Any], where: str) -> ToolCall:
    name, args = item.get("name"), item.get("arguments", "{}")
    call_id = item.get("call_id") or item.get("id")
    if not isinstance(name, str) or not isinstance(call_id, str):
        raise InvalidRequest("function_call needs a name and a call_id", param=where)
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    return ToolCall(call_id, name, args)


def _tools(body: ResponsesRequest) -> tuple[list[tooling.Tool], list[str]]:
    functions: list[tooling.Tool] = []
    ignored: list[str] = []
    for i, tool in enumerate(body.tools or []):
        kind = tool.get("type")
        if kind == "function":
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest("a function tool needs a name", param=f"tools[{i}].name")
            params = tool.get("parameters") or {"type": "object"}
            if not isinstance(params, dict):
                raise InvalidRequest(
                    "parameters must be a JSON schema object", param=f"tools[{i}].parameters"
                )
            functions.append(tooling.Tool(name, str(tool.get("description") or ""), params))
        elif kind == "file_search":
            continue  # run by the server before generation (`localdocs.responses`)
        elif kind in HOSTED_TOOLS:
            ignored.append(kind)
        else:
            raise UnsupportedParameter(
                f"tools of type '{kind}' are not supported", param=f"tools[{i}].type"
            )
    return functions, ignored


def _tool_plan(body: ResponsesRequest, functions: list[tooling.Tool]) -> ToolPlan:
    parallel = body.parallel_tool_calls is not False
    choice = body.tool_choice
    if choice is None or choice == "auto":
        return ToolPlan(tuple(functions), "auto" if functions else "none", parallel)
    if choice == "none":
        return ToolPlan(tuple(functions), "none", parallel)
    if choice == "required":
        if not functions:
            raise InvalidRequest(
                "tool_choice 'required' needs at least one function tool", param="tool_choice"
            )
        return ToolPlan(tuple(functions), "required", parallel)
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            named = [t for t in functions if t.name == choice.get("name")]
            if not named:
                raise InvalidRequest(
                    f"tool_choice names an unknown function {choice.get('name')!r}",
                    param="tool_choice",
                )
            return ToolPlan(tuple(named), "named", parallel)
        if kind == "file_search":  # the search always runs before generation
            return ToolPlan(tuple(functions), "none", parallel)
        if kind in HOSTED_TOOLS:
            raise UnsupportedParameter(
                f"tool_choice requires the '{kind}' tool, which this server cannot run",
                param="tool_choice",
            )
        if kind == "allowed_tools":
            raise UnsupportedParameter(
                "tool_choice 'allowed_tools' is not supported", param="tool_choice"
            )
    raise InvalidRequest(f"invalid tool_choice {choice!r}", param="tool_choice")


def _grammar(body: ResponsesRequest, tools: ToolPlan) -> str | None:
    if tools.forced:
        return tooling.call_grammar(list(tools.tools))
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.schema_ is None:
        raise InvalidRequest("a json_schema format needs a schema", param="text.format.schema")
    return schema_grammar(fmt.schema_, "text.format.schema")


def _reasoning(body: ResponsesRequest) -> Reasoning:
    """`reasoning.effort`: steers a model that reasons; a model that does not answers without
    (agents send an effort to every model)."""
    effort = body.reasoning.effort if body.reasoning else None
    if effort == "xhigh":
        effort = "high"
    return Reasoning(effort=effort, param="reasoning.effort", strict=False)


def _check_supported(body: ResponsesRequest) -> None:
    refuse_unless(body.background, False, "background", "responses run in the foreground")
    refuse_unless(body.conversation, (), "conversation", "use previous_response_id")
    refuse_unless(body.prompt, (), "prompt", "no stored prompt templates")
    if body.top_logprobs:
        raise UnsupportedParameter(
            "top_logprobs is not supported on /v1/responses", param="top_logprobs"
        )


def translate(
    state: ServerState, body: ResponsesRequest, history: tuple[Turn, ...] = ()
) -> Translated:
    """The plan for a Responses request. `history`: the stored conversation it continues."""
    check_unknown(state, body)
    _check_supported(body)
    items = _items(body.input)
    new_turns = input_turns(items)
    if not new_turns and not history:
        raise InvalidRequest("input must hold at least one item", param="input")
    functions, ignored = _tools(body)
    tools = _tool_plan(body, functions)
    system = (Turn("system", body.instructions),) if body.instructions else ()
    plan = Plan(
        model=body.model,
        turns=(*system, *history, *new_turns),
        sampling=Sampling(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            repeat_penalty=body.repeat_penalty,
            seed=body.seed,
        ),
        limits=Limits(
            max_tokens=body.max_output_tokens,
            max_param="max_output_tokens",
            prompt_param="input",
            clip=True,
            truncate=body.truncation == "auto",
        ),
        grammar=_grammar(body, tools),
        tools=tools,
        stream=bool(body.stream),
        keep_alive=parse_keep_alive(body.keep_alive),
        reasoning=_reasoning(body),
    )
    return Translated(plan, items, tuple(dict.fromkeys(ignored)))
