"""Hybrid retrieval, as GPT4All's LocalDocs does it: full-text BM25 (SQLite FTS5) and vector
similarity (cosine, numpy over the stores' float32 embeddings), fused by reciprocal rank. With
PostgreSQL (`PostgresIndex`) the full-text ranking is PostgreSQL's `ts_rank` instead of BM25.

A hit's `score` is its fused score divided by the best a chunk can get (first in both lists),
so it lies in (0, 1]: 1.0 for a chunk both methods rank first, 0.5 for one that only one method
ranks first. `score_threshold` applies to that score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .index import Index, StoredChunk

if TYPE_CHECKING:
    from .index_pg import PostgresIndex

RRF_K = 60
CANDIDATES = 50  # from each method, at least
Mode = Literal["hybrid", "bm25", "vector"]
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    score: float


def fts_query(text: str) -> str | None:
    """An FTS5 expression matching any word of `text` (each quoted: no FTS5 syntax gets
    through); None when `text` has no words."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words[:64])


def search(
    index: Index | PostgresIndex,
    store_ids: Sequence[str],
    query: str,
    query_vector: np.ndarray | None,
    *,
    limit: int,
    threshold: float = 0.0,
    mode: Mode = "hybrid",
    file_ids: Sequence[str] | None = None,
) -> list[Hit]:
    """The best `limit` chunks of the stores (of `file_ids` only, when given) for `query`, best
    first."""
    depth = max(CANDIDATES, limit * 5)
    lists: list[list[int]] = []
    if mode in ("hybrid", "bm25"):
        match = fts_query(query)
        lists.append(index.bm25(store_ids, match, depth, file_ids) if match else [])
    if mode in ("hybrid", "vector") and query_vector is not None:
        lists.append(_nearest(index, store_ids, query_vector, depth, file_ids))
    fused: dict[int, float] = {}
    for ranked in lists:
        for rank, chunk_id in enumerate(ranked):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
    best = len(lists) / (RRF_K + 1)
    order = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    order = [(cid, s / best) for cid, s in order if s / best >= threshold][:limit]
    chunks = index.chunks_by_id([cid for cid, _ in order])
    return [Hit(chunks[cid], round(score, 6)) for cid, score in order if cid in chunks]


def _nearest(
    index: Index | PostgresIndex,
    store_ids: Sequence[str],
    query_vector: np.ndarray,
    depth: int,
    file_ids: Sequence[str] | None,
) -> list[int]:
    ids, matrix = index.vectors(store_ids, file_ids)
    if not len(ids):
        return []
    q = np.asarray(query_vector, dtype=np.float32)
    if matrix.shape[1] != q.shape[0]:
        return []
    sims = matrix @ q  # both sides are normalised: cosine similarity
    top = np.argsort(-sims, kind="stable")[:depth]
    return [int(ids[i]) for i in top]
