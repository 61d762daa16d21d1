"""The order of a step's tokens in its `llama_batch`.

With a KV stream per sequence llama.cpp splits a batch into passes, each taking only sequences
whose ids follow each other in batch order (`drafting.passes`). The engine writes the generating
sequences' tokens first, in sequence order, and the new prompts' chunks after them; sorting the
whole batch by sequence lets those prompts share the generating sequences' pass.
"""

from __future__ import annotations

import llama_cpp as lc


def sequence_order(seq_ids: list[int]) -> list[int] | None:
    """The batch positions in the order that sorts a step's tokens by sequence id, each
    sequence's own tokens kept in their order; None when they already are. Generating
    sequences 5-15 and prompts' last tokens for sequences 0-4, in that order, take passes of
    11 and 5 tokens (`drafting.passes`), and one of 16 once sorted."""
    order = sorted(range(len(seq_ids)), key=seq_ids.__getitem__)
    return None if all(i == k for i, k in enumerate(order)) else order


def sort_batch(batch: lc.llama_batch, n: int) -> list[int] | None:
    """Put the first `n` tokens of `batch` in sequence order (`sequence_order`), in place.
    Returns each token's new position by its old one, or None when nothing moved."""
    seqs = [batch.seq_id[i][0] for i in range(n)]
    order = sequence_order(seqs)
    if order is None:
        return None
    tokens = [batch.token[i] for i in order]
    positions = [batch.pos[i] for i in order]
    logits = [batch.logits[i] for i in order]
    where = [0] * n
    for new, old in enumerate(order):
        batch.token[new] = tokens[new]
        batch.pos[new] = positions[new]
        batch.seq_id[new][0] = seqs[old]
        batch.logits[new] = logits[new]
        where[old] = new
    return where
