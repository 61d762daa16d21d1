"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..library.store import LocalModel
from ..state import ServerState

router = APIRouter()


def model_card(state: ServerState, m: LocalModel) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "gpt4all-api",
        "size": m.size,
        "loaded": state.registry.is_loaded(m.id),
        "default": m.id == state.default_model,
        "embedded": m.embedded,
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    return {"object": "list", "data": [model_card(state, m) for m in state.store.list()]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    return model_card(state, state.store.resolve(model_id))
