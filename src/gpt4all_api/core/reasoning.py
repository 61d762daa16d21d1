"""Reasoning models: which ones reason and how (read from their own chat template), and how a
request's thinking controls map onto the template's switches, the prompt and the engine.

Families, from the GGUF's `tokenizer.chat_template`:
- `think`: `<think>` … `</think>` (DeepSeek-R1 distills, Qwen3, QwQ, Phi-4-reasoning). Some
  templates open `<think>` in the generation prompt themselves (R1 distills); Qwen3's has an
  `enable_thinking` switch.
- `harmony`: gpt-oss channels; the template takes `reasoning_effort` (low, medium, high).
- `tags`: any model, with the markers the `reasoning_tags` setting names.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from ..engine import templates
from ..engine.reasoning import ReasoningSpec
from ..errors import InvalidRequest, UnsupportedParameter
from .plan import Reasoning

log = logging.getLogger(__name__)

EFFORTS = ("none", "minimal", "low", "medium", "high")
#: Thinking budgets for an effort, for models whose template has no effort switch of its own.
EFFORT_BUDGETS: dict[str, int | None] = {
    "minimal": 256,
    "low": 1024,
    "medium": 4096,
    "high": None,
    "xhigh": None,
}


@dataclass(frozen=True)
class ReasoningFormat:
    family: str  # "think", "harmony" or "tags"
    open: str
    close: str
    #: What the server writes to close a thinking block (budget spent, or thinking turned off).
    close_text: str
    answer_headers: tuple[str, ...] = ()
    header_text: str = ""  # written after a close the model wrote, when a grammar follows
    reopen: str = ""
    stops: tuple[str, ...] = ()  # the answer's end markers, when they are text
    call_header: str = ""  # tool calls in the format's own markup (see `ReasoningSpec`)
    call_starts: tuple[str, ...] = ()
    call_end: str = ""
    opens_itself: bool = False  # the template's generation prompt opens the thinking
    switch: str | None = None  # the template's own switch: "enable_thinking", "reasoning_effort"
    efforts: tuple[str, ...] = ()  # the efforts the switch knows


THINK = ReasoningFormat("think", "<think>", "</think>", close_text="\n</think>\n\n")
_HARMONY_HEADER = "<|start|>assistant<|channel|>final<|message|>"
HARMONY = ReasoningFormat(
    "harmony",
    "<|channel|>analysis<|message|>",
    "<|end|>",
    close_text="<|end|>" + _HARMONY_HEADER,
    answer_headers=(_HARMONY_HEADER, "<|channel|>final<|message|>"),
    header_text=_HARMONY_HEADER,
    reopen="<|start|>assistant",
    stops=("<|return|>", "<|end|>", "<|call|>"),
    # a call: `<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json
    # <|message|>{…}<|call|>` (the recipient may also come before the channel)
    call_header=(
        r"(?:<\|start\|>assistant)?\s*(?:to=functions\.(?P<pre>[^\s<]+)\s*)?"
        r"<\|channel\|>commentary(?:\s+to=functions\.(?P<name>[^\s<]+))?\s*"
        r"(?:<\|constrain\|>)?\s*\w*\s*<\|message\|>"
    ),
    call_starts=("<|start|>assistant", "<|channel|>commentary"),
    call_end="<|call|>",
    switch="reasoning_effort",
    efforts=("low", "medium", "high"),
)


@functools.lru_cache(maxsize=32)
def detect(
    chat_template: str | None, tags: tuple[str, str] | None = None
) -> ReasoningFormat | None:
    """The model's reasoning format, from its chat template; `tags` (open, close) names the
    markers of a model the template does not reveal."""
    if chat_template and "<|channel|>" in chat_template and "analysis" in chat_template:
        return HARMONY
    if chat_template and ("<think>" in chat_template or "</think>" in chat_template):
        switch = "enable_thinking" if "enable_thinking" in chat_template else None
        return ReasoningFormat(
            **{**THINK.__dict__, "opens_itself": _opens(chat_template, "<think>"), "switch": switch}
        )
    if tags:
        open_, close = tags
        return ReasoningFormat("tags", open_, close, close_text=f"\n{close}\n\n")
    return None


def _opens(chat_template: str, marker: str) -> bool:
    """Whether the template's generation prompt ends inside an open thinking block."""
    try:
        text = templates.render_jinja(chat_template, [{"role": "user", "content": "Hi"}])
    except InvalidRequest:
        return False
    return text.rstrip().endswith(marker)


@dataclass(frozen=True)
class Resolved:
    """A request's thinking, for one model: what the template is given, what the server writes
    at the start of the reply, and what the engine watches for."""

    template_vars: dict[str, Any]
    prefill: str  # appended to the rendered prompt
    fmt: ReasoningFormat | None = None
    thinking: bool = False  # the reply starts inside the thinking
    budget: int | None = None
    watch: bool = False  # the engine splits the reply (False: the thinking was turned off)


NO_REASONING = Resolved({}, "")


def resolve(
    fmt: ReasoningFormat | None,
    ask: Reasoning,
    model: str,
    *,
    grammar: bool,
    default_budget: int | None = None,
) -> Resolved:
    """Map a request's controls onto the model's format. Raises a 400 naming the field when the
    model cannot honour them. `default_budget`: the server's, for a request that sets neither a
    budget nor an effort."""
    effort = ask.effort
    enabled = ask.enabled
    budget = ask.budget
    if budget is None and effort is None:
        budget = default_budget
    if effort == "none" or budget == 0:
        enabled = False
    elif effort is not None and enabled is None:
        enabled = True  # an effort asks for thinking
    if fmt is None:
        if ask.strict and (enabled or ask.budget or (effort is not None and effort != "none")):
            what = f"reasoning effort '{effort}'" if effort else "thinking"
            raise UnsupportedParameter(
                f'"{model}" does not support thinking: it does not reason, so {what} cannot be '
                "honoured",
                param=ask.param,
            )
        return NO_REASONING
    tvars: dict[str, Any] = {}
    if fmt.switch == "reasoning_effort":
        if effort is not None and effort != "none" and effort not in fmt.efforts:
            raise InvalidRequest(
                code="unsupported_value",
                message=f"the model '{model}' reasons at effort {', '.join(fmt.efforts)}: "
                f"'{effort}' cannot be honoured",
                param=ask.param,
            )
        if effort in fmt.efforts:
            tvars["reasoning_effort"] = effort
    elif effort is not None and effort != "none" and budget is None:
        budget = EFFORT_BUDGETS[effort]
    if enabled is False:
        if fmt.switch == "enable_thinking":
            return Resolved({"enable_thinking": False}, "", fmt)
        # no switch: the server closes the thinking before the model starts it
        opened = "" if fmt.opens_itself else fmt.open
        return Resolved(tvars, opened + fmt.close_text, fmt)
    if fmt.switch == "enable_thinking":
        tvars["enable_thinking"] = True
    # An explicit ask, a budget or a grammar for the answer: the thinking is opened for the
    # model, so that it is counted (and constrained) from the first token.
    opens = fmt.opens_itself or enabled is True or budget is not None or grammar
    prefill = fmt.open if opens and not fmt.opens_itself else ""
    return Resolved(tvars, prefill, fmt, thinking=opens, budget=budget, watch=True)


def spec(
    r: Resolved,
    tokenize: Any,
    detokenize: Any,
    grammar: str | None,
) -> ReasoningSpec | None:
    """The engine's part of a resolved request; `tokenize(text)` gives token ids and
    `detokenize(ids)` their text. `grammar` is the answer's."""
    if not r.watch or r.fmt is None:
        return None
    f = r.fmt
    close = tuple(tokenize(f.close_text))
    count = next(
        (k for k in range(1, len(close) + 1) if f.close in detokenize(list(close[:k]))),
        len(close),
    )
    return ReasoningSpec(
        open=f.open,
        close=f.close,
        thinking=r.thinking,
        answer_headers=f.answer_headers,
        reopen=f.reopen,
        call_header=f.call_header,
        call_starts=f.call_starts,
        call_end=f.call_end,
        close_tokens=close,
        close_count=count,
        header_tokens=tuple(tokenize(f.header_text)) if f.header_text else (),
        budget=r.budget,
        grammar=grammar,
    )
