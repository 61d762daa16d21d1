"""The OpenAI Files API (`/v1/files`): uploads kept in the LocalDocs data folder, by id."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from ..errors import InvalidRequest, PayloadTooLarge
from ..state import ServerState
from .service import LocalDocs

router = APIRouter()

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


def docs(request: Request) -> LocalDocs:
    state: ServerState = request.app.state.server
    assert state.localdocs is not None
    return state.localdocs


def page(
    items: list[dict[str, Any]], limit: int, order: str, after: str | None, before: str | None
) -> dict[str, Any]:
    """A list page, as OpenAI's cursor pagination has it."""
    if not 1 <= limit <= 10_000:
        raise InvalidRequest("limit must be between 1 and 10000", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    if order == "desc":
        items = items[::-1]
    ids = [i["id"] for i in items]
    if after is not None:
        items = items[ids.index(after) + 1 :] if after in ids else []
    if before is not None:
        ids = [i["id"] for i in items]
        items = items[: ids.index(before)] if before in ids else items
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


# -- files -------------------------------------------------------------------------------


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "expires_at": None,
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
    }


@router.post("/v1/files")
async def create_file(
    request: Request,
    file: Annotated[UploadFile, File(description="The file to upload.")],
    purpose: Annotated[str, Form(description="What the file is for (LocalDocs: assistants).")],
) -> dict[str, Any]:
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}", param="purpose"
        )
    limit = request.app.state.server.settings.max_file_size
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The file is larger than this server's limit of {limit} bytes.")
    row = await docs(request).add_file(file.filename or "upload", data, purpose)
    return file_object(row)


@router.get("/v1/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    rows = await asyncio.to_thread(docs(request).index.files, purpose)
    return page([file_object(r) for r in rows], limit, order, after, None)


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> dict[str, Any]:
    return file_object(await docs(request).file(file_id))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def file_content(file_id: str, request: Request) -> Response:
    d = docs(request)
    row = await d.file(file_id)
    data = await asyncio.to_thread(d.index.read_content, file_id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(row['filename'], safe='')}"
        },
    )


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    d = docs(request)
    await d.file(file_id)
    await asyncio.to_thread(d.index.delete_file, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
