"""The engine's sampler against llama.cpp's own samplers, on the real model's logits.

`SamplerChain` applies `logit_bias` and the repetition penalties itself, to the logits they touch,
and picks greedy tokens with NumPy. Every token it picks must be the one llama.cpp's chain
(`logit_bias` -> grammar -> penalties -> greedy, or top-k / top-p / min-p / temperature / draw)
picks from the same logits, with the same history and seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import llama_cpp as lc
import numpy as np
import pytest

from gpt4all_api.engine.devices import repack_by_default
from gpt4all_api.engine.sampling import SamplerChain, SamplingParams

N_ROWS = 24


class Logits:
    """A context holding the logits of N_ROWS batch positions of a real prompt."""

    def __init__(self, model_path: Path):
        lc.llama_backend_init()
        params = lc.llama_model_default_params()
        params.use_extra_bufts = repack_by_default()[0]  # as the server loads models
        self.model = lc.llama_model_load_from_file(str(model_path).encode(), params)
        assert self.model
        cp = lc.llama_context_default_params()
        cp.n_ctx, cp.n_threads, cp.n_threads_batch = 256, 1, 1
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        text = b"The cat sat on the mat. The cat sat on the mat again, and the dog said: the cat"
        buf = (lc.llama_token * 128)()
        n = lc.llama_tokenize(self.vocab, text, len(text), buf, 128, True, False)
        tokens = list(buf[:n])
        while len(tokens) < N_ROWS:
            tokens += tokens
        self.tokens = tokens[:N_ROWS]
        batch = lc.llama_batch_init(N_ROWS, 0, 1)
        for i, t in enumerate(self.tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, 1
        batch.n_tokens = N_ROWS
        assert lc.llama_decode(self.ctx, batch) == 0
        lc.llama_batch_free(batch)

    def row(self, i: int) -> np.ndarray:
        ptr = lc.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)


@pytest.fixture(scope="module")
def logits(embedded_model: Path) -> Iterator[Logits]:
    lg = Logits(embedded_model)
    yield lg
    lg.close()


def reference_chain(p: SamplingParams, lg: Logits, seed: int) -> lc.llama_sampler_p:
    """llama.cpp's chain for the same parameters, every stage one of its own samplers."""
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

    def add(s: lc.llama_sampler_p) -> None:
        lc.llama_sampler_chain_add(chain, s)

    if p.logit_bias:
        biases = (lc.llama_logit_bias * len(p.logit_bias))()
        for i, (tok, bias) in enumerate(p.logit_bias.items()):
            biases[i].token, biases[i].bias = tok, -float("inf") if bias <= -100 else bias
        add(lc.llama_sampler_init_logit_bias(lg.n_vocab, len(p.logit_bias), biases))
    if p.grammar:
        add(lc.llama_sampler_init_grammar(lg.vocab, p.grammar.encode(), b"root"))
    # -1 is the whole history for us (and Ollama); llama.cpp's sampler wants a count.
    last_n = 100_000 if p.repeat_last_n < 0 else p.repeat_last_n
    add(
        lc.llama_sampler_init_penalties(
            lg.n_vocab, last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
        )
    )
    if p.greedy:
        add(lc.llama_sampler_init_greedy())
    else:
        add(lc.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(lc.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(lc.llama_sampler_init_min_p(p.min_p, 1))
        add(lc.llama_sampler_init_temp(p.temperature))
        add(lc.llama_sampler_init_dist(seed))
    return chain


CASES = {
    "greedy": SamplingParams(temperature=0.0, repeat_penalty=1.0),
    "greedy, repeat penalty": SamplingParams(temperature=0.0, repeat_penalty=1.5),
    "greedy, all penalties": SamplingParams(
        temperature=0.0, repeat_penalty=1.3, frequency_penalty=0.7, presence_penalty=0.4
    ),
    "greedy, bias and penalty": SamplingParams(temperature=0.0, repeat_penalty=1.18),
    "greedy, window of 4": SamplingParams(temperature=0.0, repeat_penalty=3.0, repeat_last_n=4),
    "greedy, whole history": SamplingParams(
        temperature=0.0, repeat_penalty=1.3, frequency_penalty=0.2, repeat_last_n=-1
    ),
    "sampled": SamplingParams(temperature=0.9, top_k=40, top_p=0.95, repeat_penalty=1.0),
    "sampled, penalties": SamplingParams(
        temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, repeat_penalty=1.18, presence_penalty=0.3
    ),
    "sampled, bias": SamplingParams(temperature=1.0, top_k=0, repeat_penalty=1.1),
    "greedy, grammar and penalty": SamplingParams(
        temperature=0.0, repeat_penalty=1.4, grammar='root ::= ("the" | " cat" | " sat" | ".")+'
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_every_token_is_the_one_llama_cpp_samplers_pick(name: str, logits: Logits) -> None:
    p = CASES[name]
    row0 = logits.row(0)
    if "bias" in name:
        # Push up a token that is likely anyway and one that is not, and ban the favourite.
        order = np.argsort(-row0)
        p = SamplingParams(
            **{
                **p.__dict__,
                "logit_bias": {int(order[1]): 5.0, int(order[500]): 12.0, int(order[0]): -100},
            }
        )
    rng = random.Random(name)
    seed = 1234
    ours = SamplerChain(p.with_seed(seed), logits.vocab, logits.n_vocab)
    ref = reference_chain(p, logits, seed)
    history = [rng.randrange(logits.n_vocab) for _ in range(6)] + logits.tokens[:10]
    ours.accept_history(history)
    # The reference takes the history through its penalty stage only.
    penalties = lc.llama_sampler_chain_get(ref, int(bool(p.logit_bias)) + int(bool(p.grammar)))
    for t in history:
        lc.llama_sampler_accept(penalties, t)
    picked = []
    try:
        for step in range(60):
            i = step % N_ROWS
            before = logits.row(i)
            want = lc.llama_sampler_sample(ref, logits.ctx, i)
            got = ours.sample(logits.ctx, i)
            assert got == want, f"step {step}: {got} != {want}"
            # The model's logits are left as they were, for log-probabilities read afterwards.
            assert np.array_equal(logits.row(i), before, equal_nan=True)
            picked.append(got)
    finally:
        ours.free()
        lc.llama_sampler_free(ref)
    if p.uses_penalties and p.greedy and p.repeat_penalty >= 1.3:
        assert len(set(picked)) > 1, "the penalty made no difference to a greedy pick"
