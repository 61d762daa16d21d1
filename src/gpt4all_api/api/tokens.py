"""POST /tokenize and POST /detokenize (llama.cpp server's shapes, plus a `model` field)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..state import ServerState

router = APIRouter()


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    content: str = Field(..., description="Text to tokenize.")
    add_special: bool = Field(True, description="Add the model's BOS token when it uses one.")
    parse_special: bool = Field(True, description="Read special-token text as special tokens.")
    with_pieces: bool = Field(False, description="Return each token's text too.")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tokens: list[int]


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    loaded = await state.registry.get(body.model or state.default_model)
    model = loaded.model
    tokens = model.tokenize(
        body.content, add_special=body.add_special, parse_special=body.parse_special
    )
    if not body.with_pieces:
        return {"model": loaded.entry.id, "tokens": tokens}
    return {
        "model": loaded.entry.id,
        "tokens": [{"id": t, "piece": model.token_text(t)} for t in tokens],
    }


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    loaded = await state.registry.get(body.model or state.default_model)
    loaded.model.check_tokens(body.tokens, "tokens")
    return {"model": loaded.entry.id, "content": loaded.model.detokenize(body.tokens)}
