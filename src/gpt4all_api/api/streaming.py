"""Server-Sent Events in OpenAI's format: `data: {json}` frames, ending with `data: [DONE]`.

An error after the stream began cannot change the status code any more; it is sent as an
`{"error": …}` frame, then `[DONE]`, as OpenAI does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette.sse import EventSourceResponse

from ..errors import APIError, InternalError

log = logging.getLogger(__name__)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def _frames(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, str]]:
    try:
        async for chunk in chunks:
            yield {"data": dumps(chunk)}
    except APIError as exc:
        yield {"data": dumps(exc.body())}
    except Exception:
        log.exception("error while streaming")
        yield {"data": dumps(InternalError("internal error while streaming").body())}
    yield {"data": "[DONE]"}


def sse_response(chunks: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    return EventSourceResponse(_frames(chunks), ping=15, sep="\n")
