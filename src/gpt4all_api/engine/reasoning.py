"""Splitting a reasoning model's output into its thinking and its answer, as it streams.

Models mark their thinking with text markers: `<think>` … `</think>` (DeepSeek-R1 distills,
Qwen3, QwQ, Phi-4-reasoning) or harmony channels (gpt-oss: `<|channel|>analysis<|message|>` …
`<|end|>`, then `<|start|>assistant<|channel|>final<|message|>` before the answer). A marker cut
across tokens is held back, as stop strings are, so no part of one is ever sent as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class ReasoningSpec:
    """How one generation's thinking is marked, and what the engine does about it."""

    open: str  # the marker that starts thinking
    close: str  # the marker that ends it
    #: The prompt already opened the thinking (R1 templates, or the server opened it).
    thinking: bool = False
    #: Markup the model writes between the thinking and the answer (dropped).
    answer_headers: tuple[str, ...] = ()
    #: Markup that, followed by `open`, starts another thinking block after one has closed.
    reopen: str = ""
    #: A regular expression for the header of a tool call in the format's own markup (harmony's
    #: commentary channel `to=functions.NAME`), the name in a named group; `call_end` ends its
    #: arguments. Such a call is passed on as `<tool_call>{"name": …, "arguments": …}</tool_call>`.
    call_header: str = ""
    call_starts: tuple[str, ...] = ()  # what a call header may begin with (held back meanwhile)
    call_end: str = ""
    #: Tokens the server writes to close the thinking when the budget is spent (the close marker
    #: and any answer header).
    close_tokens: tuple[int, ...] = ()
    #: How many of `close_tokens` belong to the thinking (up to the end of the close marker).
    close_count: int = 0
    #: Tokens the server writes after a close the model wrote itself, before a grammar applies
    #: (the answer header of formats that have one).
    header_tokens: tuple[int, ...] = ()
    #: The most tokens the thinking may take, its close marker included. None: no limit.
    budget: int | None = None
    #: A grammar for the answer only: it applies once the thinking has ended.
    grammar: str | None = None


class Phase(Enum):
    START = "start"  # nothing seen yet: the model may or may not open a thinking block
    THINKING = "thinking"
    HEADER = "header"  # thinking closed: whitespace and answer headers are dropped
    CALL = "call"  # the arguments of a call written in the format's own markup
    ANSWER = "answer"


def _prefix_hold(buf: str, marker: str) -> int:
    """The length of the longest tail of `buf` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:n]):
            return n
    return 0


class ReasoningSplitter:
    """Feeds a generation's text through, one token's text at a time; returns `(reasoning,
    text)` pieces safe to send. Also counts the tokens that belong to the thinking."""

    def __init__(self, spec: ReasoningSpec):
        self.spec = spec
        self.phase = Phase.THINKING if spec.thinking else Phase.START
        self.reasoning_tokens = 0
        self._pending_tokens = 0  # tokens seen in START, counted once it is clear what they are
        self._held = ""
        self._space = ""  # whitespace inside the thinking, sent once more thinking follows it
        self._lead = True  # nothing of the thinking sent yet: its leading whitespace is dropped
        self._call = ""  # the name of the call whose arguments are coming
        self._call_re = re.compile(spec.call_header) if spec.call_header else None
        self.ended = False  # the reply is over (a call in the format's own markup was written)

    @property
    def thinking(self) -> bool:
        return self.phase is Phase.THINKING

    @property
    def answering(self) -> bool:
        """The thinking is over (or never happened): what comes now is the answer."""
        return self.phase in (Phase.HEADER, Phase.CALL, Phase.ANSWER)

    def feed(self, text: str, *, token: bool = True) -> list[tuple[bool, str]]:
        """The pieces `text` (one token's worth when `token`) makes safe to send."""
        if token:
            if self.phase is Phase.THINKING:
                self.reasoning_tokens += 1
            elif self.phase is Phase.START:
                self._pending_tokens += 1
        out: list[tuple[bool, str]] = []
        self._held += text
        while self._step(out):
            pass
        return [p for p in out if p[1]]

    def _step(self, out: list[tuple[bool, str]]) -> bool:
        """One move of the state machine; False when it must wait for more text."""
        spec = self.spec
        buf = self._held
        if self.phase is Phase.START:
            s = buf.lstrip()
            if s.startswith(spec.open):
                self._held = s[len(spec.open) :]
                self._enter_thinking()
                return True
            if not s or any(m.startswith(s) for m in (spec.open, *spec.answer_headers)):
                return False  # may still become a marker
            self._pending_tokens = 0
            self.phase = Phase.HEADER
            return True
        if self.phase is Phase.THINKING:
            i = buf.find(spec.close)
            if i != -1:
                self._send_thinking(buf[:i], out, final=True)
                self._held = buf[i + len(spec.close) :]
                self.phase = Phase.HEADER
                return True
            keep = _prefix_hold(buf, spec.close)
            self._send_thinking(buf[: len(buf) - keep], out, final=False)
            self._held = buf[len(buf) - keep :]
            return False
        if self.phase is Phase.HEADER:
            s = buf.lstrip()
            again = spec.reopen + spec.open if spec.reopen else None
            if again and s.startswith(again):  # another thinking block (harmony allows several)
                self._held = s[len(again) :]
                self.phase = Phase.THINKING
                if not self._lead:
                    self._space = "\n\n"  # kept apart from the block before
                return True
            for h in spec.answer_headers:
                if s.startswith(h):
                    self._held = s[len(h) :]
                    return True
            call = self._call_re.match(s) if self._call_re else None
            if call is not None:
                name = next((v for v in call.groupdict().values() if v), None)
                self._held = s[call.end() :]
                if name:  # else a message to the user on that channel: its header is dropped
                    self._call = name
                    self.phase = Phase.CALL
                return True
            markers = (*spec.answer_headers, *((again,) if again else ()))
            if not s or any(m.startswith(s) for m in markers) or self._may_be_call(s):
                self._held = s
                return False  # may still be markup
            self._held = ""
            self.phase = Phase.ANSWER
            out.append((False, s))
            return False
        if self.phase is Phase.CALL:
            i = buf.find(spec.call_end)
            if i == -1:
                return False
            self._send_call(buf[:i], out)
            self._held = ""
            self.phase = Phase.ANSWER
            self.ended = True  # a call ends the model's turn
            return False
        self._held = ""
        out.append((False, buf))
        return False

    def _may_be_call(self, s: str) -> bool:
        if "<|message|>" in s or len(s) > 200:
            return False
        return any(p.startswith(s) or s.startswith(p) for p in self.spec.call_starts)

    def _send_call(self, arguments: str, out: list[tuple[bool, str]]) -> None:
        args = arguments.strip() or "{}"
        name = json.dumps(self._call)
        out.append((False, f'<tool_call>{{"name": {name}, "arguments": {args}}}</tool_call>'))

    def _enter_thinking(self) -> None:
        self.phase = Phase.THINKING
        self.reasoning_tokens += self._pending_tokens
        self._pending_tokens = 0

    def _send_thinking(self, text: str, out: list[tuple[bool, str]], *, final: bool) -> None:
        if self._lead:
            text = text.lstrip()
            if not text:
                return
            self._lead = False
        if final:
            text = text.rstrip()
            if text:
                out.append((True, self._space + text))
            self._space = ""
            return
        body = text.rstrip()
        if body:
            out.append((True, self._space + body))
            self._space = ""
        self._space += text[len(body) :]

    def flush(self) -> list[tuple[bool, str]]:
        """What is still held at the end of the generation."""
        held, self._held = self._held, ""
        out: list[tuple[bool, str]] = []
        if self.phase is Phase.THINKING:
            self._send_thinking(held, out, final=True)
            return out
        if self.phase is Phase.CALL:  # its end was the end of the generation
            self._send_call(held, out)
            return out
        if self.phase is Phase.HEADER:
            held = held.lstrip()
            markers = (*self.spec.answer_headers, self.spec.reopen + self.spec.open)
            if any(m.startswith(held) for m in markers):
                return []  # an unfinished header is markup, not answer
        elif self.phase is Phase.START:
            held = held.lstrip()
        return [(False, held)] if held else []
