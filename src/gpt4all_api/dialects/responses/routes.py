"""POST /v1/responses and the stored responses: GET, DELETE, input_items."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from ...api.streaming import JSONBody, sse_response
from ...core import reply
from ...core.plan import Turn
from ...core.run import new_id, start
from ...errors import APIError, NotFound
from ...localdocs import responses as file_search
from ...state import ServerState
from .. import ignored_tools_headers
from . import render
from .protocol import ResponsesRequest
from .store import ResponseStore
from .translate import Translated, translate

if TYPE_CHECKING:
    from .store_pg import PostgresResponseStore

log = logging.getLogger(__name__)
router = APIRouter()


def _store(state: ServerState) -> ResponseStore | PostgresResponseStore:
    if state.responses is None:
        s = state.settings
        if s.database_url:
            from .store_pg import PostgresResponseStore

            state.responses = PostgresResponseStore(
                s.database_url, max_count=s.responses_max_stored, max_age=s.responses_max_age
            )
        else:
            state.responses = ResponseStore(
                s.data_dir / "responses.sqlite3",
                max_count=s.responses_max_stored,
                max_age=s.responses_max_age,
            )
    return state.responses


def _stored_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        item = dict(item)
        item.setdefault("type", "message")
        if item["type"] == "message":
            item.setdefault("id", new_id("msg", "_"))
            item.setdefault("status", "completed")
            if isinstance(item.get("content"), str):
                item["content"] = [{"type": "input_text", "text": item["content"]}]
        else:
            item.setdefault("id", new_id(item["type"].split("_")[0], "_"))
        out.append(item)
    return out


def _conversation(t: Translated, instructions: str | None, end: reply.Finished) -> tuple:
    turns = t.plan.turns[1:] if instructions else t.plan.turns
    return (*turns, Turn("assistant", end.content or "", end.calls, reasoning=end.reasoning or ""))


@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponsesRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    history: tuple[Turn, ...] = ()
    if body.previous_response_id:
        found = await asyncio.to_thread(_store(state).turns, body.previous_response_id)
        if found is None:
            raise NotFound(
                f"Previous response with id '{body.previous_response_id}' not found.",
                param="previous_response_id",
            )
        history = found
    t = translate(state, body, history)
    search = await file_search.prepare(state, body.tools, body.include, body.tool_choice, t.plan)
    run = await start(state, search.plan if search else t.plan, "resp")
    response = render.skeleton(body, run, new_id("resp", "_"))
    headers = ignored_tools_headers(t.ignored_tools)

    async def on_done(resp: dict[str, Any], end: reply.Finished) -> None:
        if body.store is False:
            return
        turns = _conversation(t, body.instructions, end)
        try:
            await asyncio.to_thread(_store(state).put, resp, _stored_items(t.input_items), turns)
        except Exception:  # the answer still goes out; only its continuation is lost
            log.exception("could not store response %s", resp["id"])

    if t.plan.stream:

        def on_error(exc: APIError) -> tuple[str, dict[str, Any]]:
            return "error", {
                "type": "error",
                "code": exc.code,
                "message": exc.message,
                "param": exc.param,
                "sequence_number": 0,
            }

        frames = render.stream(body, run, response, on_done)
        if search:
            frames = search.stream(frames, response["output"])
        return sse_response(frames, on_error=on_error, headers=headers, ready=run.ready)
    choices = await run.collect(request)
    end = reply.final(t.plan.tools, choices[0])
    response["output"] = render.output_items(end, body)
    if search:
        search.complete(response["output"])
    render.finish(response, end, run)
    await on_done(response, end)
    return JSONBody(response, headers=headers)


async def _stored(state: ServerState, response_id: str) -> dict[str, Any]:
    found = await asyncio.to_thread(_store(state).get, response_id)
    if found is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return found


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request) -> dict[str, Any]:
    return await _stored(request.app.state.server, response_id)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    if not await asyncio.to_thread(_store(state).delete, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = 20,
    order: str = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    items = await asyncio.to_thread(_store(state).input_items, response_id)
    if items is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = max(1, min(limit, 100))
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
