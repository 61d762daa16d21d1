"""A plan's conversation (or raw prompt) → the prompt tokens, in one place.

Order of precedence for the format: a GPT4All `%1`/`%2` template from the request, else the
catalog's for that model; else the model's own Jinja chat template (GGUF metadata); else a plain
`### User:` format. Tools reach the model through its template when the template knows them,
else through a system-prompt section (see `core.tools`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine import templates
from ..errors import InvalidRequest
from ..library.registry import Loaded
from . import reasoning
from . import tools as tooling
from .plan import Plan, Turn


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    stops: tuple[str, ...]  # extra stop strings the format needs
    template: str  # which format made it: the %1 template, "gguf:tokenizer.chat_template", …
    thinking: reasoning.Resolved = reasoning.NO_REASONING  # how the reply's thinking is handled


def build(
    loaded: Loaded,
    plan: Plan,
    server_template: str = "%1",
    reasoning_tags: tuple[str, str] | None = None,
    reasoning_budget: int | None = None,
) -> Prompt:
    """The prompt for a plan: its turns through the chat format, or its raw prompt.
    `reasoning_tags` and `reasoning_budget`: the server's settings for reasoning models."""
    if plan.turns:
        fmt = reasoning.detect(loaded.model.chat_template, reasoning_tags)
        thinking = reasoning.resolve(
            fmt,
            plan.reasoning,
            loaded.entry.id,
            grammar=plan.grammar is not None,
            default_budget=reasoning_budget,
        )
        return _chat(loaded, plan, thinking)
    return _completion(loaded, plan, server_template)


def completion_template(loaded: Loaded, prompt_template: str | None, server: str) -> str:
    """The completions prompt template: the request's, else the catalog's, else the server's."""
    if prompt_template is not None:
        return prompt_template
    return loaded.defaults.prompt_template or server


def _completion(loaded: Loaded, plan: Plan, server_template: str) -> Prompt:
    model = loaded.model
    if isinstance(plan.prompt, tuple):
        model.check_tokens(list(plan.prompt), plan.limits.prompt_param)
        return Prompt(list(plan.prompt), (), "tokens")
    text = plan.prompt or ""
    if plan.raw:
        template = "raw"
    else:
        template = completion_template(loaded, plan.prompt_template, server_template)
        text = templates.apply_prompt_template(template, text)
    tokens = model.tokenize(text)
    if not tokens:
        raise InvalidRequest("empty prompt", param=plan.limits.prompt_param)
    return Prompt(tokens, (), template)


def chat_defaults(
    loaded: Loaded, messages: list[dict[str, Any]], prompt_template: str | None
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """A chat request with the catalog's defaults filled in where it gives none:
    (messages, GPT4All prompt template, raw system prompt for that template)."""
    d = loaded.defaults
    template = prompt_template or d.prompt_template
    if any(m.get("role") == "system" for m in messages):
        return messages, template, None
    if template:
        system = d.system_prompt or (d.system_message + "\n" if d.system_message else None)
        return messages, template, system
    system = d.system_message or d.system_prompt
    if system:
        return [{"role": "system", "content": system}, *messages], None, None
    return messages, None, None


def _chat(loaded: Loaded, plan: Plan, thinking: reasoning.Resolved) -> Prompt:
    model = loaded.model
    stops = thinking.fmt.stops if thinking.fmt else ()
    native = tooling.template_knows_tools(model.chat_template) and not plan.prompt_template
    offered = list(plan.tools.offered)
    messages = [_message(t, native) for t in plan.turns]
    if offered and not native:
        messages = _with_fallback_tools(messages, offered, plan.tools.parallel)
    messages, prompt_template, system_prompt = chat_defaults(loaded, messages, plan.prompt_template)
    if prompt_template:
        text = templates.render_gpt4all(prompt_template, messages, system_prompt)
        return Prompt(model.tokenize(text + thinking.prefill), stops, prompt_template, thinking)
    if model.chat_template:
        extra: dict[str, Any] = {**thinking.template_vars, **dict(plan.template_vars)}
        if offered and native:
            extra["tools"] = [t.as_openai() for t in offered]
        text = templates.render_jinja(
            model.chat_template,
            messages,
            bos_token=model.bos_text,
            eos_token=model.eos_text,
            **extra,
        )
        template = "gguf:tokenizer.chat_template"
        return Prompt(model.tokenize(text + thinking.prefill), stops, template, thinking)
    text = templates.render_plain(messages)
    return Prompt(
        model.tokenize(text + thinking.prefill), templates.PLAIN_STOPS + stops, "plain", thinking
    )


def _message(turn: Turn, native_tools: bool) -> dict[str, Any]:
    """A turn as a chat-template message. Tool calls and results pass through to templates that
    know them, else they are written in the fallback text format."""
    if turn.role == "tool":
        if native_tools:
            return {
                "role": "tool",
                "content": turn.content,
                "tool_call_id": turn.tool_call_id,
                "name": turn.name,
            }
        return {"role": "user", "content": f"<tool_response>\n{turn.content}\n</tool_response>"}
    if turn.role == "assistant" and turn.tool_calls:
        if native_tools:
            thought = (
                {"reasoning_content": turn.reasoning, "thinking": turn.reasoning}
                if turn.reasoning
                else {}
            )
            return {
                "role": "assistant",
                "content": turn.content,
                **thought,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in turn.tool_calls
                ],
            }
        text = turn.content + "".join(
            tooling.render_call_text(c.name, c.arguments) for c in turn.tool_calls
        )
        return {"role": "assistant", "content": text}
    if turn.role == "assistant" and turn.reasoning:
        # the names reasoning templates read it by (Qwen3 and others, gpt-oss); a template
        # that drops earlier thinking (R1) reads neither
        return {
            "role": "assistant",
            "content": turn.content,
            "reasoning_content": turn.reasoning,
            "thinking": turn.reasoning,
        }
    return {"role": turn.role, "content": turn.content}


def _with_fallback_tools(
    messages: list[dict[str, Any]], tools: list[tooling.Tool], parallel: bool
) -> list[dict[str, Any]]:
    section = tooling.fallback_system_prompt(tools, parallel)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": messages[0]["content"] + "\n\n" + section}
        return [first, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]
