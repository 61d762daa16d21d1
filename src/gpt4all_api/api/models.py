"""Models: list, retrieve-or-download, pull (streamed progress), delete, and the catalog.

`GET /v1/models/{id}` keeps the original API's "retrieve or download" behaviour: a catalog model
that is not on disk yet starts downloading and answers 202 with its progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..errors import Conflict, ModelNotFound
from ..library import download as dl
from ..library.catalog import CatalogEntry, CatalogSnapshot
from ..library.download import Download, DownloadManager
from ..library.store import LocalModel, check_name, not_found
from ..state import ServerState
from .streaming import sse_response

router = APIRouter()

PROGRESS_EVERY = 0.25  # seconds between progress frames


def model_card(state: ServerState, m: LocalModel) -> dict[str, Any]:
    """A model object, with our fields: `offload` (device, GPU layers, device memory) while
    the model is loaded, else null."""
    known = state.store.catalog.cached().by_filename(m.id) if state.store.catalog else None
    loaded = state.registry.loaded.get(m.id)
    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "gpt4all-api",
        "size": m.size,
        "loaded": loaded is not None,
        "default": m.id == state.default_model,
        "embedded": m.embedded,
        "name": known.name if known else None,
        "offload": loaded.offload.as_dict() if loaded is not None else None,
    }


def downloads_of(state: ServerState) -> DownloadManager:
    assert state.downloads is not None
    return state.downloads


async def _catalog(state: ServerState, *, refresh: bool = False) -> CatalogSnapshot:
    if state.store.catalog is None:
        return CatalogSnapshot()
    return await asyncio.to_thread(state.store.catalog.get, refresh=refresh)


async def catalog_entry(state: ServerState, name: str) -> CatalogEntry:
    entry = (await _catalog(state)).find(name)
    if entry is None:
        raise not_found(name, " locally or in the catalog")
    return entry


def download_status(d: Download) -> dict[str, Any]:
    p = d.progress()
    return {
        "id": d.entry.filename,
        "object": "model.download",
        "name": d.entry.name,
        "status": p.status,
        "completed": p.completed,
        "total": p.total,
        "bytes_per_second": p.bytes_per_second,
    }


def _check_disk(state: ServerState, entry: CatalogEntry) -> None:
    """Refuse at once a download that cannot fit (the download checks again itself)."""
    models_dir = state.settings.models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = dl.partial_path(models_dir, entry.filename)
    dl.check_free_space(entry, partial, state.settings.download_reserve)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    return {
        "object": "list",
        "data": [model_card(state, m) for m in await asyncio.to_thread(state.store.list)],
    }


@router.get("/v1/catalog")
async def list_catalog(request: Request, refresh: bool = False) -> dict[str, Any]:
    """The downloadable models of the GPT4All catalog (cached; `offline` when it could not be
    fetched and the cached copy is shown)."""
    state: ServerState = request.app.state.server
    snap = await _catalog(state, refresh=refresh)
    local = {m.id for m in await asyncio.to_thread(state.store.list)}
    downloads = downloads_of(state)
    return {
        "object": "list",
        "offline": snap.offline,
        "fetched_at": snap.fetched_at,
        "data": [
            {
                "id": e.filename,
                "object": "catalog_model",
                "name": e.name,
                "filename": e.filename,
                "filesize": e.filesize,
                "ramrequired": e.ramrequired,
                "parameters": e.parameters,
                "quant": e.quant,
                "type": e.type,
                "description": e.description,
                "installed": e.filename in local,
                "downloading": downloads.downloading(e.filename),
            }
            for e in snap.entries
        ],
    }


@router.get("/v1/models/{model_id:path}", response_model=None)
async def retrieve_model(model_id: str, request: Request) -> Any:
    """A local model's object, or (for a catalog model) its download's progress with 202."""
    state: ServerState = request.app.state.server
    check_name(model_id)
    local = await asyncio.to_thread(state.store.find, model_id)
    if local is not None:
        return model_card(state, local)
    entry = await catalog_entry(state, model_id)
    downloads = downloads_of(state)
    current = downloads.get(entry.filename)
    if current is not None and current.done.is_set():
        downloads.forget(current)
        if current.error is not None:
            raise current.error
        local = await asyncio.to_thread(state.store.find, entry.filename)
        if local is not None:
            return model_card(state, local)
    if current is None or current.done.is_set():
        _check_disk(state, entry)
    d = downloads.start(entry)
    return JSONResponse(download_status(d), status_code=202)


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str


@router.post("/v1/models/pull", response_model=None)
async def pull_model(body: PullRequest, request: Request) -> Any:
    """Download a catalog model, streaming progress events until it is ready."""
    state: ServerState = request.app.state.server
    check_name(body.model)
    local = await asyncio.to_thread(state.store.find, body.model)
    if local is not None:
        return sse_response(_installed(local))
    entry = await catalog_entry(state, body.model)
    return sse_response(pull_progress(downloads_of(state), entry))


async def _installed(m: LocalModel) -> AsyncIterator[dict[str, Any]]:
    frame = {"model": m.id, "completed": m.size, "total": m.size, "bytes_per_second": None}
    yield {"status": "starting", **frame}
    yield {"status": "success", **frame}


async def pull_progress(downloads: DownloadManager, entry: CatalogEntry) -> AsyncIterator[dict]:
    d = downloads.start(entry)
    last: dict[str, Any] | None = None
    first = d.progress().frame()
    yield {**first, "status": "starting"}
    seen = 1  # statuses of d.statuses already reported
    while not d.done.is_set():
        passed = d.statuses[seen:]
        frame = d.progress().frame()
        seen += len(passed)
        # a stage shorter than the polling interval (a quick "verifying") still gets its frame
        for status in passed[:-1]:
            yield {**frame, "status": status}
        if frame != last and frame["status"] != "starting":
            yield frame
            last = frame
        await asyncio.sleep(PROGRESS_EVERY)
    final = d.progress().frame()
    for status in d.statuses[seen:]:
        if status not in ("starting", final["status"]):
            yield {**final, "status": status}
    if d.error is not None:
        downloads.forget(d)
        final["status"] = "error"
    yield final


async def delete_local(state: ServerState, model_id: str) -> str:
    """Remove a model file (or a partial download) from the models folder: the id removed."""
    check_name(model_id)
    local = await asyncio.to_thread(state.store.find, model_id)
    downloads = downloads_of(state)
    if local is None:
        entry = (await _catalog(state)).find(model_id)
        partial = dl.partial_path(state.settings.models_dir, entry.filename) if entry else None
        if entry is None or partial is None or not partial.is_file():
            raise ModelNotFound(model_id)
        if downloads.downloading(entry.filename):
            raise Conflict(
                f"{entry.filename} is being downloaded", param="model", code="download_in_progress"
            )
        partial.unlink(missing_ok=True)
        return entry.filename
    if local.id == state.default_model and not local.embedded:
        raise Conflict(
            f"{local.id} is the server's default model and cannot be deleted",
            param="model",
            code="model_protected",
        )
    if not local.embedded:
        await state.registry.unload_idle(local.id)
    state.store.delete(local)
    return local.id


@router.delete("/v1/models/{model_id:path}")
async def delete_model(model_id: str, request: Request) -> dict[str, Any]:
    """Remove a model file (or a partial download) from the models folder."""
    deleted = await delete_local(request.app.state.server, model_id)
    return {"id": deleted, "object": "model", "deleted": True}
