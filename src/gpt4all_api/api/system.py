"""Health, readiness, Prometheus metrics and engine statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..state import ServerState

router = APIRouter()


@router.get("/health", response_model=None)
async def health(request: Request) -> Any:
    """200 once the default model is loaded; 503 while it loads (or if it failed to).
    `backend` names where models run: cpu, metal, cuda, vulkan."""
    state: ServerState = request.app.state.server
    backend = state.registry.backend
    if state.ready.is_set():
        return {"status": "ok", "model": state.default_model, "backend": backend}
    status = "error" if state.load_error else "loading"
    return JSONResponse(
        {
            "status": status,
            "model": state.default_model,
            "backend": backend,
            "error": state.load_error,
        },
        status_code=503,
    )


@router.get("/ready", response_model=None)
async def ready(request: Request) -> Any:
    """200 once the default model has loaded, while its queue has room; 503 otherwise.

    A default model unloaded later for being idle (keep-alive) still counts as ready: the next
    request loads it again.
    """
    state: ServerState = request.app.state.server
    body: dict[str, Any] = {"model": state.default_model}
    if not state.ready.is_set():
        body.update(status="error" if state.load_error else "loading", error=state.load_error)
        return JSONResponse(body, status_code=503)
    loaded = state.registry.loaded.get(state.default_model)
    limit = state.settings.max_queue
    waiting = loaded.engine.stats().waiting if loaded is not None else 0
    body.update(loaded=loaded is not None, waiting=waiting, max_queue=limit)
    if limit and waiting >= limit:
        return JSONResponse({**body, "status": "overloaded"}, status_code=503)
    return {**body, "status": "ready"}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)


@router.get("/v1/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Slots, queue, KV use and GPU offload of every loaded model (our extension)."""
    state: ServerState = request.app.state.server
    return {
        "threads": state.settings.threads,
        "backend": state.registry.backend,
        "models": {
            name: {**dataclasses.asdict(loaded.engine.stats()), "offload": loaded.offload.as_dict()}
            for name, loaded in state.registry.loaded.items()
        },
    }
