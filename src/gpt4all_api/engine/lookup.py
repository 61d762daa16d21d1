"""Prompt-lookup drafting: guess a sequence's next tokens from its own context.

When an answer repeats spans of its prompt (quoting, editing code, extracting), the tokens that
followed the last occurrence of the sequence's newest n-gram are a good guess of what comes next.
The engine decodes such a draft together with the sequence's next token in the same batched
`llama_decode`, keeps the longest run the model agrees with and drops the rest of the KV.

The index maps every n-gram (for each length in `sizes`) to where it last ended, so a lookup is a
few dictionary reads, whatever the context's length. The draft length adapts to how much of the
sequence's recent drafts the model accepted, because on a CPU every drafted token costs nearly
as much compute as a generated one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class PromptLookup:
    """The n-gram index of one sequence's tokens (prompt and answer so far)."""

    draft_max: int = 8
    sizes: tuple[int, ...] = (4, 3, 2)  # n-gram lengths tried, longest first
    tokens: list[int] = field(default_factory=list)
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> end (exclusive)
    _indexed: int = 0  # the n-grams ending at or before this position are in the index
    limit: int = 0  # current draft length (adapts between 1 and draft_max)
    drafted: int = 0
    accepted: int = 0
    _misses: int = 0  # drafts in a row the model rejected outright
    _rest: int = 0  # lookups to skip before drafting again

    def __post_init__(self) -> None:
        self.limit = self.draft_max

    def extend(self, tokens: Iterable[int]) -> None:
        self.tokens.extend(tokens)

    def _index_up_to(self, end: int) -> None:
        toks = self.tokens
        for stop in range(max(self._indexed, 1), end + 1):
            for n in self.sizes:
                if stop >= n:
                    self._index[tuple(toks[stop - n : stop])] = stop
        self._indexed = max(self._indexed, end)

    def draft(self, room: int) -> list[int]:
        """Up to min(`room`, the adaptive limit) tokens that followed the newest earlier
        occurrence of the longest n-gram the context ends with; [] when there is none."""
        toks = self.tokens
        end = len(toks)
        k = min(room, self.limit)
        if k <= 0 or end < 2:
            return []
        if self._rest:
            self._rest -= 1
            return []
        # Every n-gram that ends before the last token is in the index; the sequence's own
        # final n-grams are not, so a hit is an earlier occurrence.
        self._index_up_to(end - 1)
        for n in self.sizes:
            if end < n:
                continue
            at = self._index.get(tuple(toks[end - n :]))
            if at is not None and at < end:
                return toks[at : min(at + k, end)]
        return []

    def settle(self, drafted: int, accepted: int) -> None:
        """Account for one verified draft and adapt the next drafts' length: all accepted
        doubles it (up to draft_max), a rejection shrinks it to what was accepted plus one, and
        drafts rejected outright make the sequence rest from drafting for 2, 4, ... 32 tokens
        (text that does not quote its context costs next to nothing)."""
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.limit = min(self.draft_max, max(1, self.limit) * 2)
        else:
            self.limit = max(1, accepted + 1)
        if accepted:
            self._misses = 0
        else:
            self._misses += 1
            self._rest = min(2**self._misses, 32)


@dataclass
class DraftPayoff:
    """Whether drafting pays on this machine, measured: tokens emitted per second of decoding in
    steps that carried drafts against steps that did not, for each number of generating
    sequences. Where a batch of k tokens costs little more than one (a GPU, a memory-bound
    model) drafts win at modest acceptance; where it costs nearly k times one (a small model on
    few CPU cores, with spinning threads) they lose unless nearly all are accepted.

    While one kind is unmeasured the steps alternate; then the better kind runs, and every
    `probe_every`-th step tries the other, so the choice follows the workload. While drafts
    keep losing, their probes grow rarer (twice as far apart each time, up to `probe_max`);
    once they win, probing plain steps starts again from `probe_every`."""

    probe_every: int = 16
    probe_max: int = 256
    alpha: float = 0.2  # weight of the newest step in the running rates
    _plain: dict[int, float] = field(default_factory=dict)
    _draft: dict[int, float] = field(default_factory=dict)
    _calls: dict[int, int] = field(default_factory=dict)
    _every: dict[int, int] = field(default_factory=dict)  # steps between probes of drafts

    def allow(self, generating: int) -> bool:
        """May this step's sequences (`generating` of them) carry drafts?"""
        calls = self._calls[generating] = self._calls.get(generating, 0) + 1
        plain, draft = self._plain.get(generating), self._draft.get(generating)
        if plain is None or draft is None:
            return calls % 2 == 0
        if draft >= plain:
            self._every[generating] = self.probe_every
            return calls % self.probe_every != 0
        every = self._every.get(generating, self.probe_every)
        if calls % every:
            return False
        self._every[generating] = min(2 * every, self.probe_max)
        self._calls[generating] = 0
        return True

    def record(self, generating: int, drafted: bool, emitted: int, seconds: float) -> None:
        """A step of generation only (no prompt tokens in the batch) and what it gave."""
        if seconds <= 0:
            return
        rates = self._draft if drafted else self._plain
        rate = emitted / seconds
        old = rates.get(generating)
        rates[generating] = rate if old is None else old + self.alpha * (rate - old)

    def rates(self, generating: int) -> tuple[float | None, float | None]:
        """(tokens/s without drafts, with drafts) at this many generating sequences."""
        return self._plain.get(generating), self._draft.get(generating)
