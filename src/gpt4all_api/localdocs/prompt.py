"""Retrieved chunks -> the prompt's sources, the reply's citations and GPT4All's references.

The sources go into the last user turn, before the question (as the GPT4All app puts its
LocalDocs context), numbered `[1]`, `[2]`, ... with their file names and pages; the model is
asked to cite them by number.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..core.plan import Plan, Turn
from .service import Result

_MARK = re.compile(r"\[(\d{1,3})\]")

INSTRUCTION = (
    "Answer the question using these excerpts from the user's documents. "
    "Cite an excerpt by its number in brackets, like [1]."
)


def sources(results: list[Result]) -> str:
    """The excerpts as the model reads them."""
    lines = [INSTRUCTION, ""]
    for n, r in enumerate(results, 1):
        where = r.filename
        if r.hit.chunk.page is not None:
            where += f", page {r.hit.chunk.page}"
        lines += [f"[{n}] {where}:", r.hit.chunk.text.strip(), ""]
    return "\n".join(lines)


def last_user_text(plan: Plan) -> str:
    for t in reversed(plan.turns):
        if t.role == "user":
            return t.content
    return ""


def augment(plan: Plan, results: list[Result]) -> Plan:
    """The plan with the sources before the last user message (unchanged when none)."""
    if not results:
        return plan
    block = sources(results)
    turns = list(plan.turns)
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == "user":
            turns[i] = replace(turns[i], content=f"{block}\nQuestion: {turns[i].content}")
            return replace(plan, turns=tuple(turns))
    return replace(plan, turns=(Turn("system", block), *turns))


def citations(text: str, results: list[Result]) -> list[dict[str, Any]]:
    """`file_citation` annotations for `text`: one at each `[n]` the model wrote for a source
    it was given; when it wrote none, one per retrieved file at the end of the text (the files
    the answer was given to work from)."""
    out: list[dict[str, Any]] = []
    for m in _MARK.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= len(results):
            r = results[n - 1]
            out.append(_citation(r, m.start()))
    if out or not text:
        return out
    seen: set[str] = set()
    for r in results:
        if r.file_id not in seen:
            seen.add(r.file_id)
            out.append(_citation(r, len(text)))
    return out


def _citation(r: Result, index: int) -> dict[str, Any]:
    return {"type": "file_citation", "file_id": r.file_id, "filename": r.filename, "index": index}
