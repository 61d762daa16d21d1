"""Unique keys in grammar-constrained JSON.

A grammar (GBNF) cannot say that an object's keys differ from each other, so a sampled object
may name a key twice (`{"name": "Tom", "name": [...]}`), which most JSON parsers silently read
as its last value. `KeyGuard` follows the JSON a grammar lets the model write, byte by byte, and
while the model is writing an object's key it names the tokens that would close that key as one
the object already has; the sampler bans them. The model can always go on instead: a key may
hold any character, so the grammar never runs out of tokens.

Keys are compared as a parser reads them: a key written once plainly and once with escapes
(`"name"` and `"n\\u0061me"`) is the same key. Text before the first `{` and between top-level
values (a tool call's markers) is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_QUOTE, _BACKSLASH = ord('"'), ord("\\")


class QuoteTable:
    """One vocabulary's token pieces, and the tokens whose piece holds an unescaped `"`, by the
    bytes in front of it (what such a token adds to a string before closing it)."""

    def __init__(self, piece: Callable[[int], bytes], n_vocab: int):
        self.pieces = [piece(t) for t in range(n_vocab)]
        closing: dict[bytes, list[int]] = {}
        for token, data in enumerate(self.pieces):
            end = _closing_quote(data)
            if end is not None:
                closing.setdefault(data[:end], []).append(token)
        self.closing = {k: np.array(v, dtype=np.intp) for k, v in closing.items()}
        #: Whether some token closes a string after a backslash (an escape of its own)
        self.escapes = any(_BACKSLASH in k for k in closing)


def _decoded(raw: bytes) -> str | None:
    """A JSON string's text from the bytes between its quotes; None when they are no string."""
    try:
        text = json.loads(b'"' + raw + b'"')
    except ValueError:
        return None
    return text if isinstance(text, str) else None


def _closing_quote(data: bytes) -> int | None:
    """Where the first unescaped `"` is in `data` (read from inside a string), if anywhere."""
    escaped = False
    for i, b in enumerate(data):
        if escaped:
            escaped = False
        elif b == _BACKSLASH:
            escaped = True
        elif b == _QUOTE:
            return i
    return None


@dataclass
class _Object:
    keys: set[bytes] = field(default_factory=set)  # as written
    text: set[str] = field(default_factory=set)  # as read
    escaped: bool = False  # a key was written with an escape
    wants_key: bool = True


class KeyGuard:
    """One sequence's JSON state: `feed` every token it keeps, ask `banned` before sampling."""

    _EMPTY = np.zeros(0, dtype=np.intp)

    def __init__(self, table: QuoteTable):
        self.table = table
        self._stack: list[_Object | None] = []  # None: an array
        self._in_string = False
        self._in_key = False
        self._escaped = False
        self._key = bytearray()

    def feed(self, token: int) -> None:
        for b in self.table.pieces[token]:
            self._byte(b)

    def _byte(self, b: int) -> None:
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif b == _BACKSLASH:
                self._escaped = True
            elif b == _QUOTE:
                self._in_string = False
                if self._in_key:
                    top = self._stack[-1]
                    assert top is not None
                    key = bytes(self._key)
                    top.keys.add(key)
                    text = _decoded(key)
                    if text is not None:
                        top.text.add(text)
                    top.escaped = top.escaped or _BACKSLASH in key
                return
            if self._in_key:
                self._key.append(b)
            return
        stack = self._stack
        top = stack[-1] if stack else None
        if b == ord("{"):
            stack.append(_Object())
        elif b == ord("["):
            stack.append(None)
        elif not stack:
            return  # outside the JSON
        elif b in (ord("}"), ord("]")):
            stack.pop()
        elif b == _QUOTE:
            self._in_string = True
            self._in_key = top is not None and top.wants_key
            self._key.clear()
        elif top is not None and b == ord(":"):
            top.wants_key = False
        elif top is not None and b == ord(","):
            top.wants_key = True

    def banned(self) -> np.ndarray:
        """The tokens that would close the key being written as one its object already has."""
        if not (self._in_string and self._in_key) or self._escaped:
            return self._EMPTY  # after a backslash the next quote is written, not closing
        top = self._stack[-1]
        assert top is not None
        written = bytes(self._key)
        closing = self.table.closing
        if top.escaped or self.table.escapes or _BACKSLASH in written:
            # escapes: compare what a parser reads, for each way a token could close the key
            found = [
                tokens for rest, tokens in closing.items() if _decoded(written + rest) in top.text
            ]
        else:  # as written is as read: only the keys this one can still become
            found = [
                closing[rest]
                for key in top.keys
                if key.startswith(written) and (rest := key[len(written) :]) in closing
            ]
        if not found:
            return self._EMPTY
        return found[0] if len(found) == 1 else np.concatenate(found)
