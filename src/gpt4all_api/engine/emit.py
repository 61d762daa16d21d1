"""What a job's sampled token becomes: the client's text events (a reasoning model's thinking
apart from its answer, text that may start a stop string held back), the grammar switches a
reasoning model or a tool call needs, and the reason the job ends, if it does.

The engine samples in the step's order; `Emitter.token` then takes one job's logits at its
batch index and says whether the job goes on (`None`) or how it ends (`Ending`); `Emitter.end`
sends what is left of its text and its finish event.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from .logprobs import LogprobReader
from .model import Model
from .reasoning import ReasoningSpec, ReasoningSplitter
from .request import FinishEvent, TextEvent, TokenLogprob
from .sequences import Job


class Ending(NamedTuple):
    reason: str | None  # "stop", "length"; None: the client is gone (nothing more is sent)
    matched_stop: bool = False


STOP = Ending("stop")
LENGTH = Ending("length")
GONE = Ending(None)


class Emitter:
    """Samples a job's next token from this step's logits and sends what it means."""

    def __init__(self, model: Model, ctx: object, logprobs: LogprobReader, n_ctx_seq: int):
        self.model = model
        self._ctx = ctx
        self._logprobs = logprobs
        self.n_ctx_seq = n_ctx_seq
        self.generated = 0  # tokens generated, every job's
        self.reasoning = 0  # of those, the ones ended jobs spent thinking

    def token(self, job: Job) -> Ending | None:
        """The job's next token from the logits at `job.batch_index`: sent, and kept as the
        job's `pending` token to decode next, unless the job ends."""
        if job.request.max_tokens <= 0:
            return LENGTH
        think = job.think
        spec = job.request.reasoning
        if think is not None and spec is not None:
            _steer(job, think, spec)
        logprob = None
        if job.forced:
            token = job.forced.popleft()
            job.chain.accept(token)
        else:
            token = job.chain.sample(self._ctx, job.batch_index)
            if self.model.is_eog(token):
                return STOP
            if job.request.logprobs is not None:
                logprob = self._logprobs.read(
                    job.batch_index,
                    token,
                    job.request.logprobs,
                    job.chain.params,
                    job.history or (),
                )
        if job.history is not None:
            job.history.append(token)
        job.n_generated += 1
        self.generated += 1
        text = job.decoder.feed(self.model.token_bytes(token, special=think is not None))
        if think is None:
            _watch_call(job, text)
            out, stopped = job.stops.feed(text) if text else ("", False)
            pushed = job.handle.push(TextEvent(job.index, out, token, logprob))
        else:
            was_thinking = think.thinking
            before = think.reasoning_tokens
            pieces = think.feed(text)
            _watch_call(job, "".join(t for r, t in pieces if not r))
            thought = think.reasoning_tokens > before  # this token was part of the thinking
            pushed, stopped = _push_split(job, pieces, token, logprob, thought)
            if was_thinking and think.answering and not job.forced:
                _thinking_ended(job)
        if not pushed:
            return GONE
        if stopped:
            return Ending("stop", matched_stop=True)
        if think is not None and think.ended:
            return STOP
        if job.n_generated >= job.request.max_tokens or (
            job.slot is not None and len(job.slot.cached) + 1 >= self.n_ctx_seq
        ):
            return LENGTH
        job.pending = token
        if job.lookup is not None:
            job.lookup.extend((token,))
        return None

    def end(self, job: Job, ending: Ending) -> None:
        """Send the rest of an ending job's text and its finish event (none when the client is
        gone)."""
        if job.think is not None:
            self.reasoning += job.think.reasoning_tokens
        if ending.reason is None:
            return
        if not ending.matched_stop:  # text held back for a possible stop string is real output
            _flush_text(job)
        job.handle.push(
            FinishEvent(
                index=job.index,
                reason=ending.reason,
                prompt_tokens=len(job.prompt),
                completion_tokens=job.n_generated,
                cached_tokens=job.cached_tokens,
                stop_string=job.stops.matched if ending.matched_stop else None,
                reasoning_tokens=job.think.reasoning_tokens if job.think else 0,
            )
        )


def _push_split(
    job: Job,
    pieces: list[tuple[bool, str]],
    token: int,
    logprob: TokenLogprob | None,
    thought: bool = False,
) -> tuple[bool, bool]:
    """Send a reasoning model's text pieces; stop strings apply to the answer only. The token
    (and its logprob) goes with its first answer piece, else its first piece; with no text at
    all, with an empty event marked as thinking when `thought`.
    Returns (the client is still there, a stop string matched)."""
    events: list[TextEvent] = []
    stopped = False
    for reasoning, text in pieces:
        if not reasoning:
            text, stopped = job.stops.feed(text)
        if text:
            events.append(TextEvent(job.index, text, -1, None, reasoning))
        if stopped:
            break
    if events:
        first = next((i for i, e in enumerate(events) if not e.reasoning), 0)
        events[first] = dataclasses.replace(events[first], token=token, logprob=logprob)
    else:
        events.append(TextEvent(job.index, "", token, logprob, thought))
    return all(job.handle.push(e) for e in events), stopped


def _watch_call(job: Job, text: str) -> None:
    """Put the call grammar in place once the answer opens a tool call. A token that brought
    more than whitespace after the open tag was sampled free: that call stays unconstrained (a
    grammar fed text it rejects would abort the process)."""
    if job.call_chain is None or not text:
        return
    mark = job.request.call_open
    seen = job.answer_seen + text
    i = seen.find(mark)
    if i == -1:
        job.answer_seen = seen[-(len(mark) - 1) :] if len(mark) > 1 else ""
        return
    if seen[i + len(mark) :].strip():
        job.call_chain.free()
    else:
        job.chain.free()
        job.chain = job.call_chain
    job.call_chain = None


def _thinking_ended(job: Job) -> None:
    """The model closed its thinking itself: a format with an answer header gets it written for
    it when a grammar is to follow (the grammar applies after the header)."""
    spec = job.request.reasoning
    if job.answer_chain is not None and spec is not None and not job.forced:
        job.forced.extend(spec.header_tokens)


def _steer(job: Job, think: ReasoningSplitter, spec: ReasoningSpec) -> None:
    """Before a reasoning model's next token: close a thinking whose budget is spent, and put the
    answer's grammar in place once everything the server writes is written."""
    spent = spec.budget is not None and think.reasoning_tokens + spec.close_count >= spec.budget
    if think.thinking and not job.forced and spent:
        job.forced.extend(spec.close_tokens)
    if job.answer_chain is not None and think.answering and not job.forced:
        job.chain.free()
        job.chain, job.answer_chain = job.answer_chain, None


def _flush_text(job: Job) -> None:
    rest = job.decoder.flush()
    if job.think is None:
        tail, stopped = job.stops.feed(rest)
        if not stopped:
            tail += job.stops.flush()
        if tail:
            job.handle.push(TextEvent(job.index, tail, -1))
        return
    pieces = job.think.feed(rest, token=False) + job.think.flush()
    _, stopped = _push_split(job, pieces, -1, None)
    if not stopped:
        tail = job.stops.flush()
        if tail:
            job.handle.push(TextEvent(job.index, tail, -1))
