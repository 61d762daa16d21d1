"""Text -> chunks of about `size` characters, cut at paragraph, line, sentence or word
boundaries, overlapping by about `overlap` characters. Each chunk keeps its page and its
character offsets in the document's text (`start` inclusive, `end` exclusive)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .ingest import Document

CHUNK_SIZE = 512
CHUNK_OVERLAP = 64
_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"[.!?]\s"), re.compile(r"\s"))


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    start: int
    end: int


def chunks(doc: Document, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP) -> list[Chunk]:
    """The chunks of a document, page by page (a chunk never spans two pages)."""
    out: list[Chunk] = []
    offset = 0
    for page in doc.pages:
        for start, end in spans(page.text, size, overlap):
            text = page.text[start:end].strip()
            if text:
                out.append(Chunk(text, page.number, offset + start, offset + end))
        offset += len(page.text)
    return out


def spans(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk of `text`."""
    out: list[tuple[int, int]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            end = _cut(text, start, end)
        out.append((start, end))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        if nxt < end:  # start the overlap at a word
            space = text.find(" ", nxt, end)
            nxt = space + 1 if space >= 0 else nxt
        start = nxt
    return out


def _cut(text: str, start: int, end: int) -> int:
    """The best boundary in the second half of `text[start:end]`, else `end`."""
    half = start + (end - start) // 2
    for pattern in _BREAKS:
        last = None
        for m in pattern.finditer(text, half, end):
            last = m
        if last is not None:
            return last.end()
    return end
