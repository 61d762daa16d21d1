"""What completions and chat share: choose the model, turn the request into engine requests with
one chain of defaults (request > model > server > OpenAI), run them, and collect or stream events.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ..engine.request import (
    ErrorEvent,
    Event,
    FinishEvent,
    GenerationRequest,
    PromptLogprobsEvent,
    TextEvent,
    TokenLogprob,
)
from ..engine.sampling import SamplingParams
from ..errors import ContextLengthExceeded, InvalidRequest, UnknownParameter, UnsupportedParameter
from ..library.registry import Loaded, parse_keep_alive
from ..middleware import request_trace
from ..protocol.common import SamplingFields
from ..state import ServerState

log = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def check_unknown(state: ServerState, body: Any, where: str = "") -> None:
    """Refuse (or, when configured, log) fields that are not in the OpenAI reference or ours."""
    extra = getattr(body, "model_extra", None)
    if not extra:
        return
    names = ", ".join(sorted(extra))
    if state.settings.reject_unknown_fields:
        first = sorted(extra)[0]
        raise UnknownParameter(
            f"Unrecognized request argument supplied: {names}", param=where + first
        )
    log.warning("ignoring unknown request fields: %s", names)
    extra.clear()


async def load_model(state: ServerState, req: SamplingFields) -> Loaded:
    name = req.model or state.default_model
    keep_alive = parse_keep_alive(req.keep_alive)
    return await state.registry.get(name, reload=bool(req.reload), keep_alive=keep_alive)


def sampling_params(
    req: SamplingFields, loaded: Loaded, grammar: str | None = None
) -> SamplingParams:
    base = SamplingParams()
    logit_bias: dict[int, float] = {}
    for key, bias in (req.logit_bias or {}).items():
        try:
            tok = int(key)
        except ValueError:
            raise InvalidRequest(
                f"logit_bias keys must be token ids, got {key!r}", param="logit_bias"
            ) from None
        if not 0 <= tok < loaded.model.n_vocab:
            raise InvalidRequest(
                f"logit_bias token {tok} is outside the vocabulary", param="logit_bias"
            )
        if not -100 <= bias <= 100:
            raise InvalidRequest(
                "logit_bias values must be between -100 and 100", param="logit_bias"
            )
        logit_bias[tok] = bias
    repeat = req.repeat_penalty if req.repeat_penalty is not None else req.repeat_penality

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return SamplingParams(
        temperature=pick(req.temperature, base.temperature),
        top_k=pick(req.top_k, base.top_k),
        top_p=pick(req.top_p, base.top_p),
        min_p=pick(req.min_p, base.min_p),
        repeat_penalty=pick(repeat, base.repeat_penalty),
        repeat_last_n=pick(req.repeat_last_n, base.repeat_last_n),
        presence_penalty=pick(req.presence_penalty, base.presence_penalty),
        frequency_penalty=pick(req.frequency_penalty, base.frequency_penalty),
        seed=req.seed,
        logit_bias=logit_bias,
        grammar=grammar,
    )


def check_thread_count(state: ServerState, req: SamplingFields) -> None:
    if req.thread_count is not None and req.thread_count != state.settings.threads:
        raise UnsupportedParameter(
            f"thread_count is a server setting (now {state.settings.threads}); start the server "
            "with --threads to change it",
            param="thread_count",
        )


def budget(
    state: ServerState,
    loaded: Loaded,
    prompt_len: int,
    asked: int | None,
    *,
    prompt_param: str,
    max_param: str,
) -> int:
    """How many tokens may be generated after a prompt of `prompt_len` tokens."""
    n_ctx = loaded.engine.n_ctx_seq
    room = n_ctx - prompt_len
    if room <= 0:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, your prompt has "
            f"{prompt_len} tokens. Please reduce the length of the prompt.",
            param=prompt_param,
        )
    ceiling = state.settings.max_tokens_limit or room  # larger asks were refused (middleware)
    if asked is None:
        return min(room, ceiling)
    if asked > room and state.settings.strict_max_tokens:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_len + asked} tokens ({prompt_len} in the prompt, {asked} for the "
            "completion). Please reduce the prompt or the completion length.",
            param=max_param,
        )
    return min(asked, room, ceiling)


@dataclass
class Choice:
    index: int
    prompt_index: int  # which prompt (of a completions request with several) it answers
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None


class Run:
    """The engine requests answering one HTTP request: one per prompt, each with `n` choices.

    Choice indexes run prompt by prompt: prompt p's choices are `p * n ... p * n + n - 1`."""

    def __init__(self, loaded: Loaded, requests: list[GenerationRequest]):
        self.loaded = loaded
        self.id = ""
        self.created = int(time.time())
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.trace = request_trace(loaded.entry.id)  # the HTTP request's deadline and timings
        loop = asyncio.get_running_loop()
        self.handles = []
        self.choices: list[Choice] = []
        try:
            for p, r in enumerate(requests):
                base = len(self.choices)
                self.choices += [Choice(index=base + j, prompt_index=p) for j in range(r.n)]
                self.handles.append(loaded.engine.submit(r, loop, self.queue, index=base))
        except Exception:
            self._open = len(self.choices)
            self.cancel()
            raise
        self._open = len(self.choices)

    async def events(self) -> AsyncIterator[Event]:
        """Events of every choice, as they come, until all are finished. Raises on error."""
        try:
            while self._open:
                ev = await self.trace.next_event(self.queue)
                if isinstance(ev, ErrorEvent):
                    raise ev.error
                c = self.choices[ev.index]
                if isinstance(ev, TextEvent):
                    c.text.append(ev.text)
                    if ev.logprob is not None:
                        c.logprobs.append(ev.logprob)
                elif isinstance(ev, FinishEvent):
                    c.finish_reason = ev.reason
                    c.prompt_tokens = ev.prompt_tokens
                    c.completion_tokens = ev.completion_tokens
                    c.cached_tokens = ev.cached_tokens
                    self._open -= 1
                elif isinstance(ev, PromptLogprobsEvent):
                    c.prompt_logprobs = ev.entries
                yield ev
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self._open:
            for h in self.handles:
                self.loaded.engine.cancel(h)
            self._open = 0

    async def collect(self, request: Request) -> list[Choice]:
        """Run to the end; a client that hangs up cancels the generation."""
        watcher = asyncio.create_task(_wait_disconnect(request))
        try:
            consume = asyncio.create_task(self._drain())
            done, _ = await asyncio.wait({watcher, consume}, return_when=asyncio.FIRST_COMPLETED)
            if consume in done:
                consume.result()
            else:
                consume.cancel()
                self.cancel()
            return self.choices
        finally:
            watcher.cancel()

    async def _drain(self) -> None:
        async for _ in self.events():
            pass

    def usage(self, state: ServerState, prompt_template: str | None) -> dict[str, Any]:
        """Token counts; a prompt evaluated once for `n` choices counts once."""
        firsts = {c.prompt_index: c for c in reversed(self.choices)}.values()
        prompt = sum(c.prompt_tokens for c in firsts)
        completion = sum(c.completion_tokens for c in self.choices)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(c.cached_tokens for c in firsts)},
            "completion_tokens_details": {"reasoning_tokens": 0},
            "thread_count": state.settings.threads,
            "prompt_template": prompt_template,
        }


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
