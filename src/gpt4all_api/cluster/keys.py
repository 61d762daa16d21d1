"""The routing text of a request: what its prompt will start with, as text, so that requests
that share a prompt prefix (the turns of one conversation) share a prefix of routing text.

No template is applied: each message is serialised as it came (keys sorted), so an earlier
turn's messages serialise identically in every later request of the conversation. The model
name comes first: two models never share a KV cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: Separates messages in the routing text.
SEP = "\x1e"

_CHAT_PATHS = {"/v1/chat/completions", "/api/chat", "/v1/messages"}
_PROMPT_PATHS = {"/v1/completions", "/api/generate"}
RESPONSES_PATH = "/v1/responses"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def routing_text(method: str, path: str, body: bytes) -> str | None:
    """The routing text of a generation request; None for anything else (or a body that is not
    a JSON object: the replica that gets it answers the 400)."""
    if method != "POST" or path not in (*_CHAT_PATHS, *_PROMPT_PATHS, RESPONSES_PATH):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    parts: list[Any] = [data.get("model") or ""]
    if path == "/v1/messages":
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and metadata.get("user_id"):
            parts.append(f"session:{metadata['user_id']}")
        parts.append(data.get("system") or "")
    if path in _CHAT_PATHS:
        parts.extend(_items(data.get("messages")))
    elif path in _PROMPT_PATHS:
        parts.extend((data.get("system") or "", data.get("prompt")))
    else:
        parts.append(data.get("instructions") or "")
        parts.extend(_items(data.get("input")))
    return SEP.join(p if isinstance(p, str) else _dump(p) for p in parts)


def previous_response_id(path: str, body: bytes) -> str | None:
    if path != RESPONSES_PATH:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    prev = data.get("previous_response_id") if isinstance(data, dict) else None
    return prev if isinstance(prev, str) else None


@dataclass(frozen=True)
class RoutingKey:
    """The first argument of every call to an engine replica: what the router reads."""

    text: str | None = None
    #: A replica asked for by name (`X-Gpt4all-Api-Replica`: per-replica /metrics, debugging).
    replica: str | None = None
