"""A run's engine events → neutral reply events: answer text as it may be shown, tool calls once
they are whole, and each choice's end. Every dialect renders these and nothing else.

In `auto` tool mode a reply that may still turn out to be a `<tool_call>` is held back until it
is clear; with a forced call (grammar-constrained JSON) nothing is shown until the call is whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engine.request import FinishEvent, TextEvent, TokenLogprob
from . import tools as tooling
from .plan import ToolCall, ToolPlan
from .run import Choice, Run


@dataclass(frozen=True)
class TextDelta:
    """Answer text for choice `index` (may be empty when only a logprob is new)."""

    index: int
    text: str
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class ReasoningDelta:
    """The model's thinking for choice `index`, never part of its answer."""

    index: int
    text: str


@dataclass(frozen=True)
class Finished:
    """Choice `index` is done. `tail` is answer text not yet sent as a `TextDelta`.

    `finish`: `stop` (end of turn or a stop string), `length` (token limit) or `tool_calls`."""

    index: int
    finish: str
    content: str | None
    calls: tuple[ToolCall, ...] = ()
    #: A forced call cut short by the token limit (`finish` is `length`) as far as it got: its
    #: arguments are not whole JSON. For the APIs that can show one (OpenAI's).
    cut_calls: tuple[ToolCall, ...] = ()
    tail: str = ""
    stop_string: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning: str | None = None  # the whole thinking (None: the model did not think)
    reasoning_tokens: int = 0


ReplyEvent = TextDelta | ReasoningDelta | Finished


@dataclass
class _State:
    held: str = ""
    streaming: bool = False


def final(tools: ToolPlan, c: Choice, *, streamed: bool = False) -> Finished:
    """The end of a finished choice: its content and tool calls parsed from its text.
    `streamed`: its text was already sent as it came (prose, so no call is looked for)."""
    text = "".join(c.text)
    content: str | None = text
    calls: list[ToolCall] = []
    cut: list[ToolCall] = []
    if streamed:
        pass
    elif tools.forced:
        calls = _calls(tooling.parse_forced(text, list(tools.offered)))
        if not calls and c.finish_reason == "length":
            cut = _calls(tooling.parse_cut(text, list(tools.offered)))
            content = None  # the grammar's JSON around a call is not answer text
        else:
            content = None if calls else text
    elif tools.mode == "auto" and tools.offered:
        content, raw = tooling.parse_auto(text, list(tools.offered))
        calls = _calls(raw)
    finish = "tool_calls" if calls else (c.finish_reason or "stop")
    return Finished(
        index=c.index,
        finish=finish,
        content=content,
        calls=tuple(calls),
        cut_calls=tuple(cut),
        tail="" if streamed else (content or ""),
        stop_string=c.stop_string,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        cached_tokens=c.cached_tokens,
        reasoning="".join(c.reasoning) if c.reasoning else None,
        reasoning_tokens=c.reasoning_tokens,
    )


def _calls(raw: list[dict]) -> list[ToolCall]:
    return [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
        for c in raw
    ]


async def stream(run: Run, tools: ToolPlan) -> AsyncIterator[ReplyEvent]:
    """The run's reply events as they become safe to show."""
    holding = tools.forced or (tools.mode == "auto" and bool(tools.offered))
    states = {c.index: _State(streaming=not holding) for c in run.choices}
    async for ev in run.events():
        if isinstance(ev, TextEvent) and ev.reasoning:
            if ev.text:
                yield ReasoningDelta(ev.index, ev.text)
        elif isinstance(ev, TextEvent):
            st = states[ev.index]
            if tools.forced:
                if ev.logprob is not None:
                    yield TextDelta(ev.index, "", ev.logprob)
                continue  # the call is sent whole once it is complete
            if not st.streaming:
                st.held += ev.text
                if tooling.may_become_call(st.held):
                    if ev.logprob is not None:
                        yield TextDelta(ev.index, "", ev.logprob)
                    continue
                st.streaming = True
                text, st.held = st.held, ""
            else:
                text = ev.text
            if text or ev.logprob is not None:
                yield TextDelta(ev.index, text, ev.logprob)
        elif isinstance(ev, FinishEvent):
            st = states[ev.index]
            c = run.choices[ev.index]
            yield final(tools, c, streamed=st.streaming)
