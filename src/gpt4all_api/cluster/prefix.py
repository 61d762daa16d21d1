"""Prefix affinity: which replica's recent prompts share the longest prefix with a new one.

Each routing text is cut into blocks of at most `block` characters (restarting at each message);
block i is known by a hash chained over blocks 0..i, so a replica "holds" a prefix of n blocks
when it holds the hash of block n-1.
A replica keeps the hashes of the texts recently routed to it (least recently used dropped past
`capacity` blocks), roughly what its KV cache still holds. A lookup costs one hash per block.

`choose` is the policy, with no Ray in it: the replica with the longest match, unless it is
busier than the least loaded one by more than `imbalance` requests; otherwise (or with no
match) power of two choices on load.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .keys import SEP


def block_hashes(text: str, block: int) -> Iterator[tuple[int, int]]:
    """(chained hash, end offset) of each block. Blocks restart at every message separator, so
    a text that extends another by whole messages shares all of its blocks, short ones too."""
    h, pos = 0, 0
    for segment in text.split(SEP):
        for i in range(0, max(len(segment), 1), block):
            piece = segment[i : i + block]
            h = hash((h, piece))
            pos += len(piece)
            yield h, pos
        pos += len(SEP)


@dataclass
class PrefixIndex:
    block: int = 64
    capacity: int = 200_000
    _held: dict[Hashable, OrderedDict[int, None]] = field(default_factory=dict)

    def add(self, replica: Hashable, text: str) -> None:
        held = self._held.setdefault(replica, OrderedDict())
        for h, _ in block_hashes(text, self.block):
            held[h] = None
            held.move_to_end(h)
        while len(held) > self.capacity:
            held.popitem(last=False)

    def match(self, replica: Hashable, text: str) -> int:
        """Characters of `text`'s prefix the replica holds (whole blocks)."""
        held = self._held.get(replica)
        if not held:
            return 0
        matched = 0
        for h, end in block_hashes(text, self.block):
            if h not in held:
                break
            matched = end
        return matched

    def held(self, replica: Hashable) -> int:
        """Blocks the replica holds."""
        return len(self._held.get(replica, ()))

    def forget(self, replica: Hashable) -> None:
        self._held.pop(replica, None)

    def keep_only(self, replicas: set[Hashable]) -> None:
        for r in [r for r in self._held if r not in replicas]:
            del self._held[r]


def power_of_two(
    loads: Mapping[Hashable, float], rng: random.Random, index: PrefixIndex | None = None
) -> list[Hashable]:
    """Two replicas picked at random, the less loaded first; between equally loaded ones, the
    one holding fewer prefixes (so new conversations spread over the caches)."""
    picked = rng.sample(list(loads), min(2, len(loads)))
    return sorted(picked, key=lambda r: (loads[r], index.held(r) if index else 0))


def choose(
    index: PrefixIndex,
    text: str | None,
    loads: Mapping[Hashable, float],
    *,
    imbalance: float,
    rng: random.Random,
) -> tuple[list[Hashable], int]:
    """(replicas in order of preference, characters matched by the first). `loads` holds every
    candidate with its ongoing requests."""
    if not loads:
        return [], 0
    if text:
        least = min(loads.values())
        matches = {r: index.match(r, text) for r in loads}
        fit = [r for r in loads if loads[r] - least <= imbalance]
        best = max((matches[r] for r in fit), default=0)
        if best > 0:
            winners = sorted((r for r in fit if matches[r] == best), key=lambda r: loads[r])
            return winners, best
    return power_of_two(loads, rng, index if text else None), 0


def ranked(choice: Sequence[Hashable], everyone: Sequence[Hashable]) -> list[list[Hashable]]:
    """Ray's ranks: the first choice alone, then the other choices, then everyone else as a
    fallback (Ray passes over a replica that is slow to report its queue length)."""
    rest = [r for r in everyone if r not in choice]
    ranks = [[choice[0]], list(choice[1:]), rest]
    return [rank for rank in ranks if rank]
