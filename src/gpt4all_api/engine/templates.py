"""Prompt formatting: the model's own Jinja2 chat template, GPT4All `%1`/`%2` templates, and a
plain fallback for models that bring neither.

Templates from model files are untrusted: they run in Jinja2's immutable sandbox.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InvalidRequest

Message = dict[str, Any]

PLAIN_ROLES = {"system": "### System", "user": "### User", "assistant": "### Assistant"}
#: Stop strings that go with the plain fallback, so the model does not write the next turn.
PLAIN_STOPS = ("\n### User:", "\n### System:")


def _raise(message: str) -> None:
    raise TemplateError(message)


@functools.lru_cache(maxsize=32)
def _compile(source: str):  # type: ignore[no-untyped-def]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(source)


def render_jinja(
    source: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """Render a Hugging Face style chat template (as stored in `tokenizer.chat_template`)."""
    try:
        template = _compile(source)
        return template.render(
            messages=list(messages),
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"the model's chat template refused the messages: {exc}", param="messages"
        ) from exc


def render_plain(messages: Sequence[Message]) -> str:
    """The fallback chat format for models without a template."""
    parts = [
        f"{PLAIN_ROLES.get(m['role'], '### ' + m['role'].title())}:\n{m['content']}\n"
        for m in messages
    ]
    return "\n".join(parts) + "\n### Assistant:\n"


def apply_prompt_template(template: str, prompt: str) -> str:
    """GPT4All style: `%1` is the user's text; a template without `%1` gets it appended."""
    head = template.split("%2", 1)[0]
    if "%1" not in head:
        return head + prompt
    return head.replace("%1", prompt)


def render_gpt4all(
    prompt_template: str, messages: Sequence[Message], system_prompt: str | None = None
) -> str:
    """A conversation through a GPT4All `%1`/`%2` prompt template (the GPT4All app's format)."""
    out: list[str] = []
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        out.append("\n".join(system) + "\n")
    elif system_prompt:
        out.append(system_prompt)
    pending_user: str | None = None
    for m in messages:
        if m["role"] == "user":
            if pending_user is not None:
                out.append(_fill(prompt_template, pending_user, ""))
            pending_user = m["content"]
        elif m["role"] == "assistant":
            out.append(_fill(prompt_template, pending_user or "", m["content"]))
            pending_user = None
    if pending_user is not None:
        out.append(apply_prompt_template(prompt_template, pending_user))
    return "".join(out)


def _fill(template: str, user: str, reply: str) -> str:
    if "%2" in template:
        return template.replace("%1", user).replace("%2", reply)
    return apply_prompt_template(template, user) + reply
