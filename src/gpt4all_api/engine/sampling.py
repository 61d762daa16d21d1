"""Sampling parameters and the llama.cpp sampler chain built from them.

All per-token work happens inside llama.cpp: the chain transforms and samples the logits in C.
"""

from __future__ import annotations

import ctypes
import dataclasses
import random
from dataclasses import dataclass, field

import llama_cpp as lc


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.18
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def uses_penalties(self) -> bool:
        return (
            self.repeat_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    def with_seed(self, seed: int) -> SamplingParams:
        return dataclasses.replace(self, seed=seed & 0xFFFFFFFF)


class SamplerChain:
    """One request's llama.cpp sampler chain. Owned and freed by the engine thread."""

    def __init__(self, params: SamplingParams, vocab: lc.llama_vocab_p, n_vocab: int):
        self.params = params
        chain_params = lc.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = lc.llama_sampler_chain_init(chain_params)
        self._grammar = None
        add = self._add

        if params.logit_bias:
            biases = (lc.llama_logit_bias * len(params.logit_bias))()
            for i, (tok, bias) in enumerate(params.logit_bias.items()):
                biases[i].token = tok
                biases[i].bias = -float("inf") if bias <= -100 else bias
            add(lc.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
        if params.grammar:
            self._grammar = lc.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
            if not self._grammar:
                lc.llama_sampler_free(self.ptr)
                raise ValueError("llama.cpp rejected the grammar")
            add(self._grammar)
        if params.uses_penalties:
            last_n = params.repeat_last_n if params.repeat_last_n >= 0 else -1
            add(
                lc.llama_sampler_init_penalties(
                    n_vocab,
                    last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.greedy:
            add(lc.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(lc.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(lc.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(lc.llama_sampler_init_min_p(params.min_p, 1))
            add(lc.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            add(lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def _add(self, sampler: lc.llama_sampler_p) -> None:
        lc.llama_sampler_chain_add(self.ptr, sampler)

    def accept_history(self, tokens: list[int]) -> None:
        """Feed prior tokens (the prompt's tail) to the penalty samplers, not to the grammar."""
        if self._grammar is not None:
            # The grammar constrains only what is generated; feed history around it.
            n = lc.llama_sampler_chain_n(self.ptr)
            for i in range(n):
                s = lc.llama_sampler_chain_get(self.ptr, i)
                if (
                    ctypes.cast(s, ctypes.c_void_p).value
                    == ctypes.cast(self._grammar, ctypes.c_void_p).value
                ):
                    continue
                for t in tokens:
                    lc.llama_sampler_accept(s, t)
            return
        for t in tokens:
            lc.llama_sampler_accept(self.ptr, t)

    def sample(self, ctx: lc.llama_context_p, index: int) -> int:
        """Sample (and accept) the next token from the logits at batch position `index`."""
        return lc.llama_sampler_sample(self.ptr, ctx, index)

    def free(self) -> None:
        if self.ptr:
            lc.llama_sampler_free(self.ptr)
            self.ptr = None
