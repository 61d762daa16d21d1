"""Embeddings: a second llama.cpp context of a loaded model, made for pooled embeddings.

Inputs are packed several sequences to a `llama_decode`; each sequence's pooled vector is
L2-normalised. Models that name their pooling in the GGUF (embedding models) keep it; others
(chat models) use mean pooling.

Every call runs on a thread of its own (`own_thread.py`), one at a time, that ends when the
call does: a worker thread kept for embeddings would keep its OpenMP team, and with it the chat
engine's decode threads would sleep at their barriers after the first embedding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import llama_cpp as lc
import numpy as np

from ..errors import ContextLengthExceeded, EngineError
from .model import Model
from .own_thread import run_on_own_thread

log = logging.getLogger(__name__)

MAX_SEQS = 16

T = TypeVar("T")


class Embedder:
    def __init__(self, model: Model, *, context_size: int, threads: int, name: str):
        self.model = model
        self.name = name
        self.n_ctx = min(context_size, model.n_ctx_train or context_size)
        self._lock = threading.Lock()  # one call at a time on the context
        self._ctx = None
        self._call(self._open, threads)

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            return run_on_own_thread(fn, *args, name=f"embed:{self.name}")

    def _open(self, threads: int) -> None:
        params = lc.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = self.n_ctx
        params.n_seq_max = MAX_SEQS
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        params.embeddings = True
        arch = self.model.metadata.get("general.architecture", "")
        if f"{arch}.pooling_type" not in self.model.metadata:
            params.pooling_type = lc.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = True
        self._ctx = lc.llama_init_from_model(self.model.ptr, params)
        if not self._ctx:
            raise EngineError(f"llama.cpp could not create an embedding context for {self.name}")
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(self.n_ctx, 0, 1)
        self.n_embd = lc.llama_model_n_embd(self.model.ptr)

    def check(self, inputs: list[list[int]]) -> None:
        for i, tokens in enumerate(inputs):
            if len(tokens) > self.n_ctx:
                raise ContextLengthExceeded(
                    f"input {i} has {len(tokens)} tokens; the embedding context holds {self.n_ctx}",
                    param="input",
                )

    def embed(self, inputs: list[list[int]]) -> list[np.ndarray]:
        """Pooled, normalised vectors, one per input (blocking; call from a worker thread)."""
        self.check(inputs)
        return self._call(self._embed, inputs)

    def _embed(self, inputs: list[list[int]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        group: list[list[int]] = []
        used = 0
        for tokens in inputs:
            if group and (used + len(tokens) > self.n_ctx or len(group) == MAX_SEQS):
                out += self._decode(group)
                group, used = [], 0
            group.append(tokens)
            used += len(tokens)
        if group:
            out += self._decode(group)
        return out

    def _decode(self, group: list[list[int]]) -> list[np.ndarray]:
        b = self._batch
        n = 0
        for seq, tokens in enumerate(group):
            for pos, tok in enumerate(tokens):
                b.token[n] = tok
                b.pos[n] = pos
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq
                b.logits[n] = True
                n += 1
        b.n_tokens = n
        lc.llama_memory_clear(self._mem, True)
        rc = lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc}) while embedding")
        vectors = []
        for seq in range(len(group)):
            ptr = lc.llama_get_embeddings_seq(self._ctx, seq)
            if not ptr:
                raise EngineError("llama.cpp returned no pooled embedding")
            v = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float64)
            norm = np.linalg.norm(v)
            vectors.append(v / norm if norm > 0 else v)
        lc.llama_memory_clear(self._mem, True)
        return vectors

    def close(self) -> None:
        def free() -> None:
            if self._ctx:
                lc.llama_batch_free(self._batch)
                lc.llama_free(self._ctx)
                self._ctx = None

        self._call(free)
