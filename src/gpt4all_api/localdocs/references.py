"""GPT4All's `references`: a chat request that names LocalDocs collections (`localdocs`) gets
the best chunks of those collections in its prompt and, in its answer, the chunks as references
in the GPT4All app's format (`file`, `title`, `author`, `date`, `text`, `page`, `from`, `to`);
`null` when nothing was found. Retrieval runs once per request, whatever its number of choices.
"""

from __future__ import annotations

from typing import Any

from ..core.plan import Plan
from ..state import ServerState
from . import prompt

MAX_RESULTS = 3  # the GPT4All app's default number of snippets


async def retrieve(
    state: ServerState, collections: list[str], plan: Plan, param: str = "localdocs"
) -> tuple[Plan, list[dict[str, Any]] | None]:
    """The plan with the sources in its prompt, and the references (None: nothing found)."""
    assert state.localdocs is not None
    store_ids = await state.localdocs.collections(collections, param)
    results = await state.localdocs.search(
        store_ids, prompt.last_user_text(plan), limit=MAX_RESULTS, param=param
    )
    if not results:
        return plan, None
    return prompt.augment(plan, results), [r.reference() for r in results]
