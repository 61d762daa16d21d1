"""A request's jobs: one per choice, each with the sampler chains it needs (the answer's, and
a reasoning model's answer grammar or a tool call's grammar to switch to), its stop strings,
its prompt-lookup drafter and the penalty window that logprobs are read against."""

from __future__ import annotations

import collections
import dataclasses

from ..errors import InvalidRequest
from .json_keys import KeyGuard, QuoteTable
from .lookup import PromptLookup, SharedNgrams
from .model import Model
from .reasoning import ReasoningSplitter
from .request import RequestHandle
from .sampling import SamplerChain, SamplingParams
from .sequences import EngineConfig, Job
from .text import StopMatcher


class JobMaker:
    def __init__(self, model: Model, config: EngineConfig):
        self.model = model
        self.config = config
        self._quotes: QuoteTable | None = None  # built for the first JSON grammar
        shared = config.prompt_lookup and config.prompt_lookup_shared
        self._ngrams = SharedNgrams() if shared else None  # every sequence's long n-grams

    def group(self, handle: RequestHandle) -> list[Job]:
        """The request's jobs, one per choice; the first reads the prompt for them all."""
        req = handle.request
        group: list[Job] = []
        try:
            for j in range(req.n):
                sampling = req.sampling
                if j and sampling.seed is not None:  # distinct yet reproducible choices
                    sampling = sampling.with_seed(sampling.seed + j)
                chain = self.chain(sampling, req.prompt_tokens)
                job = Job(
                    handle=handle,
                    index=handle.index + j,
                    prompt=req.prompt_tokens,
                    chain=chain,
                    stops=StopMatcher(req.stop),
                )
                group.append(job)
                if req.reasoning is not None:
                    job.think = ReasoningSplitter(req.reasoning)
                    if req.reasoning.grammar is not None:
                        job.answer_chain = self.chain(
                            dataclasses.replace(sampling, grammar=req.reasoning.grammar),
                            req.prompt_tokens,
                        )
                if req.call_grammar is not None:
                    job.call_chain = self.chain(
                        dataclasses.replace(sampling, grammar=req.call_grammar), req.prompt_tokens
                    )
                drafts = self.config.prompt_lookup and req.prompt_lookup is not False
                if drafts and not req.echo_logprobs:
                    job.lookup = PromptLookup(
                        draft_max=self.config.draft_max,
                        tokens=list(req.prompt_tokens),
                        shared=self._ngrams,
                    )
                if req.logprobs is not None and sampling.uses_penalties:
                    n = sampling.repeat_last_n
                    job.history = collections.deque(
                        req.prompt_tokens[-n:] if n > 0 else req.prompt_tokens,
                        maxlen=n if n > 0 else None,
                    )
        except Exception:
            for job in group:
                job.free_chains()
            raise
        for job in group[1:]:
            job.leader = group[0]
        group[0].followers = group[1:]
        return group

    def chain(self, sampling: SamplingParams, prompt: list[int]) -> SamplerChain:
        keys = None
        if sampling.grammar is not None:  # every grammar here writes JSON
            if self._quotes is None:
                self._quotes = QuoteTable(self.model.token_bytes, self.model.n_vocab)
            keys = KeyGuard(self._quotes)
        try:
            chain = SamplerChain(sampling, self.model.vocab, self.model.n_vocab, keys)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="response_format") from exc
        if sampling.uses_penalties:
            n = sampling.repeat_last_n
            chain.accept_history(prompt[-n:] if n > 0 else prompt)
        return chain
