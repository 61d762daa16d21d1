"""POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from ..engine.embedding import Embedder
from ..errors import InvalidRequest
from ..library.registry import Loaded
from ..protocol.embeddings import EmbeddingRequest
from ..state import ServerState
from .openai_common import check_unknown

router = APIRouter()


async def embedder_for(state: ServerState, loaded: Loaded) -> Embedder:
    if loaded.embedder is None:
        embedder = await asyncio.to_thread(
            Embedder,
            loaded.model,
            context_size=state.settings.context_size,
            threads=state.settings.threads,
            name=loaded.entry.id,
        )
        if loaded.embedder is None:
            loaded.embedder = embedder
        else:  # another request made one meanwhile
            await asyncio.to_thread(embedder.close)
    return loaded.embedder


def shorten(v: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka-style: the first `dimensions` of a vector, normalised again."""
    if not dimensions:
        return v
    v = v[:dimensions]
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _encode(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector.astype(np.float32)]


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    items = body.inputs()
    loaded = await state.registry.get(body.model or state.default_model)
    model = loaded.model
    inputs: list[list[int]] = []
    for item in items:
        if isinstance(item, str):
            inputs.append(model.tokenize(item))
        else:
            model.check_tokens(item, "input")
            inputs.append(list(item))
    embedder = await embedder_for(state, loaded)
    if body.dimensions is not None and body.dimensions > embedder.n_embd:
        raise InvalidRequest(
            f"dimensions must be at most {embedder.n_embd} for this model", param="dimensions"
        )
    vectors = await asyncio.to_thread(embedder.embed, inputs)
    data = []
    for i, v in enumerate(vectors):
        v = shorten(v, body.dimensions)
        data.append(
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        )
    n_tokens = sum(len(t) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": loaded.entry.id,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
