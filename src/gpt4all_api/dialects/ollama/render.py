"""Reply events → Ollama's objects: NDJSON chunks (`done: false`), then the final one with
`done_reason` and the timings (in nanoseconds); or, with `stream: false`, the final one alone
holding the whole answer. `/api/chat` answers in `message`, `/api/generate` in `response`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ...core import reply
from ...core.plan import ToolCall
from ...core.run import Run

Kind = Literal["chat", "generate"]


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes `created_at`."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


@dataclass
class Clock:
    """When the request began, its model was ready, and its generation was submitted."""

    start: float
    loaded: float = 0.0
    submitted: float = 0.0

    def load_stats(self) -> dict[str, int]:
        now = time.monotonic()
        return {
            "total_duration": _ns(now - self.start),
            "load_duration": _ns(self.loaded - self.start),
        }


def stats(run: Run, clock: Clock) -> dict[str, int]:
    prompt, completion, _ = run.tokens()
    now = time.monotonic()
    end = run.trace.finished_at or now
    first = run.trace.first_token_at or end
    return {
        **clock.load_stats(),
        "prompt_eval_count": prompt,
        "prompt_eval_duration": _ns(first - clock.submitted),
        "eval_count": completion,
        "eval_duration": _ns(end - first),
    }


def wire_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Tool calls as Ollama sends them: arguments as an object, not JSON text."""
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": json.loads(c.arguments)}}
        for i, c in enumerate(calls)
    ]


def chunk(
    kind: Kind,
    model: str,
    text: str,
    calls: tuple[ToolCall, ...] = (),
    thinking: str | None = None,
    **final: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": timestamp()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": text}
        if thinking is not None:
            out["message"]["thinking"] = thinking
        if calls:
            out["message"]["tool_calls"] = wire_calls(calls)
    else:
        out["response"] = text
        if thinking is not None:
            out["thinking"] = thinking
    out["done"] = bool(final)
    out.update(final)
    return out


def done_reason(end: reply.Finished) -> str:
    return "length" if end.finish == "length" else "stop"  # a tool call is a `stop` in Ollama


def whole(kind: Kind, model: str, run: Run, end: reply.Finished, clock: Clock) -> dict[str, Any]:
    """The `stream: false` answer."""
    return chunk(
        kind,
        model,
        end.content or "",
        end.calls,
        end.reasoning,
        done_reason=done_reason(end),
        **stats(run, clock),
    )


def loaded(kind: Kind, model: str, reason: str, clock: Clock | None = None) -> dict[str, Any]:
    """The answer to a request with nothing to generate: the model was loaded (or unloaded)."""
    return chunk(kind, model, "", done_reason=reason, **(clock.load_stats() if clock else {}))


async def stream(kind: Kind, model: str, run: Run, clock: Clock) -> AsyncIterator[dict[str, Any]]:
    assert run.plan is not None
    async for ev in reply.stream(run, run.plan.tools):
        if isinstance(ev, reply.ReasoningDelta):
            yield chunk(kind, model, "", thinking=ev.text)
            continue
        if isinstance(ev, reply.TextDelta):
            if ev.text:
                yield chunk(kind, model, ev.text)
            continue
        if ev.tail or ev.calls:
            yield chunk(kind, model, ev.tail, ev.calls)
        yield chunk(kind, model, "", done_reason=done_reason(ev), **stats(run, clock))
