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
        "output_tokens_details": {"reasoning_tokens": run.reasoning_tokens},
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
        "reasoning": {
            "effort": body.reasoning.effort if body.reasoning else None,
            "summary": _summary(body),
        },
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


def _summary(body: ResponsesRequest) -> str | None:
    r = body.reasoning
    summary = (r.summary or r.generate_summary) if r else None
    return None if summary == "none" else summary


def reasoning_item(item_id: str, text: str, status: str, summary: bool) -> dict[str, Any]:
    """The model's thinking as a reasoning item: its text as `reasoning_text` content, and as
    the summary too when one was asked for (the server does not summarise it)."""
    return {
        "type": "reasoning",
        "id": item_id,
        "status": status,
        "summary": [{"type": "summary_text", "text": text}] if summary else [],
        "content": [{"type": "reasoning_text", "text": text}],
        "encrypted_content": None,
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


def output_items(end: reply.Finished, body: ResponsesRequest) -> list[dict[str, Any]]:
    items = []
    if end.reasoning is not None:
        status = _reasoning_status(end)
        item = reasoning_item(new_id("rs", "_"), end.reasoning, status, _summary(body) is not None)
        items.append(item)
    if end.content:
        items.append(message_item(new_id("msg", "_"), end.content, _item_status(end)))
    items += [call_item(c) for c in end.calls]
    items += [call_item(c, "incomplete") for c in end.cut_calls]  # as OpenAI: cut by the limit
    return items


def _reasoning_status(end: reply.Finished) -> str:
    """`incomplete` only when the limit cut the reply while it was still thinking."""
    cut = end.finish == "length" and not (end.content or end.calls or end.cut_calls)
    return "incomplete" if cut else "completed"


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


Frame = tuple[str, dict[str, Any]]


class _MessageEvents:
    """The events of the one assistant message of a streamed response, opened on its first
    text and closed once the reply is finished."""

    def __init__(self, ev: EventStream, out: list[dict[str, Any]]):
        self.ev, self.out = ev, out
        self.id = new_id("msg", "_")
        self.text: list[str] = []
        self.index = -1

    def delta(self, piece: str) -> list[Frame]:
        frames = []
        if self.index < 0:
            self.out.append({**message_item(self.id, "", "in_progress"), "content": []})
            self.index = len(self.out) - 1
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            frames += [
                self.ev.event(
                    "response.output_item.added", output_index=self.index, item=dict(self.out[-1])
                ),
                self.ev.event("response.content_part.added", **self._at(), part=part),
            ]
        self.text.append(piece)
        frames.append(
            self.ev.event("response.output_text.delta", **self._at(), delta=piece, logprobs=[])
        )
        return frames

    def close(self, end: reply.Finished) -> list[Frame]:
        if self.index < 0:
            return []
        whole = "".join(self.text)
        done = message_item(self.id, whole, _item_status(end))
        self.out[self.index] = done
        return [
            self.ev.event("response.output_text.done", **self._at(), text=whole, logprobs=[]),
            self.ev.event("response.content_part.done", **self._at(), part=done["content"][0]),
            self.ev.event("response.output_item.done", output_index=self.index, item=done),
        ]

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.id, "output_index": self.index, "content_index": 0}


class _ReasoningEvents:
    """The events of a streamed response's reasoning item: `response.reasoning_text.*`, and
    `response.reasoning_summary_*` when a summary was asked for."""

    def __init__(self, ev: EventStream, out: list[dict[str, Any]], summary: bool):
        self.ev, self.out, self.summary = ev, out, summary
        self.id = new_id("rs", "_")
        self.text: list[str] = []
        self.index = -1
        self.closed = False

    def delta(self, piece: str) -> list[Frame]:
        frames = []
        if self.index < 0:
            self.out.append({**reasoning_item(self.id, "", "in_progress", False), "content": []})
            self.index = len(self.out) - 1
            frames.append(
                self.ev.event(
                    "response.output_item.added", output_index=self.index, item=dict(self.out[-1])
                )
            )
            part = {"type": "reasoning_text", "text": ""}
            frames.append(self.ev.event("response.content_part.added", **self._at(), part=part))
            if self.summary:
                part = {"type": "summary_text", "text": ""}
                frames.append(
                    self.ev.event("response.reasoning_summary_part.added", **self._sum(), part=part)
                )
        self.text.append(piece)
        frames.append(self.ev.event("response.reasoning_text.delta", **self._at(), delta=piece))
        if self.summary:
            frames.append(
                self.ev.event("response.reasoning_summary_text.delta", **self._sum(), delta=piece)
            )
        return frames

    def close(self, end: reply.Finished | None) -> list[Frame]:
        """Close the item: once the answer starts (`end` None), else at the end of the reply
        (cut short while thinking: `incomplete`)."""
        if self.index < 0 or self.closed:
            return []
        self.closed = True
        whole = "".join(self.text)
        status = "completed" if end is None else _reasoning_status(end)
        done = reasoning_item(self.id, whole, status, self.summary)
        self.out[self.index] = done
        frames = [
            self.ev.event("response.reasoning_text.done", **self._at(), text=whole),
            self.ev.event("response.content_part.done", **self._at(), part=done["content"][0]),
        ]
        if self.summary:
            part = done["summary"][0]
            frames += [
                self.ev.event("response.reasoning_summary_text.done", **self._sum(), text=whole),
                self.ev.event("response.reasoning_summary_part.done", **self._sum(), part=part),
            ]
        frames.append(
            self.ev.event("response.output_item.done", output_index=self.index, item=done)
        )
        return frames

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.id, "output_index": self.index, "content_index": 0}

    def _sum(self) -> dict[str, Any]:
        return {"item_id": self.id, "output_index": self.index, "summary_index": 0}


def _call_events(
    ev: EventStream, out: list[dict[str, Any]], call: Any, status: str = "completed"
) -> list[Frame]:
    """A function call (whole, or `incomplete`: cut by the limit) as its item and argument
    events."""
    added = {**call_item(call, "in_progress"), "arguments": ""}
    out.append(added)
    index = len(out) - 1
    at = {"item_id": added["id"], "output_index": index}
    out[index] = call_item(call, status)
    return [
        ev.event("response.output_item.added", output_index=index, item=added),
        ev.event("response.function_call_arguments.delta", **at, delta=call.arguments),
        ev.event(
            "response.function_call_arguments.done",
            **at,
            name=call.name,
            arguments=call.arguments,
        ),
        ev.event("response.output_item.done", output_index=index, item=out[index]),
    ]


async def stream(
    body: ResponsesRequest, run: Run, response: dict[str, Any], on_done: Any
) -> AsyncIterator[Frame]:
    """The event stream of one response. `on_done(response, end)` runs (and is awaited) once
    the response is whole, before `response.completed` is sent (the response is stored by
    then)."""
    ev = EventStream()
    yield ev.event("response.created", response=dict(response))
    yield ev.event("response.in_progress", response=dict(response))
    out: list[dict[str, Any]] = response["output"]
    thinking = _ReasoningEvents(ev, out, _summary(body) is not None)
    message = _MessageEvents(ev, out)
    try:
        assert run.plan is not None
        end: reply.Finished | None = None
        async for item in reply.stream(run, run.plan.tools):
            if isinstance(item, reply.ReasoningDelta):
                for frame in thinking.delta(item.text):
                    yield frame
                continue
            piece = item.text if isinstance(item, reply.TextDelta) else item.tail
            if piece and message.index < 0:
                for frame in thinking.close(None):
                    yield frame
            for frame in message.delta(piece) if piece else ():
                yield frame
            if isinstance(item, reply.Finished):
                end = item
        assert end is not None
        for frame in thinking.close(end):
            yield frame
        for frame in message.close(end):
            yield frame
        for call in end.calls:
            for frame in _call_events(ev, out, call):
                yield frame
        for call in end.cut_calls:
            for frame in _call_events(ev, out, call, "incomplete"):
                yield frame
        finish(response, end, run)
        await on_done(response, end)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        yield ev.event(kind, response=response)
    except APIError as exc:
        response["status"] = "failed"
        response["error"] = {"code": exc.code or exc.type, "message": exc.message}
        yield ev.event("response.failed", response=response)
