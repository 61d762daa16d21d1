"""The context's sequences and the KV they hold: where a new prompt runs, what it keeps, and
how KV moves between sequences and the prompt cache.

Each `Slot` is one llama.cpp sequence and remembers the tokens whose KV it holds. A new prompt
goes on in the sequence that holds its conversation, or gets a copy of the longest prefix another
sequence holds (`place`), or a state saved in RAM (`PromptCache`). Before a sequence's tokens are
dropped for another prompt they are saved there (`Slots.stash`). With one shared (unified) pool
the idle sequences' cells are given up, least recently used first, when running ones need room.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging

import llama_cpp as lc

from .prompt_cache import PromptCache, Saved, new_state
from .sequences import Slot, common_prefix_len

log = logging.getLogger(__name__)

#: Fewest shared tokens worth a copy from another sequence: a copy moves the source's cells
#: (memory, no compute), far cheaper per token than prefilling them.
MIN_SEED = 16
#: A free sequence still holds the prompt's own conversation when all it holds but this many
#: tokens is the prompt's start (a template may render the end of an answer differently).
CONTINUE_SLACK = 4


class Slots:
    """The sequences of one context and the KV operations on them (engine thread only)."""

    def __init__(
        self,
        ctx: lc.llama_context_p,
        parallel: int,
        *,
        unified: bool,
        n_cells: int,
        cache: PromptCache | None,
        name: str,
    ) -> None:
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self.all = [Slot(seq_id=i) for i in range(parallel)]
        self.unified = unified
        self.n_cells = n_cells
        self.cache = cache
        self.name = name
        self.prefix_copies = 0

    def __len__(self) -> int:
        return len(self.all)

    def held(self) -> int:
        return sum(len(s.cached) for s in self.all)

    def clear(self, slot: Slot) -> None:
        """Drop all `slot` holds."""
        lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.cached.clear()

    def drop_after(self, slot: Slot, n: int) -> None:
        """Drop the KV past `slot`'s first `n` tokens, whose tokens `cached` no longer lists
        (drafts the model rejected)."""
        lc.llama_memory_seq_rm(self._mem, slot.seq_id, n, -1)

    def trim(self, slot: Slot, keep: int) -> None:
        """Keep `slot`'s first `keep` tokens (all of them dropped if llama.cpp cannot cut)."""
        if keep < len(slot.cached) and not lc.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
            lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            keep = 0
        del slot.cached[keep:]

    def evict(self, slot: Slot) -> None:
        """Drop all an idle `slot` holds for another prompt, saved to the prompt cache first."""
        self.stash(slot, 0)
        self.trim(slot, 0)

    def stash(self, slot: Slot, keep: int) -> None:
        """Save the KV of an idle sequence about to lose all but its first `keep` tokens, when
        that is worth a prefill saved and no other sequence or saved state holds all of it."""
        cache, held = self.cache, slot.cached
        if cache is None or len(held) - keep < MIN_SEED or cache.covers(held):
            return
        if any(o is not slot and common_prefix_len(o.cached, held) == len(held) for o in self.all):
            return
        size = lc.llama_state_seq_get_size(self._ctx, slot.seq_id)
        if size > cache.budget:
            return
        state = new_state(size)
        got = lc.llama_state_seq_get_data(self._ctx, state, size, slot.seq_id)
        if got:
            cache.put(held, state, got)

    def restore(self, slot: Slot, saved: Saved, n: int) -> int:
        """Write a saved state into `slot` and keep its first `n` tokens; returns the tokens
        `slot` now has (0 when llama.cpp refused the state: the prompt is then prefilled)."""
        self.clear(slot)
        if not lc.llama_state_seq_set_data(self._ctx, saved.state, saved.length, slot.seq_id):
            log.warning("%s: could not restore a saved prompt; prefilling instead", self.name)
            self.clear(slot)  # what llama.cpp wrote before it refused
            return 0
        slot.cached = list(saved.tokens)
        self.trim(slot, n)
        assert self.cache is not None
        self.cache.restores += 1
        return len(slot.cached)

    def seed(self, slot: Slot, source: Slot, n: int) -> int:
        """Give `slot` a copy of the first `n` tokens `source` holds (a running sequence's or an
        idle one's): the KV of a shared system prompt or document, or of the same prompt again,
        without prefilling it and without taking it from the sequence that holds it. Returns the
        tokens `slot` now has."""
        if not self.copy(source, slot):
            return 0
        self.trim(slot, n)
        self.prefix_copies += 1
        return len(slot.cached)

    def copy(self, source: Slot, slot: Slot) -> bool:
        """`slot` holds what `source` holds. In the shared pool the cells are shared (no copy).
        Across llama.cpp's per-sequence streams `llama_memory_seq_cp` would copy the whole
        stream, writing every page of it (`lazy_kv` would lose them): the cells `source` holds
        go over through llama.cpp's sequence state instead, written into `slot`'s first cells."""
        self.clear(slot)
        if self.unified:
            lc.llama_memory_seq_cp(self._mem, source.seq_id, slot.seq_id, -1, -1)
        else:
            size = lc.llama_state_seq_get_size(self._ctx, source.seq_id)
            state = (ctypes.c_uint8 * size)()
            got = lc.llama_state_seq_get_data(self._ctx, state, size, source.seq_id)
            if not got or not lc.llama_state_seq_set_data(self._ctx, state, got, slot.seq_id):
                log.warning("%s: could not copy a sequence's KV; prefilling instead", self.name)
                self.clear(slot)
                return False
        slot.cached = list(source.cached)
        return True

    def make_room(self, need: int, free: int, spare: Slot | None = None, keep: int = 0) -> bool:
        """Free `need` cells, `free` being free now, by dropping idle sequences' cached tokens,
        least recently used first (of `spare`, only what is past its first `keep`). False when
        they are not enough. Without a shared pool each sequence has its own `context_size` of
        cells: always room."""
        if not self.unified:
            return True
        if spare is not None:
            free += len(spare.cached) - keep
        if free >= need:
            return True
        idle = sorted(
            (s for s in self.all if s.job is None and s.cached and s is not spare),
            key=lambda s: s.last_used,
        )
        for slot in idle:
            free += len(slot.cached)
            self.evict(slot)
            if free >= need:
                return True
        return False


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a new prompt runs: `slot` keeps its first `keep` tokens, or when `source` is set,
    gets a copy of `source`'s first `seed` tokens instead."""

    slot: Slot
    keep: int
    source: Slot | None = None
    seed: int = 0


def runs_added(busy: set[int] | None, seq_id: int) -> int:
    """How many more runs of consecutive ids the busy sequences make once `seq_id` is busy too
    (1: a new run, 0: it extends one, -1: it joins two). 0 without streams (`busy` None)."""
    if busy is None:
        return 0
    return 1 - (seq_id - 1 in busy) - (seq_id + 1 in busy)


def place(
    free: list[Slot], slots: list[Slot], prompt: list[int], busy: set[int] | None = None
) -> Placement:
    """The free sequence to run `prompt` in, what it keeps, and what it copies.

    With per-sequence streams (`busy`: the ids of the busy sequences) first a sequence that
    keeps the busy ones in as few runs of consecutive ids as it can: each run is a pass over
    the model's weights in every step (`Engine._generating`), which costs about what a
    one-sequence step costs, for as long as the answers run; a copy of the KV a prompt shares
    with another sequence costs a memory copy, once.
    Among those, a free sequence holding the start of the prompt's own conversation: all it
    holds but at most `CONTINUE_SLACK` tokens is the prompt's start (the longest first). The
    next turn goes on in place. Else an empty sequence, else the least recently used one, so
    that no other conversation loses its cache to a prompt that shares only part of it. That
    sequence then gets a copy of the longest prefix any sequence holds (running or idle: a
    shared system prompt or document, the conversation held elsewhere, the same prompt asked
    again), when it is `MIN_SEED` tokens longer than its own.
    """
    shared = {id(s): common_prefix_len(s.cached, prompt) for s in slots}

    def rank(slot: Slot) -> tuple[int, int, int, float]:
        runs = -runs_added(busy, slot.seq_id)
        n = shared[id(slot)]
        if n and len(slot.cached) - n <= CONTINUE_SLACK:  # it holds the prompt's conversation
            return (runs, 2, n, 0.0)
        return (runs, 0 if slot.cached else 1, 0, -slot.last_used)

    best = max(free, key=rank)
    own = shared[id(best)]
    source = max((s for s in slots if s is not best), key=lambda s: shared[id(s)], default=None)
    if source is not None and shared[id(source)] >= own + MIN_SEED:
        return Placement(best, own, source, shared[id(source)])
    return Placement(best, own)
