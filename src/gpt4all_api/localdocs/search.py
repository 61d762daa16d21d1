"""Hybrid retrieval, as GPT4All's LocalDocs does it: full-text BM25 (SQLite FTS5) and vector
similarity (cosine, numpy over the stores' float32 embeddings), fused. With PostgreSQL
(`PostgresIndex`) the full-text ranking is PostgreSQL's `ts_rank` instead of BM25.

Fusion is by score, not by rank. Each method's scores are divided by its best one, and a
chunk's fused score is the mean over the methods, 0 from a method that did not find it. Both
scores have a natural zero (BM25: no query word; cosine: at right angles), so a method whose
candidates are all about as good as its best, as a weak embedder's are (the chat model standing
in for an embedding model gives nearly equal similarities to every chunk), adds about the same
to each of them and leaves the order to the other method. Ranks alone throw that away: with
reciprocal rank fusion a weak embedder's nearly random order counted as much as BM25's, and
pushed BM25 hits that matched every rare word of the question out of the top results.

A hit's `score` is that mean, in (0, 1]: 1.0 for a chunk both methods rank first, 0.5 for one
that one method ranks first and the other does not find. `score_threshold` applies to it.
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
    lists: list[list[tuple[int, float]]] = []
    if mode in ("hybrid", "bm25"):
        match = fts_query(query)
        lists.append(index.bm25(store_ids, match, depth, file_ids) if match else [])
    if mode in ("hybrid", "vector") and query_vector is not None:
        lists.append(_nearest(index, store_ids, query_vector, depth, file_ids))
    fused: dict[int, float] = {}
    for scored in lists:
        for chunk_id, scaled in _scaled(scored):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + scaled / len(lists)
    order = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    order = [(cid, s) for cid, s in order if s >= threshold][:limit]
    chunks = index.chunks_by_id([cid for cid, _ in order])
    return [Hit(chunks[cid], score) for cid, score in order if cid in chunks]


def _scaled(scored: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(chunk id, score) pairs with the scores divided by the best: the best 1, the others
    their share of it. Both methods' scores have a natural zero, no evidence (no query word;
    a vector at right angles to the query's), and chunks at or below it are left out."""
    best = max((s for _, s in scored), default=0.0)
    if best <= 0:
        return []
    return [(cid, s / best) for cid, s in scored if s > 0]


def _nearest(
    index: Index | PostgresIndex,
    store_ids: Sequence[str],
    query_vector: np.ndarray,
    depth: int,
    file_ids: Sequence[str] | None,
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the `depth` chunks most like `query_vector`, best
    first."""
    ids, matrix = index.vectors(store_ids, file_ids)
    if not len(ids):
        return []
    q = np.asarray(query_vector, dtype=np.float32)
    if matrix.shape[1] != q.shape[0]:
        return []
    sims = matrix @ q  # both sides are normalised: cosine similarity
    top = np.argsort(-sims, kind="stable")[:depth]
    return [(int(ids[i]), float(sims[i])) for i in top]
