"""The plan: what one request asks for, in no dialect's words. Immutable once translated.

Every dialect's translator fills a `Plan`; the core turns it into a prompt and engine requests
and knows nothing about where it came from. Parameter names (`param`) stay here only so that an
error found later (a prompt too long, a logit bias outside the vocabulary) can still name the
field of the request that caused it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidRequest
from .tools import Tool

ToolMode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made earlier in the conversation (or makes now)."""

    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. Roles: `system`, `user`, `assistant`, `tool`."""

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str = ""  # an assistant turn's thinking, for templates that keep it


def call_name(turns: list[Turn] | tuple[Turn, ...], call_id: str) -> str | None:
    """The name of the function an earlier turn called with `call_id` (for a tool result)."""
    for t in reversed(turns):
        for c in t.tool_calls:
            if c.id == call_id:
                return c.name
    return None


@dataclass(frozen=True)
class ToolPlan:
    tools: tuple[Tool, ...] = ()
    mode: ToolMode = "none"
    parallel: bool = True

    @property
    def forced(self) -> bool:
        """The reply must be exactly one call (grammar-constrained)."""
        return self.mode in ("required", "named")

    @property
    def offered(self) -> tuple[Tool, ...]:
        """The tools the model is shown."""
        return () if self.mode == "none" else self.tools


@dataclass(frozen=True)
class Sampling:
    """Sampling as the request gave it; `None` means the server's default."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Reasoning:
    """A request's thinking controls, in no dialect's words. None everywhere: the model's own
    default.

    `enabled`: thinking asked for (True) or turned off (False). `effort`: `none`, `minimal`,
    `low`, `medium` or `high`. `budget`: the most tokens the thinking may take. `strict`: a model
    that does not reason refuses the ask (a 400 naming `param`) instead of answering without."""

    enabled: bool | None = None
    effort: str | None = None
    budget: int | None = None
    param: str = "reasoning_effort"
    strict: bool = True


@dataclass(frozen=True)
class Limits:
    """How long the reply may be. `max_tokens` None: the room left in the context.

    `clip`: a `max_tokens` past the room left is clipped to it (a cap, as Anthropic's and the
    Responses API treat it), instead of the server's strict default (a 400).
    `truncate`: a conversation too long for the context loses its oldest turns after the system
    prompt until it fits (Responses' `truncation: auto`, Ollama's chat), instead of a 400."""

    max_tokens: int | None = None
    max_param: str = "max_tokens"
    prompt_param: str = "messages"
    clip: bool = False
    truncate: bool = False


@dataclass(frozen=True)
class Plan:
    """One generation request. Either `turns` (chat) or `prompt` (raw text or token ids)."""

    model: str | None = None
    turns: tuple[Turn, ...] = ()
    prompt: str | tuple[int, ...] | None = None
    prompt_template: str | None = None  # a GPT4All `%1`/`%2` template given by the request
    raw: bool = False  # `prompt` goes to the model as it is (no template at all)
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    grammar: str | None = None
    tools: ToolPlan = field(default_factory=ToolPlan)
    n: int = 1
    logprobs: int | None = None
    stream: bool = False
    keep_alive: float | None = None
    reload: bool = False
    prompt_chunk: int | None = None
    prompt_lookup: bool | None = None  # False: no drafts; True: drafts even where they lose
    reasoning: Reasoning = field(default_factory=Reasoning)
    #: Extra variables for the model's Jinja chat template (`chat_template_kwargs`).
    template_vars: tuple[tuple[str, Any], ...] = ()


_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Seconds from `300`, `"300"`, `"5m"`, `"1h"`, `"-1"` (forever); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest(
            "keep_alive must be a number of seconds or a duration like '5m'", param="keep_alive"
        )
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise InvalidRequest(
            f"keep_alive must be a number of seconds or a duration like '5m', got {value!r}",
            param="keep_alive",
        )
    return float(match.group(1)) * _UNITS[match.group(2)]
