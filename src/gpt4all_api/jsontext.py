"""JSON text for what the server sends: non-ASCII characters as they are, unless a string
holds a lone surrogate (a model may write `"\\ud8ca"`, which `json.loads` keeps as one). That
has no UTF-8, so the text then escapes it, as the model did."""

from __future__ import annotations

import json
from typing import Any

# one encoder each, built once: `json.dumps` with options builds a new one per call, and a
# stream encodes a chunk per token
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"))


def json_text(obj: Any, **kw: Any) -> str:
    """`json.dumps(obj, **kw)`, with characters as they are where UTF-8 can carry them."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, **kw)
    return text


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON (a streamed chunk)."""
    try:
        return _COMPACT.encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _COMPACT_ASCII.encode(obj).encode("ascii")
