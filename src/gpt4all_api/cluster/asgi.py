"""One HTTP request through an ASGI app, in-process: the body goes in whole, the messages the
app sends come out as they are sent. Leaving the iteration early (the caller was cancelled
because its client hung up) tells the app `http.disconnect`, as a server would, so a stream's
generation stops and its slot is freed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

Message = dict[str, Any]


async def run_http(app: Any, scope: dict[str, Any], body: bytes) -> AsyncIterator[Message]:
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if gone.is_set():
            raise OSError("the client disconnected")
        sent.put_nowait(message)

    task = asyncio.create_task(app(scope, receive, send))
    task.add_done_callback(lambda _: sent.put_nowait(None))
    try:
        while (message := await sent.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body"):
                break
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    finally:
        gone.set()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.debug("the app failed after its client left", exc_info=True)
        with contextlib.suppress(BaseException):
            task.exception() if task.done() and not task.cancelled() else None
