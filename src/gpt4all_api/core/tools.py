"""Function calling: offering tools to the model, constraining and reading its calls.

Models whose chat template knows `tools` get them through the template. Others get the
documented fallback: a system-prompt section listing the functions, and calls written as
`<tool_call>{"name": …, "arguments": {…}}</tool_call>`. With `tool_choice` `required` or a named
function the reply is grammar-constrained to one such call whose arguments match the schema.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from ..engine.grammar import schema_grammar
from ..jsontext import json_text

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.S)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def template_knows_tools(source: str | None) -> bool:
    return bool(source) and "tools" in source  # type: ignore[operator]


def fallback_system_prompt(tools: list[Tool], parallel: bool) -> str:
    listing = "\n".join(
        json.dumps(
            {"name": t.name, "description": t.description, "parameters": t.parameters},
            ensure_ascii=False,
        )
        for t in tools
    )
    many = (
        " You may call several functions, one <tool_call> block each."
        if parallel
        else " Call at most one function."
    )
    return (
        "You can call the following functions. Each is given as JSON with the JSON Schema of "
        f"its arguments:\n{listing}\n"
        "To call a function, reply with only "
        f'{CALL_OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}'
        f"{CALL_CLOSE}.{many} If no function is needed, answer normally."
    )


def call_schema(tools: list[Tool]) -> dict[str, Any]:
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def call_grammar(tools: list[Tool]) -> str:
    """A grammar for exactly one call (as bare JSON) of one of `tools`."""
    return schema_grammar(call_schema(tools), "tools", prop_order=["name", "arguments"])


def auto_call_grammar(tools: list[Tool], parallel: bool) -> str:
    """In `auto` mode, the grammar of what follows a `<tool_call>` the model opens: one call
    whose arguments match its schema, the close tag, any further calls, and then the end of the
    reply. The engine applies it from the open tag on (prose before it is free)."""
    calls = call_grammar(tools)
    body = re.sub(r"^root ::=", "tool-call-json ::=", calls, count=1, flags=re.M)
    rest = f'call-ws tool-call-json call-ws "{CALL_CLOSE}"'
    more = f' ( call-ws "{CALL_OPEN}" {rest} )*' if parallel else ""
    return f"root ::= {rest}{more}\ncall-ws ::= [ \\t\\n]{{0,4}}\n{body}"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(data: Any, tools: dict[str, Tool]) -> dict[str, Any] | None:
    if not isinstance(data, dict) or data.get("name") not in tools:
        return None
    args = data.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return {
        "id": new_call_id(),
        "type": "function",
        "function": {"name": data["name"], "arguments": json_text(args)},
    }


def parse_forced(text: str, tools: list[Tool]) -> list[dict[str, Any]]:
    """The grammar-constrained reply: one JSON call."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    call = _call(data, {t.name: t for t in tools})
    return [call] if call else []


_CUT_CALL = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*', re.S)


def parse_cut(text: str, tools: list[Tool]) -> list[dict[str, Any]]:
    """A forced call cut short by the token limit, as far as it got (as OpenAI returns one):
    the function once its name is whole, and its arguments' JSON text so far (which does not
    parse). Nothing when the name itself was cut."""
    m = _CUT_CALL.match(text)
    if m is None:
        return []
    name = json.loads(m.group(1))
    if name not in {t.name for t in tools}:
        return []
    function = {"name": name, "arguments": text[m.end() :]}
    return [{"id": new_call_id(), "type": "function", "function": function}]


def parse_auto(text: str, tools: list[Tool]) -> tuple[str | None, list[dict[str, Any]]]:
    """Free text that may hold `<tool_call>` blocks: (remaining content, calls)."""
    by_name = {t.name: t for t in tools}
    calls = []
    for m in _CALL_RE.finditer(text):
        try:
            call = _call(json.loads(m.group(1)), by_name)
        except json.JSONDecodeError:
            call = None
        if call is None:
            return text, []  # not a well-formed call: the model answered in prose
        calls.append(call)
    if not calls:
        return text, []
    rest = _CALL_RE.sub("", text).strip()
    return rest or None, calls


def may_become_call(text: str) -> bool:
    """While streaming in `auto` mode: could this reply still turn out to be a tool call?"""
    head = text.lstrip()
    return CALL_OPEN.startswith(head) or head.startswith(CALL_OPEN)


def render_call_text(name: str, arguments: str | dict[str, Any]) -> str:
    """A past call, as the fallback format writes it in history."""
    if isinstance(arguments, str):
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    body = json_text({"name": name, "arguments": arguments})
    return f"{CALL_OPEN}{body}{CALL_CLOSE}"
