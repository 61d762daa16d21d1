"""Attribute filters of `vector_stores.search` and `file_search`: comparison filters
(`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `nin`) and compound ones (`and`, `or`)."""

from __future__ import annotations

import operator
from typing import Any

from ..errors import InvalidRequest

_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def check(f: Any, param: str) -> None:
    """A 400 for a filter that is not well formed."""
    if not isinstance(f, dict):
        raise InvalidRequest("a filter must be an object", param=param)
    kind = f.get("type")
    if kind in ("and", "or"):
        subs = f.get("filters")
        if not isinstance(subs, list):
            raise InvalidRequest("a compound filter needs a list of filters", param=param)
        for i, sub in enumerate(subs):
            check(sub, f"{param}.filters[{i}]")
    elif kind in _COMPARE or kind in ("in", "nin"):
        if not isinstance(f.get("key"), str):
            raise InvalidRequest("a comparison filter needs a key", param=f"{param}.key")
        if "value" not in f:
            raise InvalidRequest("a comparison filter needs a value", param=f"{param}.value")
    else:
        raise InvalidRequest(f"unknown filter type {kind!r}", param=f"{param}.type")


def matches(f: dict[str, Any], attributes: dict[str, Any]) -> bool:
    kind = f["type"]
    if kind == "and":
        return all(matches(sub, attributes) for sub in f["filters"])
    if kind == "or":
        return any(matches(sub, attributes) for sub in f["filters"])
    if f["key"] not in attributes:
        return kind in ("ne", "nin")
    value, wanted = attributes[f["key"]], f["value"]
    if kind in ("in", "nin"):
        found = value in wanted if isinstance(wanted, list) else value == wanted
        return found if kind == "in" else not found
    try:
        return bool(_COMPARE[kind](value, wanted))
    except TypeError:
        return False
