"""The OpenAI Vector stores API (`/v1/vector_stores`: stores, their files, file batches and
search) on LocalDocs, with the Files API (`files_api`) beside it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..api.openai_common import check_unknown
from ..errors import NotFound
from ..protocol.common import OpenAIModel
from . import files_api
from .files_api import docs, page
from .filters import check as check_filter
from .service import LocalDocs, new_id

router = APIRouter()
router.include_router(files_api.router)

#: How soon the SDK's `*_and_poll` helpers ask again while a file is being indexed.
POLL_AFTER = {"openai-poll-after-ms": "200"}


# -- vector stores -----------------------------------------------------------------------


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Literal["last_active_at"]
    days: int = Field(..., ge=1, le=365)


class ChunkingStrategy(BaseModel):
    """Accepted for compatibility: chunks are always about 512 characters (see the docs)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "static"]
    static: dict[str, int] | None = None


class CreateVectorStore(OpenAIModel):
    name: str | None = None
    description: str | None = None
    file_ids: list[str] | None = Field(None, max_length=500)
    metadata: dict[str, str] | None = None
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None
    # -- extension: the embedding model (default: the server's) -------------------------
    embedding_model: str | None = None


class ModifyVectorStore(OpenAIModel):
    name: str | None = None
    metadata: dict[str, str] | None = None
    expires_after: ExpiresAfter | None = None


Attributes = dict[str, str | float | bool]


class CreateVectorStoreFile(OpenAIModel):
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class UpdateVectorStoreFile(OpenAIModel):
    attributes: Attributes | None


class CreateFileBatch(OpenAIModel):
    file_ids: list[str] = Field(..., min_length=1, max_length=500)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ranker: Literal["auto", "default-2024-11-15", "none"] | None = None
    score_threshold: float | None = Field(None, ge=0.0, le=1.0)


class SearchVectorStore(OpenAIModel):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int = Field(10, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: bool | None = None
    # -- extensions -----------------------------------------------------------------------
    embedding_model: str | None = Field(
        None, description="Refused unless it is the model that embedded the store."
    )
    mode: Literal["hybrid", "bm25", "vector"] = Field(
        "hybrid", description="Retrieval: hybrid (default), full-text BM25 only, or vectors only."
    )


async def store_object(d: LocalDocs, row: dict[str, Any]) -> dict[str, Any]:
    counts = await asyncio.to_thread(d.index.file_counts, row["id"])
    usage = await asyncio.to_thread(d.index.usage_bytes, row["id"])
    expires = row["expires_after"]
    expires_at = row["last_active_at"] + expires["days"] * 86400 if expires else None
    if expires_at is not None and expires_at <= time.time():
        status = "expired"
    else:
        status = "in_progress" if counts["in_progress"] else "completed"
    return {
        "id": row["id"],
        "object": "vector_store",
        "created_at": row["created_at"],
        "name": row["name"],
        "description": row["description"],
        "usage_bytes": usage,
        "file_counts": counts,
        "status": status,
        "expires_after": expires,
        "expires_at": expires_at,
        "last_active_at": row["last_active_at"],
        "metadata": row["metadata"],
        "embedding_model": row["embedding_model"],
    }


def vs_file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["file_id"],
        "object": "vector_store.file",
        "usage_bytes": row["usage_bytes"],
        "created_at": row["created_at"],
        "vector_store_id": row["store_id"],
        "status": row["status"],
        "last_error": row["last_error"],
        "chunking_strategy": {
            "type": "static",
            "static": {"max_chunk_size_tokens": 128, "chunk_overlap_tokens": 16},
        },
        "attributes": row["attributes"],
    }


@router.post("/v1/vector_stores")
async def create_vector_store(body: CreateVectorStore, request: Request) -> dict[str, Any]:
    check_unknown(request.app.state.server, body)
    d = docs(request)
    for i, file_id in enumerate(body.file_ids or []):
        if await asyncio.to_thread(d.index.file, file_id) is None:
            raise NotFound(f"No such File object: {file_id}", param=f"file_ids[{i}]")
    row = await d.create_store(
        body.name,
        body.description,
        body.metadata,
        body.expires_after.model_dump() if body.expires_after else None,
        body.embedding_model,
    )
    for file_id in dict.fromkeys(body.file_ids or []):
        await d.attach(row["id"], file_id)
    return await store_object(d, row)


@router.get("/v1/vector_stores")
async def list_vector_stores(
    request: Request,
    limit: int = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    d = docs(request)
    rows = await asyncio.to_thread(d.index.stores)
    return page([await store_object(d, r) for r in rows], min(limit, 100), order, after, before)


@router.get("/v1/vector_stores/{vector_store_id}")
async def retrieve_vector_store(vector_store_id: str, request: Request) -> dict[str, Any]:
    d = docs(request)
    return await store_object(d, await d.store(vector_store_id))


@router.post("/v1/vector_stores/{vector_store_id}")
async def modify_vector_store(
    vector_store_id: str, body: ModifyVectorStore, request: Request
) -> dict[str, Any]:
    check_unknown(request.app.state.server, body)
    d = docs(request)
    await d.store(vector_store_id)
    changes = body.model_dump(exclude_unset=True)
    await asyncio.to_thread(d.index.update_store, vector_store_id, **changes)
    return await store_object(d, await d.store(vector_store_id))


@router.delete("/v1/vector_stores/{vector_store_id}")
async def delete_vector_store(vector_store_id: str, request: Request) -> dict[str, Any]:
    d = docs(request)
    if not await asyncio.to_thread(d.index.delete_store, vector_store_id):
        raise NotFound(
            f"No vector store found with id '{vector_store_id}'.", param="vector_store_id"
        )
    return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}


@router.post("/v1/vector_stores/{vector_store_id}/files")
async def create_vector_store_file(
    vector_store_id: str, body: CreateVectorStoreFile, request: Request
) -> Response:
    check_unknown(request.app.state.server, body)
    d = docs(request)
    await d.store(vector_store_id)
    await d.attach(vector_store_id, body.file_id, body.attributes)
    row = await asyncio.to_thread(d.index.vs_file, vector_store_id, body.file_id)
    assert row is not None
    return _json(vs_file_object(row))


def _json(body: dict[str, Any]) -> Response:
    return JSONResponse(body, headers=POLL_AFTER)


@router.get("/v1/vector_stores/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: str,
    request: Request,
    limit: int = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    before: str | None = None,
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:
    d = docs(request)
    await d.store(vector_store_id)
    rows = await asyncio.to_thread(d.index.vs_files, vector_store_id, filter)
    items = [vs_file_object(r) for r in rows]
    return page(items, min(limit, 100), order, after, before)


async def _vs_file(d: LocalDocs, vector_store_id: str, file_id: str) -> dict[str, Any]:
    await d.store(vector_store_id)
    row = await asyncio.to_thread(d.index.vs_file, vector_store_id, file_id)
    if row is None:
        raise NotFound(
            f"No file found with id '{file_id}' in vector store '{vector_store_id}'.",
            param="file_id",
        )
    return row


@router.get("/v1/vector_stores/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(
    vector_store_id: str, file_id: str, request: Request
) -> Response:
    return _json(vs_file_object(await _vs_file(docs(request), vector_store_id, file_id)))


@router.post("/v1/vector_stores/{vector_store_id}/files/{file_id}")
async def update_vector_store_file(
    vector_store_id: str, file_id: str, body: UpdateVectorStoreFile, request: Request
) -> dict[str, Any]:
    check_unknown(request.app.state.server, body)
    d = docs(request)
    await _vs_file(d, vector_store_id, file_id)
    await asyncio.to_thread(d.index.set_attributes, vector_store_id, file_id, body.attributes or {})
    return vs_file_object(await _vs_file(d, vector_store_id, file_id))


@router.get("/v1/vector_stores/{vector_store_id}/files/{file_id}/content")
async def vector_store_file_content(
    vector_store_id: str, file_id: str, request: Request
) -> dict[str, Any]:
    d = docs(request)
    await _vs_file(d, vector_store_id, file_id)
    chunks = await asyncio.to_thread(d.index.file_chunks, vector_store_id, file_id)
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": c.text} for c in chunks],
        "has_more": False,
        "next_page": None,
    }


@router.delete("/v1/vector_stores/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(
    vector_store_id: str, file_id: str, request: Request
) -> dict[str, Any]:
    d = docs(request)
    await _vs_file(d, vector_store_id, file_id)
    await asyncio.to_thread(d.index.detach, vector_store_id, file_id)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


# -- file batches ------------------------------------------------------------------------


async def batch_object(d: LocalDocs, vector_store_id: str, batch_id: str) -> dict[str, Any]:
    row = await asyncio.to_thread(d.index.batch, vector_store_id, batch_id)
    if row is None:
        raise NotFound(f"No file batch found with id '{batch_id}'.", param="batch_id")
    counts = await asyncio.to_thread(d.index.file_counts, vector_store_id, batch_id)
    if row["cancelled"]:
        status = "cancelled"
    elif counts["in_progress"]:
        status = "in_progress"
    elif counts["failed"] and not counts["completed"]:
        status = "failed"
    else:
        status = "completed"
    return {
        "id": batch_id,
        "object": "vector_store.files_batch",
        "created_at": row["created_at"],
        "vector_store_id": vector_store_id,
        "status": status,
        "file_counts": counts,
    }


@router.post("/v1/vector_stores/{vector_store_id}/file_batches")
async def create_file_batch(
    vector_store_id: str, body: CreateFileBatch, request: Request
) -> Response:
    check_unknown(request.app.state.server, body)
    d = docs(request)
    await d.store(vector_store_id)
    for i, file_id in enumerate(body.file_ids):
        if await asyncio.to_thread(d.index.file, file_id) is None:
            raise NotFound(f"No such File object: {file_id}", param=f"file_ids[{i}]")
    batch_id = new_id("vsfb_")
    await asyncio.to_thread(d.index.add_batch, batch_id, vector_store_id)
    for file_id in dict.fromkeys(body.file_ids):
        await d.attach(vector_store_id, file_id, body.attributes, batch_id)
    return _json(await batch_object(d, vector_store_id, batch_id))


@router.get("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(vector_store_id: str, batch_id: str, request: Request) -> Response:
    d = docs(request)
    await d.store(vector_store_id)
    return _json(await batch_object(d, vector_store_id, batch_id))


@router.post("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(
    vector_store_id: str, batch_id: str, request: Request
) -> dict[str, Any]:
    d = docs(request)
    await d.store(vector_store_id)
    await batch_object(d, vector_store_id, batch_id)
    await asyncio.to_thread(d.index.cancel_batch, vector_store_id, batch_id)
    return await batch_object(d, vector_store_id, batch_id)


@router.get("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(
    vector_store_id: str,
    batch_id: str,
    request: Request,
    limit: int = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    before: str | None = None,
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:
    d = docs(request)
    await d.store(vector_store_id)
    await batch_object(d, vector_store_id, batch_id)
    rows = await asyncio.to_thread(d.index.vs_files, vector_store_id, filter, batch_id)
    return page([vs_file_object(r) for r in rows], min(limit, 100), order, after, before)


# -- search ------------------------------------------------------------------------------


@router.post("/v1/vector_stores/{vector_store_id}/search")
async def search_vector_store(
    vector_store_id: str, body: SearchVectorStore, request: Request
) -> dict[str, Any]:
    check_unknown(request.app.state.server, body)
    if body.filters is not None:
        check_filter(body.filters, "filters")
    queries = [body.query] if isinstance(body.query, str) else body.query
    threshold = body.ranking_options.score_threshold if body.ranking_options else None
    results = await docs(request).search(
        [vector_store_id],
        " ".join(queries),
        limit=body.max_num_results,
        threshold=threshold or 0.0,
        filters=body.filters,
        embedding_model=body.embedding_model,
        mode=body.mode,
    )
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [r.openai() for r in results],
        "has_more": False,
        "next_page": None,
    }
