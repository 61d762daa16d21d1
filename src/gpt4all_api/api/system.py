"""Health and engine statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..state import ServerState

router = APIRouter()


@router.get("/health", response_model=None)
async def health(request: Request) -> Any:
    """200 once the default model is loaded; 503 while it loads (or if it failed to)."""
    state: ServerState = request.app.state.server
    if state.ready.is_set():
        return {"status": "ok", "model": state.default_model}
    status = "error" if state.load_error else "loading"
    return JSONResponse(
        {"status": status, "model": state.default_model, "error": state.load_error},
        status_code=503,
    )


@router.get("/v1/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Slots, queue and KV use of every loaded model (our extension)."""
    state: ServerState = request.app.state.server
    return {
        "threads": state.settings.threads,
        "models": {
            name: dataclasses.asdict(loaded.engine.stats())
            for name, loaded in state.registry.loaded.items()
        },
    }
