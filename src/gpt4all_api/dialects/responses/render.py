"""Reply events → Responses API objects: the whole `response`, or its event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...core import reply
from ...core.run import Run, new_id
from ...errors import APIError
from .protocol import ResponsesRequest


def usage(run: Run) -> dict[str, Any]:
    prompt, completion, cached = run.tokens()
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def skeleton(body: ResponsesRequest, run: Run, response_id: str) -> dict[str, Any]:
    """The response object before any output (as `response.created` shows it)."""
    fmt = (
        body.text.format.model_dump(by_alias=True, exclude_none=True)
        if (body.text and body.text.format)
        else {"type": "text"}
    )
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(run.created),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "model": run.loaded.entry.id,
        "output": [],
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.safety_identifier,
        "service_tier": "default",
        "store": body.store is not False,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt, "verbosity": "medium"},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": body.tools or [],
        "top_logprobs": 0,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "usage": None,
        "user": body.user,
        "metadata": body.metadata or {},
    }


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def call_item(call: Any, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + call.id.removeprefix("call_"),
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def finish(response: dict[str, Any], end: reply.Finished, run: Run) -> dict[str, Any]:
    """Status, incomplete details and usage of a finished response."""
    if end.finish == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"
    response["usage"] = usage(run)
    return response


def output_items(end: reply.Finished) -> list[dict[str, Any]]:
    items = []
    if end.content:
        items.append(message_item(new_id("msg", "_"), end.content, _item_status(end)))
    items += [call_item(c) for c in end.calls]
    return items


def _item_status(end: reply.Finished) -> str:
    return "incomplete" if end.finish == "length" else "completed"


class EventStream:
    """The Responses streaming events, numbered in order."""

    def __init__(self) -> None:
        self.n = 0

    def event(self, kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
        out = {"type": kind, "sequence_number": self.n, **data}
        self.n += 1
        return kind, out


async def stream(
    body: ResponsesRequest, run: Run, response: dict[str, Any], on_done: Any
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The event stream of one response. `on_done(response)` runs (and is awaited) once the
    response is whole, before `response.completed` is sent (the response is stored by then)."""
    ev = EventStream()
    yield ev.event("response.created", response=dict(response))
    yield ev.event("response.in_progress", response=dict(response))
    out: list[dict[str, Any]] = response["output"]
    msg_id = new_id("msg", "_")
    text: list[str] = []
    opened = False

    def open_message() -> list[tuple[str, dict[str, Any]]]:
        out.append(message_item(msg_id, "", "in_progress"))
        out[-1]["content"] = []
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            ev.event("response.output_item.added", output_index=len(out) - 1, item=dict(out[-1])),
            ev.event(
                "response.content_part.added",
                item_id=msg_id,
                output_index=len(out) - 1,
                content_index=0,
                part=part,
            ),
        ]

    def delta(piece: str) -> tuple[str, dict[str, Any]]:
        text.append(piece)
        return ev.event(
            "response.output_text.delta",
            item_id=msg_id,
            output_index=len(out) - 1,
            content_index=0,
            delta=piece,
            logprobs=[],
        )

    try:
        assert run.plan is not None
        async for item in reply.stream(run, run.plan.tools):
            piece = item.text if isinstance(item, reply.TextDelta) else item.tail
            if piece:
                if not opened:
                    opened = True
                    for e in open_message():
                        yield e
                yield delta(piece)
            if isinstance(item, reply.Finished):
                end = item
        if opened:
            index = next(i for i, o in enumerate(out) if o["id"] == msg_id)
            whole = "".join(text)
            done = message_item(msg_id, whole, _item_status(end))
            part = done["content"][0]
            out[index] = done
            common = {"item_id": msg_id, "output_index": index, "content_index": 0}
            yield ev.event("response.output_text.done", **common, text=whole, logprobs=[])
            yield ev.event("response.content_part.done", **common, part=part)
            yield ev.event("response.output_item.done", output_index=index, item=done)
        for call in end.calls:
            item_added = call_item(call, "in_progress")
            item_added["arguments"] = ""
            out.append(item_added)
            index = len(out) - 1
            yield ev.event("response.output_item.added", output_index=index, item=dict(item_added))
            yield ev.event(
                "response.function_call_arguments.delta",
                item_id=item_added["id"],
                output_index=index,
                delta=call.arguments,
            )
            yield ev.event(
                "response.function_call_arguments.done",
                item_id=item_added["id"],
                output_index=index,
                name=call.name,
                arguments=call.arguments,
            )
            out[index] = call_item(call)
            yield ev.event("response.output_item.done", output_index=index, item=out[index])
        finish(response, end, run)
        await on_done(response, end)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        yield ev.event(kind, response=response)
    except APIError as exc:
        response["status"] = "failed"
        response["error"] = {"code": exc.code or exc.type, "message": exc.message}
        yield ev.event("response.failed", response=response)
