"""Embeddings give the decode threads back: an embedding context's llama.cpp work runs on a
thread of its own per call, so no OpenMP team outlives the call. A team that lives on makes
libgomp manage more threads than there are cores, and then every team, the chat engine's
included, spins only briefly at its barriers and sleeps: chat answers after the first embedding
would be a quarter slower (engine/embedding.py). Real model, no server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from gpt4all_api.engine.embedding import Embedder
from gpt4all_api.engine.model import Model


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def settled(before: int, timeout: float = 10.0) -> int:
    """The thread count once it is back to `before`, or whatever it is after `timeout`."""
    deadline = time.monotonic() + timeout
    while threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    return threads()


def test_an_embedding_leaves_no_threads_behind(embedded_model: Path) -> None:
    model = Model.load(embedded_model)
    try:
        before = threads()
        embedder = Embedder(model, context_size=512, threads=2, name="test")
        try:
            assert settled(before) == before
            texts = ["The harbour town woke slowly.", "Fishermen checked their nets."]
            for _ in range(2):
                vectors = embedder.embed([model.tokenize(t) for t in texts])
                assert len(vectors) == 2
                assert all(abs(np.linalg.norm(v) - 1) < 1e-6 for v in vectors)
                assert not np.allclose(vectors[0], vectors[1])
                # the call's thread and its OpenMP team (one more thread with 2) are gone
                assert settled(before) == before
        finally:
            embedder.close()
    finally:
        model.close()
    assert settled(before) == before
