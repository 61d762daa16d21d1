"""`/api/embed` and the legacy `/api/embeddings`, on the embedding context `/v1/embeddings` uses."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from ...api.embeddings import embedder_for, shorten
from ...api.openai_common import check_unknown
from ...core.plan import parse_keep_alive
from ...errors import InvalidRequest
from ...library.registry import Loaded
from ...state import ServerState
from . import models, render, translate
from .protocol import EmbeddingsRequest, EmbedRequest, JSONRoute

router = APIRouter(route_class=JSONRoute)


async def _vectors(
    state: ServerState, loaded: Loaded, texts: list[str], *, truncate: bool, dimensions: int
) -> tuple[list[list[float]], int]:
    """Normalised embeddings of `texts` (cut to `dimensions` and normalised again) and the
    number of tokens embedded."""
    if not texts:
        return [], 0
    embedder = await embedder_for(state, loaded)
    if dimensions > embedder.n_embd:
        raise InvalidRequest(
            f"dimensions must be at most {embedder.n_embd} for this model", param="dimensions"
        )
    tokens = [loaded.model.tokenize(text) for text in texts]
    if truncate:
        tokens = [t[: embedder.n_ctx] for t in tokens]
    out = []
    for v in await asyncio.to_thread(embedder.embed, tokens):
        out.append(shorten(v, dimensions).astype(np.float32).tolist())
    return out, sum(len(t) for t in tokens)


async def _embedding_model(state: ServerState, name: str, keep_alive: Any) -> Loaded:
    entry = models.resolve(state, name)
    asked = parse_keep_alive(keep_alive)
    return await state.registry.get(entry.id, keep_alive=models.keep_alive(state, asked))


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    clock = render.Clock(time.monotonic())
    check_unknown(state, body)
    translate.options(body.options)  # checked; nothing in it steers embeddings
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if texts == [""]:
        texts = []  # Ollama: an empty input only loads the model
    if any(not text for text in texts):
        raise InvalidRequest("input must not hold empty strings", param="input")
    loaded = await _embedding_model(state, body.model, body.keep_alive)
    clock.loaded = time.monotonic()
    truncate = body.truncate is not False
    vectors, count = await _vectors(
        state, loaded, texts, truncate=truncate, dimensions=body.dimensions or 0
    )
    return {
        "model": body.model,
        "embeddings": vectors,
        **clock.load_stats(),
        "prompt_eval_count": count,
    }


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request) -> dict[str, Any]:
    """The legacy endpoint: one `prompt`, one `embedding` (normalised, as `/api/embed`'s)."""
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    translate.options(body.options)
    loaded = await _embedding_model(state, body.model, body.keep_alive)
    texts = [body.prompt] if body.prompt else []
    vectors, _ = await _vectors(state, loaded, texts, truncate=True, dimensions=0)
    return {"embedding": vectors[0] if vectors else []}
