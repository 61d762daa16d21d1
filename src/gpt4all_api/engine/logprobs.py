"""Log-probabilities read from the logits llama.cpp left for one batch position.

They are the model's distribution after the transforms OpenAI documents as changing the logits
(`logit_bias`, presence and frequency penalties) and our repeat penalty, so that a greedy pick is
always the most likely token listed; temperature and truncation (top_k / top_p / min_p) only
shape how a token is drawn and are not applied.
Vectorised with NumPy: no Python loop over the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp as lc
import numpy as np

from .request import TokenLogprob
from .sampling import SamplingParams, logit_bias_arrays, logits_row, penalized


class LogprobReader:
    def __init__(self, ctx: lc.llama_context_p, n_vocab: int):
        self._ctx = ctx
        self._n_vocab = n_vocab

    def read(
        self,
        batch_index: int,
        token: int,
        top: int,
        params: SamplingParams,
        history: Sequence[int] = (),
    ) -> TokenLogprob:
        logits = logits_row(self._ctx, batch_index, self._n_vocab).astype(np.float64)
        if params.logit_bias:
            ids, bias = logit_bias_arrays(params, np.float64)
            logits[ids] += bias
        if history and params.uses_penalties and params.repeat_last_n != 0:
            ids, counts = np.unique(np.fromiter(history, dtype=np.int64), return_counts=True)
            logits[ids] = penalized(logits[ids], counts, params)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
        alternatives: tuple[tuple[int, float], ...] = ()
        if top > 0:
            k = min(top, self._n_vocab)
            ids = np.argpartition(-logprobs, k - 1)[:k]
            ids = ids[np.argsort(-logprobs[ids], kind="stable")]
            alternatives = tuple((int(i), float(logprobs[i])) for i in ids)
        return TokenLogprob(token=token, logprob=float(logprobs[token]), top=alternatives)
