"""The `file_search` tool of the Responses API, run by the server before generation: the search,
its `file_search_call` output item (with `results` when `include` asks for
`file_search_call.results`), the sources in the prompt, and `file_citation` annotations on the
reply's `output_text`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..core.plan import Plan
from ..errors import InvalidRequest, UnsupportedParameter
from ..state import ServerState
from . import prompt
from .filters import check as check_filter
from .service import Result, new_id

INCLUDE_RESULTS = "file_search_call.results"
DEFAULT_RESULTS = 5  # what fits a small model's context beside the question
Frame = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class FileSearchTool:
    vector_store_ids: tuple[str, ...]
    max_num_results: int
    score_threshold: float
    filters: dict[str, Any] | None
    index: int  # its place in `tools`, for error messages


def tool_of(tools: list[dict[str, Any]] | None) -> FileSearchTool | None:
    """The request's `file_search` tool, checked (None when it has none)."""
    found = [(i, t) for i, t in enumerate(tools or []) if t.get("type") == "file_search"]
    if not found:
        return None
    if len(found) > 1:
        raise InvalidRequest("give at most one file_search tool", param=f"tools[{found[1][0]}]")
    i, tool = found[0]
    where = f"tools[{i}]"
    known = {"type", "vector_store_ids", "max_num_results", "ranking_options", "filters"}
    for key in tool:
        if key not in known:
            raise InvalidRequest(f"unknown file_search field '{key}'", param=f"{where}.{key}")
    ids = tool.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
        raise InvalidRequest(
            "file_search needs vector_store_ids: a list of vector store ids",
            param=f"{where}.vector_store_ids",
        )
    limit = tool.get("max_num_results", DEFAULT_RESULTS)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
        raise InvalidRequest(
            "max_num_results must be an integer from 1 to 50", param=f"{where}.max_num_results"
        )
    ranking = tool.get("ranking_options") or {}
    if not isinstance(ranking, dict):
        raise InvalidRequest("ranking_options must be an object", param=f"{where}.ranking_options")
    threshold = ranking.get("score_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InvalidRequest(
            "score_threshold must be a number from 0 to 1",
            param=f"{where}.ranking_options.score_threshold",
        )
    if not 0.0 <= threshold <= 1.0:
        raise InvalidRequest(
            "score_threshold must be a number from 0 to 1",
            param=f"{where}.ranking_options.score_threshold",
        )
    unknown = set(ranking) - {"ranker", "score_threshold"}
    if unknown:
        raise UnsupportedParameter(
            f"ranking_options.{sorted(unknown)[0]} is not supported",
            param=f"{where}.ranking_options",
        )
    filters = tool.get("filters")
    if filters is not None:
        check_filter(filters, f"{where}.filters")
    return FileSearchTool(tuple(ids), limit, float(threshold), filters, i)


@dataclass
class FileSearch:
    """One request's file search: what was found and how it shows in the response."""

    query: str
    results: list[Result]
    include_results: bool
    plan: Plan
    id: str = field(default_factory=lambda: new_id("fs_"))

    def item(self, status: str = "completed") -> dict[str, Any]:
        results = None
        if self.include_results and status == "completed":
            results = [r.openai(with_text=False) | {"text": r.hit.chunk.text} for r in self.results]
        return {
            "type": "file_search_call",
            "id": self.id,
            "status": status,
            "queries": [self.query],
            "results": results,
        }

    def complete(self, output: list[dict[str, Any]]) -> None:
        """The search's item first, then citations on each message's text."""
        output.insert(0, self.item())
        for item in output:
            if item.get("type") == "message":
                for part in item.get("content", []):
                    if part.get("type") == "output_text":
                        part["annotations"] = prompt.citations(part["text"], self.results)

    async def stream(
        self, frames: AsyncIterator[Frame], output: list[dict[str, Any]]
    ) -> AsyncIterator[Frame]:
        """The renderer's events with the search's events after `response.in_progress` and the
        citations before each `response.output_text.done`, all numbered again in order."""
        seq = 0

        def event(kind: str, **data: Any) -> Frame:
            nonlocal seq
            seq += 1
            return kind, {"type": kind, "sequence_number": seq - 1, **data}

        async for kind, data in frames:
            if kind == "response.output_text.done":
                part = output[data["output_index"]]["content"][data["content_index"]]
                part["annotations"] = prompt.citations(data["text"], self.results)
                for j, note in enumerate(part["annotations"]):
                    at = {k: data[k] for k in ("item_id", "output_index", "content_index")}
                    yield event(
                        "response.output_text.annotation.added",
                        **at,
                        annotation_index=j,
                        annotation=note,
                    )
            yield event(
                kind, **{k: v for k, v in data.items() if k not in ("type", "sequence_number")}
            )
            if kind == "response.in_progress":
                output.insert(0, self.item())
                at = {"output_index": 0, "item_id": self.id}
                yield event(
                    "response.output_item.added", output_index=0, item=self.item("in_progress")
                )
                yield event("response.file_search_call.in_progress", **at)
                yield event("response.file_search_call.searching", **at)
                yield event("response.file_search_call.completed", **at)
                yield event("response.output_item.done", output_index=0, item=self.item())


async def prepare(
    state: ServerState,
    tools: list[dict[str, Any]] | None,
    include: list[str] | None,
    tool_choice: Any,
    plan: Plan,
) -> FileSearch | None:
    """Run the request's file search (None when it has no file_search tool or tool_choice is
    `none`)."""
    tool = tool_of(tools)
    if tool is None and isinstance(tool_choice, dict) and tool_choice.get("type") == "file_search":
        raise InvalidRequest("tool_choice requires a file_search tool", param="tool_choice")
    if tool is None or tool_choice == "none":
        return None
    assert state.localdocs is not None
    query = prompt.last_user_text(plan)
    results = await state.localdocs.search(
        list(tool.vector_store_ids),
        query,
        limit=tool.max_num_results,
        threshold=tool.score_threshold,
        filters=tool.filters,
        param=f"tools[{tool.index}].vector_store_ids",
    )
    return FileSearch(
        query, results, INCLUDE_RESULTS in (include or ()), prompt.augment(plan, results)
    )
