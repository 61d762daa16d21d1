"""Prompts kept in RAM after their sequence is given to another prompt.

Every sequence keeps the KV of the last prompt it ran until a new prompt needs the sequence. With
more conversations than sequences (one slot and several chats, an agent juggling threads), a
prompt that comes back has lost its cache and is prefilled again. So before a sequence's tokens
are dropped, the engine saves its KV (llama.cpp's sequence state: only the cells it holds) here,
least recently used first out once `budget` bytes are held; a prompt that shares a longer start
with a saved state than with any sequence gets that state written back into its sequence.

Each state lives in an anonymous mapping of its own (`new_state`), unmapped when the state is
dropped, so the process's resident memory falls back by exactly what the cache lets go (from
the allocator's heap, freed states of many sizes would leave holes the process keeps).
"""

from __future__ import annotations

import collections
import ctypes
import mmap
from dataclasses import dataclass

from .sequences import common_prefix_len


def new_state(size: int) -> ctypes.Array[ctypes.c_uint8]:
    """A zeroed buffer of `size` bytes in a mapping of its own, unmapped once the buffer is
    garbage (the array holds the mapping)."""
    return (ctypes.c_uint8 * size).from_buffer(mmap.mmap(-1, max(size, 1)))


@dataclass
class Saved:
    tokens: list[int]
    state: ctypes.Array[ctypes.c_uint8]
    length: int  # bytes of `state` llama.cpp wrote

    @property
    def size(self) -> int:
        return len(self.state)


class PromptCache:
    """Saved sequence states, keyed by their tokens, within a byte budget and `max_entries`
    states (each lookup compares the prompt with every saved one)."""

    def __init__(self, budget: int, max_entries: int = 64) -> None:
        self.budget = budget
        self.max_entries = max_entries
        self.held = 0
        self._entries: collections.OrderedDict[int, Saved] = collections.OrderedDict()
        self._next = 0
        self.saves = 0
        self.restores = 0

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, tokens: list[int]) -> bool:
        """Whether a saved state already starts with all of `tokens`."""
        entries = self._entries.values()
        return any(common_prefix_len(s.tokens, tokens) == len(tokens) for s in entries)

    def put(self, tokens: list[int], state: ctypes.Array[ctypes.c_uint8], length: int) -> None:
        """Save a state (`length` bytes of `state`); states whose tokens are a start of `tokens`
        go (this one holds them)."""
        if len(state) > self.budget:
            return
        for key, s in list(self._entries.items()):
            if common_prefix_len(s.tokens, tokens) == len(s.tokens):
                self._drop(key)
        while self._entries and (
            self.held + len(state) > self.budget or len(self._entries) >= self.max_entries
        ):
            self._drop(next(iter(self._entries)))
        self._entries[self._next] = Saved(list(tokens), state, length)
        self._next += 1
        self.held += len(state)
        self.saves += 1

    def longest(self, prompt: list[int]) -> tuple[Saved | None, int]:
        """The saved state sharing the longest start with `prompt`, and that length."""
        best, n, key = None, 0, None
        for k, s in self._entries.items():
            m = common_prefix_len(s.tokens, prompt)
            if m > n:
                best, n, key = s, m, k
        if key is not None:
            self._entries.move_to_end(key)  # used: last out
        return best, n

    def _drop(self, key: int) -> None:
        self.held -= self._entries.pop(key).size
