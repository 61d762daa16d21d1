"""What a request hands the engine, and what flows back.

The engine thread pushes events into a request's asyncio queue with
`loop.call_soon_threadsafe`; the HTTP side awaits them. Exceptions travel back as values.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field

from ..errors import APIError
from .reasoning import ReasoningSpec
from .sampling import SamplingParams

_ids = itertools.count(1)


@dataclass
class GenerationRequest:
    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    prompt_chunk: int = 128
    n: int = 1  # choices sampled from one evaluation of the prompt
    logprobs: int | None = None  # None: none; k: the chosen token's and the top k alternatives'
    echo_logprobs: bool = False  # also score every prompt token
    #: How the model marks its thinking, for a model that reasons. Stop strings then apply to the
    #: answer only, and `sampling.grammar` must be None (the spec's grammar follows the thinking).
    reasoning: ReasoningSpec | None = None
    #: A grammar for the rest of a tool call, applied once the answer holds `call_open` (with
    #: nothing but whitespace after it so far): prose before a call is free, the call is not.
    call_grammar: str | None = None
    call_open: str = ""
    #: Draft tokens from the sequence's own context (when the server has it on). Greedy output
    #: is the same either way, and sampled output has the same distribution.
    prompt_lookup: bool | None = None  # None: where they pay (measured); True: always; False: never


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TextEvent:
    """New text for choice `index` (may be empty when the token's bytes are incomplete).

    `token` is -1 for text flushed at the end that belongs to no new token, or for the second
    piece of a token's text when it holds both the end of the thinking and the answer.
    `reasoning`: the text is the model's thinking, not its answer."""

    index: int
    text: str
    token: int
    logprob: TokenLogprob | None = None
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class PromptLogprobsEvent:
    """Scores of the prompt's tokens (the first has none), sent before any text."""

    index: int
    entries: tuple[TokenLogprob | None, ...]


@dataclass(frozen=True, slots=True)
class FinishEvent:
    index: int
    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    stop_string: str | None = None  # the stop string that ended it, if one did
    reasoning_tokens: int = 0  # of `completion_tokens`, those spent thinking


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    error: APIError


Event = TextEvent | FinishEvent | ErrorEvent | PromptLogprobsEvent


class Outbox:
    """Events the engine thread sends during one step, handed to each event loop in one call at
    the end of the step: one wake-up of the loop per step, not one per token and sequence."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Event]]] = {}

    def put(self, handle: RequestHandle, event: Event) -> None:
        self._pending.setdefault(handle._loop, []).append((handle, event))

    def flush(self) -> list[RequestHandle]:
        """Deliver what was put; returns the handles whose event loop is gone."""
        lost: list[RequestHandle] = []
        for loop, items in self._pending.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # event loop closed
                for handle, _ in items:
                    if not handle.cancelled.is_set():
                        handle.cancelled.set()
                        lost.append(handle)
        self._pending.clear()
        return lost


def _deliver(items: list[tuple[RequestHandle, Event]]) -> None:
    for handle, event in items:
        handle.queue.put_nowait(event)


class RequestHandle:
    """The HTTP side's view of one submitted request."""

    def __init__(
        self,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Event] | None = None,
        index: int = 0,
    ):
        self.id = next(_ids)
        self.request = request
        self.index = index  # the first choice this request produces (n in all)
        self.queue: asyncio.Queue[Event] = queue if queue is not None else asyncio.Queue()
        self._loop = loop
        self.cancelled = threading.Event()
        self.outbox: Outbox | None = None  # the engine's, once submitted

    def push(self, event: Event) -> bool:
        """Called from the engine thread. False when the receiving loop is known to be gone."""
        if self.outbox is not None:
            if self._loop.is_closed():
                self.cancelled.set()
                return False
            self.outbox.put(self, event)
            return True
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # event loop closed
            self.cancelled.set()
            return False
        return True
