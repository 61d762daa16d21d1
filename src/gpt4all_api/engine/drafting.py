"""How many drafted tokens each sequence puts in a step: the ones expected to pay.

A drafted token costs compute whether or not the model agrees with it, and pays only when it
does. Two things are measured as the engine runs, and each step's drafts are chosen from them:

- `StepCost`: what one pass of `llama_decode` costs as a line in its tokens, seconds = a + b *
  n, fit from the steps the engine ran in one pass. With a KV stream per sequence (the default),
  llama.cpp runs a step whose sequences carry different numbers of tokens in several passes
  (`passes`): a drafted token beside other sequences costs a + b, not b. On a GPU, or with a
  model too big for the memory bus, b is small against a and drafts are nearly free; with a
  small model on two CPU cores a step of 9 tokens costs about 4.5 steps of one, and only drafts
  nearly sure to be right pay.
- `DraftOdds`: how often a drafted token is right given the one before it was, for each kind
  of draft: where it came from (a long match in the engine's shared table, or the sequence's
  own 4-, 3- or 2-token n-gram) and how many of this sequence's drafts in a row were right all
  along (a sequence copying its prompt keeps copying; a chat answer that matched a 2-gram once
  rarely goes on). The i-th token of a draft is right with odds p**i.

`plan_drafts` then lines up the drafted tokens, the likeliest first over all sequences, and
takes as many as give the step the most expected tokens per second. In one pass, a token with
odds q is worth its cost b when q > b * (expected tokens) / (step seconds). One client and an
answer copying its prompt: long drafts. Sixteen clients on two cores: the step already has 16
tokens, so only drafts nearly sure to be right go in. Kinds of draft whose odds are below the
bar are still tried, one token, every `explore_every`-th time, so the odds follow the workload
(only where the step is one pass: beside other sequences such a token would cost a pass).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

#: A step of n tokens costs (1 - SLOPE) + SLOPE * n steps of one until two widths were timed
#: (measured on two CPU cores with a small model: a step of 9 tokens costs about 4.5).
PRIOR_SLOPE = 0.5

#: The odds a drafted token is right (given the one before it was) before any was verified,
#: by the length of the match it came from (the shared table's matches are long).
PRIOR_ODDS = {2: 0.4, 3: 0.5, 4: 0.6}
PRIOR_LONG = 0.9


@dataclass
class StepCost:
    """Seconds of a generation-only step's `llama_decode` as a line in its tokens, fit (least
    squares) through the running mean of each width timed, each weighted by how often it ran (up
    to `cap`). The prior's shape (`PRIOR_SLOPE`) through the narrowest width's mean adds one more
    point, `reach` tokens wider, of weight `prior_weight`: it holds the line while few steps of
    other widths were timed (a few noisy two-token steps would otherwise set the slope, and
    drafts that look dear are never tried long enough to be timed), and fades once many were."""

    alpha: float = 0.1  # weight of the newest step in a width's running mean
    cap: int = 16
    reach: int = 16
    prior_weight: float = 4.0
    _mean: dict[int, float] = field(default_factory=dict)
    _count: dict[int, int] = field(default_factory=dict)
    _line: tuple[float, float] | None = None

    def record(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        old = self._mean.get(tokens)
        self._mean[tokens] = seconds if old is None else old + self.alpha * (seconds - old)
        self._count[tokens] = self._count.get(tokens, 0) + 1
        self._line = None

    def line(self) -> tuple[float, float] | None:
        """(a, b): a step of n tokens costs a + b * n seconds; None before any step."""
        if self._line is None and self._mean:
            self._line = self._fit()
        return self._line

    def _fit(self) -> tuple[float, float]:
        narrow = min(self._mean)
        one = self._mean[narrow] / ((1 - PRIOR_SLOPE) + PRIOR_SLOPE * narrow)
        prior = (
            narrow + self.reach,
            one * ((1 - PRIOR_SLOPE) + PRIOR_SLOPE * (narrow + self.reach)),
        )
        points = [(n, m, float(min(self._count[n], self.cap))) for n, m in self._mean.items()]
        points.append((*prior, self.prior_weight))
        w = sum(p[2] for p in points)
        mn = sum(n * c for n, _, c in points) / w
        mt = sum(t * c for _, t, c in points) / w
        var = sum(c * (n - mn) ** 2 for n, _, c in points)
        b = sum(c * (n - mn) * (t - mt) for n, t, c in points) / var
        if b <= 0:  # noise bent the line out of shape: the prior's
            return one * (1 - PRIOR_SLOPE), one * PRIOR_SLOPE
        a = mt - b * mn
        if a < 0:  # a line through the origin: every token costs the same
            return 0.0, mt / mn
        return a, b


@dataclass
class DraftOdds:
    """The odds each kind of drafted token is right given the one before it was: right
    tokens against first wrong ones (the tokens after a wrong one are never checked), each
    kind's counts decaying by `decay` per verified draft so they follow the workload."""

    decay: float = 0.98
    explore_every: int = 32
    _counts: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    _below: dict[tuple[int, int], int] = field(default_factory=dict)

    def _of(self, kind: tuple[int, int]) -> list[float]:
        counts = self._counts.get(kind)
        if counts is None:
            p = PRIOR_ODDS.get(kind[0], PRIOR_LONG)
            counts = self._counts[kind] = [2 * p, 2 * (1 - p)]  # worth two drafts
        return counts

    def odds(self, kind: tuple[int, int]) -> float:
        right, wrong = self._of(kind)
        return right / (right + wrong)

    def record(self, kind: tuple[int, int], drafted: int, accepted: int, ended: bool) -> None:
        """A verified draft of this kind: `accepted` of its `drafted` tokens right in a row;
        `ended`: the sequence finished inside it (the rest were not wrong, only unneeded)."""
        counts = self._of(kind)
        counts[0] = counts[0] * self.decay + accepted
        counts[1] = counts[1] * self.decay + (accepted < drafted and not ended)

    def explore(self, kind: tuple[int, int]) -> bool:
        """A draft of this kind fell below the bar: try one token of it anyway?"""
        below = self._below[kind] = self._below.get(kind, 0) + 1
        return below % self.explore_every == 0


def passes(seq_ids: list[int], tokens: list[int]) -> list[int]:
    """The tokens in each pass llama.cpp makes of a step holding `tokens[i]` tokens of sequence
    `seq_ids[i]`, in batch order, when each sequence has its own KV stream (`split_equal`,
    sequential): a pass takes the first sequence with tokens left and each next one whose id
    follows the last taken, and from each of them as many tokens as the shortest has left.
    Eight sequences with ids 0-7, drafts of 2 and 3 tokens on sequences 0 and 1: passes of 8, 4
    and 1 tokens; on sequences 0 and 2: 8, 2 and 3."""
    left = list(tokens)
    out: list[int] = []
    while True:
        chosen: list[int] = []
        last = None
        for i, n in enumerate(left):
            if n and (last is None or seq_ids[i] == last + 1):
                chosen.append(i)
                last = seq_ids[i]
        if not chosen:
            return out
        k = min(left[i] for i in chosen)
        for i in chosen:
            left[i] -= k
        out.append(k * len(chosen))


def plan_drafts(
    candidates: list[tuple[float, int]],
    base: int,
    cost: tuple[float, float],
    budget: int,
    seq_ids: list[int] | None = None,
) -> list[int]:
    """How many tokens of each candidate draft to put in a step of `base` generated tokens.

    `candidates` holds (odds each token is right given the one before, tokens available) per
    sequence; `cost` is the (a, b) line of one pass of `llama_decode` over n tokens; at most
    `budget` drafted tokens in all. The drafted tokens are lined up likeliest first (the i-th
    of a draft is right with odds p**i), and the step takes the first k of them for the k that
    gives the most expected tokens per second.

    `seq_ids`: each sequence has its own KV stream, so llama.cpp splits the step into `passes`,
    each costing `a` more; `candidates` then has every generating sequence (no draft: (0, 0)),
    in batch order, with these ids. A drafted token beside other sequences goes in a pass of
    its own; drafts of the same length share one only when their sequences' ids follow each
    other. Without `seq_ids` (or with one sequence) the step is one pass."""
    a, b = cost
    split = seq_ids is not None and len(seq_ids) > 1
    take = [0] * len(candidates)

    def seconds() -> float:
        if not split:
            return a + b * (base + sum(take))
        assert seq_ids is not None
        runs = passes(seq_ids, [1 + t for t in take])
        return a * len(runs) + b * sum(runs)

    expected = float(base)
    best, best_rate = 0, expected / seconds()
    order: list[int] = []
    heap = [(-p, i) for i, (p, n) in enumerate(candidates) if n > 0 and p > 0]
    heapq.heapify(heap)
    while heap and len(order) < budget:
        q, i = heapq.heappop(heap)
        q = -q
        take[i] += 1
        order.append(i)
        expected += q
        rate = expected / seconds()
        if rate > best_rate:
            best, best_rate = len(order), rate
        p, n = candidates[i]
        if take[i] < n:
            heapq.heappush(heap, (-(q * p), i))
    take = [0] * len(candidates)
    for i in order[:best]:
        take[i] += 1
    return take
