"""Prompt-lookup drafting: guess a sequence's next tokens from its own context.

When an answer repeats spans of its prompt (quoting, editing code, extracting), the tokens that
followed the last occurrence of the sequence's newest n-gram are a good guess of what comes next.
The engine decodes such a draft together with the sequence's next token in the same batched
`llama_decode`, keeps the longest run the model agrees with and drops the rest of the KV.

The index maps every n-gram (for each length in `sizes`) to where it last ended, so a lookup is a
few dictionary reads, whatever the context's length. How much of a draft goes into a step is
decided in `drafting.py`, from how often such drafts were right and what a token costs.

Beside each sequence's own index, one table shared by all of an engine's sequences
(`SharedNgrams`) remembers what followed every long n-gram in any prompt or answer: an answer
to a prompt asked before (a retry, an agent's loop, many users with one document) drafts from
the earlier answer, the model's own words, which the sequence's context does not hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

_P = 0x9E3779B97F4A7C15  # the hash's multiplier (odd)
_M64 = (1 << 64) - 1


class SharedNgrams:
    """What followed each n-gram of `n` tokens in any sequence fed to it, newest first, in a
    fixed table of 2**`bits` slots (an n-gram's hash picks the slot; the whole hash is kept to
    tell n-grams that share a slot apart). A slot's later n-gram replaces the earlier one: the
    table forgets, it never grows. Engine thread only.

    The arrays are zeros until written (their pages cost no memory until then): a slot holds
    the token plus one, 0 for none. An n-gram's hash is sum(token[j] * P**(n-1-j)) mod 2**64,
    odd (so never 0), computed with NumPy over a prompt and in Python for a token or a draft."""

    def __init__(self, n: int = 16, bits: int = 20):
        self.n = n
        self._mask = (1 << bits) - 1
        self._keys_np = np.zeros(1 << bits, dtype=np.uint64)
        self._next_np = np.zeros(1 << bits, dtype=np.int32)
        self._keys = memoryview(self._keys_np)  # element access without NumPy scalars
        self._next = memoryview(self._next_np)
        self._top = pow(_P, n - 1, 1 << 64)  # the oldest token's weight

    def _hash(self, window: Sequence[int]) -> int:
        h = 0
        for t in window:
            h = (h * _P + t) & _M64
        return h

    def add(self, tokens: Sequence[int], start: int = 0) -> None:
        """Record what followed each n-gram of `tokens` for the tokens from `start` on."""
        n = self.n
        first = max(start, n)
        count = len(tokens) - first
        if count <= 0:
            return
        if count <= 32:
            keys, nexts, mask = self._keys, self._next, self._mask
            for i in range(first, len(tokens)):
                h = self._hash(tokens[i - n : i]) | 1
                keys[h & mask] = h
                nexts[h & mask] = tokens[i] + 1
            return
        arr = np.asarray(tokens[first - n :], dtype=np.uint64)
        h = np.zeros(count, dtype=np.uint64)
        p = np.uint64(_P)
        with np.errstate(over="ignore"):
            for j in range(n):
                h = h * p + arr[j : j + count]
        h |= np.uint64(1)
        slots = (h & np.uint64(self._mask)).astype(np.intp)
        self._keys_np[slots] = h
        self._next_np[slots] = arr[n:].astype(np.int32) + 1

    def chain(self, tail: Sequence[int], k: int) -> list[int]:
        """Up to `k` tokens that followed `tail`'s last n tokens, then what followed those
        with each guess appended, and so on; [] when the table does not know them."""
        n = self.n
        if len(tail) < n or k <= 0:
            return []
        window = list(tail[-n:])
        h = self._hash(window)
        keys, nexts, mask = self._keys, self._next, self._mask
        out: list[int] = []
        while len(out) < k:
            key = h | 1
            slot = key & mask
            if keys[slot] != key or not nexts[slot]:
                break
            token = nexts[slot] - 1
            out.append(token)
            # roll: drop the oldest token's term, shift, add the new one
            h = ((h - window[len(out) - 1] * self._top) * _P + token) & _M64
            window.append(token)
        return out


@dataclass
class PromptLookup:
    """The n-gram index of one sequence's tokens (prompt and answer so far)."""

    draft_max: int = 16
    sizes: tuple[int, ...] = (4, 3, 2)  # n-gram lengths tried, longest first
    tokens: list[int] = field(default_factory=list)
    #: The engine's table of every sequence's long n-grams (None: this sequence's own only);
    #: `tokens` given at the start are fed to it, and every token `extend` adds.
    shared: SharedNgrams | None = None
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> end (exclusive)
    _indexed: int = 0  # the n-grams ending at or before this position are in the index
    source: int = 0  # the length of the match the last guess came from
    #: Tokens in a row the guesses were right, up to the last guess (0 after a wrong one, and
    #: after tokens no guess was checked against).
    run: int = 0
    #: The last guess, to check against what the model generates ([] when nothing matched;
    #: None: no guess since the last `settle`).
    guess: list[int] | None = None
    drafted: int = 0
    accepted: int = 0
    _settled_at: int = -1  # len(tokens) at the last `settle`

    def __post_init__(self) -> None:
        if self.shared is not None:
            self.shared.add(self.tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        start = len(self.tokens)
        self.tokens.extend(tokens)
        if self.shared is not None:
            self.shared.add(self.tokens, start)

    def _index_up_to(self, end: int) -> None:
        toks = self.tokens
        for stop in range(max(self._indexed, 1), end + 1):
            for n in self.sizes:
                if stop >= n:
                    self._index[tuple(toks[stop - n : stop])] = stop
        self._indexed = max(self._indexed, end)

    def draft(self, room: int) -> list[int]:
        """Up to min(`room`, draft_max) tokens that followed the newest earlier occurrence of
        the longest n-gram the context ends with ([] when there is none); `source` tells the
        match's length."""
        toks = self.tokens
        end = len(toks)
        k = min(room, self.draft_max)
        if k <= 0 or end < 2:
            return []
        if end != self._settled_at:  # tokens came that no guess was checked against
            self.run = 0
        self.guess = self._guess(k)
        if not self.guess:
            self.run = 0
        return self.guess

    def _guess(self, k: int) -> list[int]:
        toks = self.tokens
        end = len(toks)
        # A long n-gram that something followed before, here or in another sequence, first:
        # it says more than the short ones below.
        if self.shared is not None and (chained := self.shared.chain(toks, k)):
            self.source = self.shared.n
            return chained
        # Every n-gram that ends before the last token is in the index; the sequence's own
        # final n-grams are not, so a hit is an earlier occurrence.
        self._index_up_to(end - 1)
        for n in self.sizes:
            if end < n:
                continue
            at = self._index.get(tuple(toks[end - n :]))
            if at is not None and at < end:
                self.source = n
                return toks[at : min(at + k, end)]
        return []

    def settle(self, drafted: int, accepted: int, following: int | None) -> tuple[int, bool]:
        """Check the last guess against the step: `drafted` of its tokens went in and the
        model took the first `accepted` of them; `following` is the token it generated after
        those (None: the answer ended). Returns how many of the guess's tokens in a row were
        right, and whether the one after them was wrong (False: it was not checked); the run
        goes on, or starts again after a wrong one."""
        guess, self.guess = self.guess or [], None
        self.drafted += drafted
        self.accepted += accepted
        right, wrong = accepted, False
        if following is not None and right < len(guess):
            wrong = guess[right] != following
            right += not wrong
        self.run = 0 if wrong else self.run + right
        self._settled_at = len(self.tokens)
        return right, wrong
