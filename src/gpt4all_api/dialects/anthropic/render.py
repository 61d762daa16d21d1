"""Reply events → Anthropic Messages objects: the whole `message`, or its event stream."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from ...core import reply
from ...core.plan import Plan, ToolCall
from ...core.run import Run

Event = tuple[str, dict[str, Any]]


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    """Anthropic counts cached prompt tokens apart: `input_tokens` are the others."""
    return {
        "input_tokens": prompt - cached,
        "output_tokens": completion,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(end: reply.Finished, plan: Plan) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). A stop string the prompt format added is an end of turn."""
    if end.finish == "tool_calls":
        return "tool_use", None
    if end.finish == "length":
        return "max_tokens", None
    if end.stop_string is not None and end.stop_string in plan.stop:
        return "stop_sequence", end.stop_string
    return "end_turn", None


def tool_use(call: ToolCall, whole: bool = True) -> dict[str, Any]:
    """A tool call as a `tool_use` block (`whole` False: as it opens in a stream)."""
    return {
        "type": "tool_use",
        "id": "toolu_" + call.id.removeprefix("call_"),
        "name": call.name,
        "input": json.loads(call.arguments) if whole else {},
    }


def signature(thinking: str) -> str:
    """A thinking block's signature: a digest of its text (the server keeps no secret)."""
    return hashlib.sha256(thinking.encode()).hexdigest()


def message(run: Run, end: reply.Finished, plan: Plan) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if end.reasoning is not None:
        content.append(
            {"type": "thinking", "thinking": end.reasoning, "signature": signature(end.reasoning)}
        )
    if end.content:
        content.append({"type": "text", "text": end.content})
    content += [tool_use(c) for c in end.calls]
    reason, sequence = stop_reason(end, plan)
    return {
        "id": run.id,
        "type": "message",
        "role": "assistant",
        "model": run.loaded.entry.id,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(*run.tokens()),
    }


async def stream(run: Run, plan: Plan) -> AsyncIterator[Event]:
    """message_start, ping, the content blocks (text opened on its first text), message_delta,
    message_stop."""
    prompt = len(run.prompt.tokens) if run.prompt else 0
    start = {
        "id": run.id,
        "type": "message",
        "role": "assistant",
        "model": run.loaded.entry.id,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage(prompt, 0, 0),
    }
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    index = -1  # the open block
    text_open = False
    thinking: list[str] | None = None  # the open thinking block's text
    end: reply.Finished | None = None
    async for item in reply.stream(run, plan.tools):
        if isinstance(item, reply.ReasoningDelta):
            if thinking is None:
                thinking, index = [], index + 1
                block = {"type": "thinking", "thinking": "", "signature": ""}
                yield "content_block_start", _event("content_block_start", index, block)
            thinking.append(item.text)
            delta = {"type": "thinking_delta", "thinking": item.text}
            yield "content_block_delta", _event("content_block_delta", index, delta=delta)
            continue
        piece = item.text if isinstance(item, reply.TextDelta) else item.tail
        if thinking is not None and (piece or isinstance(item, reply.Finished)):
            for event in _close_thinking(index, thinking):
                yield event
            thinking = None
        if piece:
            if not text_open:
                text_open, index = True, index + 1
                block = {"type": "text", "text": ""}
                yield "content_block_start", _event("content_block_start", index, block)
            delta = {"type": "text_delta", "text": piece}
            yield "content_block_delta", _event("content_block_delta", index, delta=delta)
        if isinstance(item, reply.Finished):
            end = item
    assert end is not None
    if text_open:
        yield "content_block_stop", _event("content_block_stop", index)
    for call in end.calls:
        index += 1
        yield "content_block_start", _event("content_block_start", index, tool_use(call, False))
        delta = {"type": "input_json_delta", "partial_json": call.arguments}
        yield "content_block_delta", _event("content_block_delta", index, delta=delta)
        yield "content_block_stop", _event("content_block_stop", index)
    reason, sequence = stop_reason(end, plan)
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(*run.tokens()),
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _close_thinking(index: int, text: list[str]) -> list[Event]:
    delta = {"type": "signature_delta", "signature": signature("".join(text))}
    return [
        ("content_block_delta", _event("content_block_delta", index, delta=delta)),
        ("content_block_stop", _event("content_block_stop", index)),
    ]


def _event(
    kind: str, index: int, block: dict[str, Any] | None = None, delta: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "index": index}
    if block is not None:
        out["content_block"] = block
    if delta is not None:
        out["delta"] = delta
    return out
