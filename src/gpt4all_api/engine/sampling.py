"""Sampling parameters and the llama.cpp sampler chain built from them.

The per-token work is llama.cpp's sampler chain, except for the few logits that `logit_bias` and
the repetition penalties change, which are changed in place with NumPy (see `SamplerChain`).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from dataclasses import dataclass, field

import llama_cpp as lc
import numpy as np

from .json_keys import KeyGuard


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


def logits_row(ctx: lc.llama_context_p, index: int, n_vocab: int) -> np.ndarray:
    """The logits llama.cpp left for batch position `index`, as a NumPy view (not a copy)."""
    return np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), shape=(n_vocab,))


def penalized(seen: np.ndarray, counts: np.ndarray, params: SamplingParams) -> np.ndarray:
    """llama.cpp's repetition penalties, in `seen`'s precision, on the logits `seen` of tokens
    that are `counts` times in the window: the repeat penalty divides a positive logit and
    multiplies the others, then frequency (per occurrence) and presence (once) are taken off."""
    f = seen.dtype.type
    penalty = f(params.repeat_penalty)
    out = np.where(seen <= 0, seen * penalty, seen / penalty)
    if params.frequency_penalty or params.presence_penalty:
        out -= counts.astype(seen.dtype) * f(params.frequency_penalty) + f(params.presence_penalty)
    return out


def logit_bias_arrays(params: SamplingParams, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """`logit_bias` as (token ids, biases); -100 and below bans the token (-inf)."""
    ids = np.fromiter(params.logit_bias.keys(), dtype=np.intp)
    bias = np.fromiter(params.logit_bias.values(), dtype=dtype)
    bias[bias <= -100] = -np.inf
    return ids, bias


class SamplerChain:
    """One request's sampler: `logit_bias` and the repetition penalties are applied by the chain
    itself to the few logits they touch, the rest (grammar, truncation, temperature, the draw) by
    a llama.cpp sampler chain. Owned and freed by the engine thread.

    llama.cpp's own penalty sampler looks up every one of the vocabulary's candidates in its
    token counts, which costs more than the rest of the chain together (about 0.3 ms a token
    for a 49k vocabulary); the logits touched here are only those of the tokens in the window.
    They are changed where llama.cpp keeps them, in the order llama.cpp's samplers would apply
    (bias, then penalties, then the grammar, which only masks), and put back before `sample`
    returns, so log-probabilities read afterwards see the model's own logits.
    A greedy chain without a grammar picks the largest logit with NumPy (the first of equals,
    as llama.cpp's greedy sampler does) instead of building the candidate array.
    """

    def __init__(
        self,
        params: SamplingParams,
        vocab: lc.llama_vocab_p,
        n_vocab: int,
        keys: KeyGuard | None = None,
    ):
        self.params = params
        self._keys = keys  # with a JSON grammar: bans closing a key its object already has
        self.n_vocab = n_vocab
        chain_params = lc.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = lc.llama_sampler_chain_init(chain_params)
        add = self._add
        self._bias_ids, self._bias = logit_bias_arrays(params, np.float32)
        # The penalty window: the last `repeat_last_n` tokens (-1: all of them; 0: none).
        self._window: collections.deque[int] | None = None
        self._counts: dict[int, int] = {}
        if params.uses_penalties and params.repeat_last_n != 0:
            n = params.repeat_last_n
            self._window = collections.deque(maxlen=n if n > 0 else None)
        self._argmax = params.greedy and not params.grammar
        if params.grammar:
            grammar = lc.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
            if not grammar:
                lc.llama_sampler_free(self.ptr)
                raise ValueError("llama.cpp rejected the grammar")
            add(grammar)
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

    def _remember(self, token: int) -> None:
        window = self._window
        if window is None:
            return
        counts = self._counts
        if window.maxlen is not None and len(window) == window.maxlen:
            old = window[0]
            if counts[old] == 1:
                del counts[old]
            else:
                counts[old] -= 1
        window.append(token)
        counts[token] = counts.get(token, 0) + 1

    def accept_history(self, tokens: list[int]) -> None:
        """Feed prior tokens (the prompt's tail) to the penalty window, not to the grammar."""
        for t in tokens:
            self._remember(t)

    def accept(self, token: int) -> None:
        """A token that was not sampled here (written by the server) goes on like a sampled one."""
        lc.llama_sampler_accept(self.ptr, token)
        self._remember(token)
        if self._keys is not None:
            self._keys.feed(token)

    def sample(self, ctx: lc.llama_context_p, index: int) -> int:
        """Sample (and accept) the next token from the logits at batch position `index`."""
        banned = self._keys.banned() if self._keys is not None else None
        if len(self._bias_ids) or self._counts or (banned is not None and len(banned)):
            token = self._sample_shifted(ctx, index, banned)
        else:
            token = self._pick(ctx, index)
        self._remember(token)
        if self._keys is not None:
            self._keys.feed(token)
        return token

    def _sample_shifted(
        self, ctx: lc.llama_context_p, index: int, banned: np.ndarray | None = None
    ) -> int:
        """`_pick` with the bias and penalties on the logits they touch, and the `banned`
        tokens at -inf, put back after."""
        row = logits_row(ctx, index, self.n_vocab)
        ids = np.array(list(self._counts), dtype=np.intp)
        parts = (self._bias_ids, ids) if banned is None else (self._bias_ids, ids, banned)
        touched = np.concatenate(parts)
        saved = row.take(touched)
        try:
            row[self._bias_ids] += self._bias
            if len(ids):
                counts = np.array(list(self._counts.values()))
                row.put(ids, penalized(row.take(ids), counts, self.params))
            if banned is not None:
                row[banned] = -np.inf
            return self._pick(ctx, index, row)
        finally:
            row.put(touched, saved)

    def _pick(self, ctx: lc.llama_context_p, index: int, row: np.ndarray | None = None) -> int:
        if self._argmax:
            return int((logits_row(ctx, index, self.n_vocab) if row is None else row).argmax())
        return lc.llama_sampler_sample(self.ptr, ctx, index)

    def free(self) -> None:
        if self.ptr:
            lc.llama_sampler_free(self.ptr)
            self.ptr = None
