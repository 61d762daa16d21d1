"""Running a plan: load its model, build its prompt, fit its budget into the context, submit it
to the engine, and follow its events. Knows no dialect.

Defaults chain: request > model (catalog) > server > engine (`SamplingParams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
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
from ..errors import ContextLengthExceeded, InvalidRequest
from ..library.registry import Loaded
from ..middleware import request_trace
from ..state import ServerState
from . import prompt as prompting
from . import reasoning
from . import tools as tooling
from .plan import Limits, Plan, Sampling

log = logging.getLogger(__name__)


def new_id(prefix: str, sep: str = "-") -> str:
    return f"{prefix}{sep}{uuid.uuid4().hex[:24]}"


async def load_model(state: ServerState, plan: Plan) -> Loaded:
    name = plan.model or state.default_model
    return await state.registry.get(name, reload=plan.reload, keep_alive=plan.keep_alive)


def sampling_params(
    s: Sampling, loaded: Loaded, grammar: str | None = None, temperature: float | None = None
) -> SamplingParams:
    """The engine's sampling: the request's values, else the server's (`temperature`), else the
    engine's defaults."""
    base = SamplingParams()
    if temperature is not None:
        base = replace(base, temperature=temperature)
    logit_bias: dict[int, float] = {}
    for key, bias in s.logit_bias:
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

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return SamplingParams(
        temperature=pick(s.temperature, base.temperature),
        top_k=pick(s.top_k, base.top_k),
        top_p=pick(s.top_p, base.top_p),
        min_p=pick(s.min_p, base.min_p),
        repeat_penalty=pick(s.repeat_penalty, base.repeat_penalty),
        repeat_last_n=pick(s.repeat_last_n, base.repeat_last_n),
        presence_penalty=pick(s.presence_penalty, base.presence_penalty),
        frequency_penalty=pick(s.frequency_penalty, base.frequency_penalty),
        seed=s.seed,
        logit_bias=logit_bias,
        grammar=grammar,
    )


def budget(state: ServerState, loaded: Loaded, prompt_len: int, limits: Limits) -> int:
    """How many tokens may be generated after a prompt of `prompt_len` tokens."""
    n_ctx = loaded.engine.n_ctx_seq
    room = n_ctx - prompt_len
    if room <= 0:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, your prompt has "
            f"{prompt_len} tokens. Please reduce the length of the prompt.",
            param=limits.prompt_param,
        )
    ceiling = state.settings.max_tokens_limit or room  # larger asks were refused (middleware)
    asked = limits.max_tokens
    if asked is None:
        return min(room, ceiling)
    if asked > room and state.settings.strict_max_tokens and not limits.clip:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_len + asked} tokens ({prompt_len} in the prompt, {asked} for the "
            "completion). Please reduce the prompt or the completion length.",
            param=limits.max_param,
        )
    return min(asked, room, ceiling)


def generation_request(
    state: ServerState, loaded: Loaded, plan: Plan, prompt: prompting.Prompt, **extra: Any
) -> GenerationRequest:
    """The engine request for one prompt of a plan."""
    model = loaded.model
    tools = plan.tools
    call_grammar = None
    if plan.grammar is None and tools.mode == "auto" and tools.offered:
        # the model may answer in prose; once it opens a call, the call is constrained, when
        # the grammar can enforce the tools' schemas (else the call is parsed as written)
        with contextlib.suppress(InvalidRequest):
            call_grammar = tooling.auto_call_grammar(list(tools.offered), tools.parallel)
    think = reasoning.spec(
        prompt.thinking,
        lambda t: model.tokenize(t, add_special=False),
        lambda ids: model.detokenize(ids, special=True),
        plan.grammar,
    )
    grammar = None if think is not None else plan.grammar  # else it follows the thinking
    sampling = sampling_params(plan.sampling, loaded, grammar, state.settings.temperature)
    return GenerationRequest(
        prompt_tokens=prompt.tokens,
        max_tokens=budget(state, loaded, len(prompt.tokens), plan.limits),
        sampling=sampling,
        # a grammar ends the reply itself: a stop string could only cut its JSON short
        stop=() if plan.grammar is not None else plan.stop + prompt.stops,
        reasoning=think,
        call_grammar=call_grammar,
        call_open=tooling.CALL_OPEN,
        prompt_chunk=plan.prompt_chunk or state.settings.prompt_batch_size,
        prompt_lookup=plan.prompt_lookup,
        n=plan.n,
        logprobs=plan.logprobs,
        **extra,
    )


async def start(state: ServerState, plan: Plan, prefix: str = "chatcmpl") -> Run:
    """Load the plan's model, build its prompt and submit it: the running generation."""
    loaded = await load_model(state, plan)
    while True:
        prompt = _build(state, loaded, plan)
        try:
            request = generation_request(state, loaded, plan, prompt)
            break
        except ContextLengthExceeded:
            shorter = _drop_oldest_turn(plan) if plan.limits.truncate else None
            if shorter is None:
                raise
            plan = shorter
    run = Run(loaded, [request])
    run.id = new_id(prefix)
    run.prompt = prompt
    run.plan = plan
    return run


def _drop_oldest_turn(plan: Plan) -> Plan | None:
    """The plan without its oldest turn after the system prompt; None when only one is left."""
    turns = list(plan.turns)
    first = 1 if turns and turns[0].role == "system" else 0
    if len(turns) - first <= 1:
        return None
    del turns[first]
    return replace(plan, turns=tuple(turns))


def _build(state: ServerState, loaded: Loaded, plan: Plan) -> prompting.Prompt:
    s = state.settings
    return prompting.build(loaded, plan, s.prompt_template, s.reasoning_markers, s.reasoning_budget)


def count_prompt(state: ServerState, loaded: Loaded, plan: Plan) -> int:
    """The number of prompt tokens a plan would use (nothing is run)."""
    return len(_build(state, loaded, plan).tokens)


def with_limits(plan: Plan, **changes: Any) -> Plan:
    return replace(plan, limits=replace(plan.limits, **changes))


@dataclass
class Choice:
    index: int
    prompt_index: int  # which prompt (of a completions request with several) it answers
    text: list[str] = field(default_factory=list)  # the answer
    reasoning: list[str] = field(default_factory=list)  # the thinking, for a model that reasons
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    stop_string: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None


class Run:
    """The engine requests answering one HTTP request: one per prompt, each with `n` choices.

    Choice indexes run prompt by prompt: prompt p's choices are `p * n ... p * n + n - 1`."""

    def __init__(self, loaded: Loaded, requests: list[GenerationRequest]):
        self.loaded = loaded
        self.id = ""
        self.prompt: prompting.Prompt | None = None
        self.plan: Plan | None = None
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
        timer = self.trace.arm(self.queue)
        try:
            while self._open:
                ev = await self.trace.next_event(self.queue)
                if isinstance(ev, ErrorEvent):
                    raise ev.error
                c = self.choices[ev.index]
                if isinstance(ev, TextEvent):
                    (c.reasoning if ev.reasoning else c.text).append(ev.text)
                    if ev.logprob is not None and not ev.reasoning:  # the answer's only
                        c.logprobs.append(ev.logprob)
                elif isinstance(ev, FinishEvent):
                    c.finish_reason = ev.reason
                    c.prompt_tokens = ev.prompt_tokens
                    c.completion_tokens = ev.completion_tokens
                    c.cached_tokens = ev.cached_tokens
                    c.stop_string = ev.stop_string
                    c.reasoning_tokens = ev.reasoning_tokens
                    self._open -= 1
                elif isinstance(ev, PromptLogprobsEvent):
                    c.prompt_logprobs = ev.entries
                yield ev
        finally:
            if timer is not None:
                timer.cancel()
            self.cancel()

    def ready(self) -> int:
        """Events waiting to be read: while there are, the next one comes without waiting."""
        return self.queue.qsize()

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

    @property
    def reasoning_tokens(self) -> int:
        return sum(c.reasoning_tokens for c in self.choices)

    def tokens(self) -> tuple[int, int, int]:
        """(prompt, completion, cached) tokens; a prompt evaluated once for `n` choices counts
        once."""
        firsts = {c.prompt_index: c for c in reversed(self.choices)}.values()
        prompt = sum(c.prompt_tokens for c in firsts)
        completion = sum(c.completion_tokens for c in self.choices)
        return prompt, completion, sum(c.cached_tokens for c in firsts)


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
