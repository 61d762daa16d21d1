"""How many drafted tokens each sequence puts in a step: the ones expected to pay.

A drafted token costs compute whether or not the model agrees with it, and pays only when it
does. Two things are measured as the engine runs, and each step's drafts are chosen from them:

- `StepCost`: what one pass of `llama_decode` costs (`PassCost`): a line in its tokens, seconds
  = a + b * n, fit from the steps of two tokens or more the engine ran in one pass, and the
  mean of the one-token steps apart (on two CPU cores a step of two tokens costs nearly two
  of one, each token after that less than half of one). With a KV stream per sequence (the
  default), llama.cpp runs a step whose sequences carry different numbers of tokens in several
  passes (`passes`): a drafted token beside other sequences costs a pass of its own. On a GPU,
  or with a model too big for the memory bus, b is small against a and drafts are nearly free;
  with a small model on two CPU cores a step of 9 tokens costs about 4.5 steps of one, and only
  drafts nearly sure to be right pay.
- `DraftOdds`: how often a guessed token is right given the ones before it were, by where the
  guess came from (a long match in the engine's shared table, or the sequence's own 4-, 3- or
  2-token n-gram) and by the sequence's run: how many tokens in a row its guesses were right
  before this one (a sequence copying its prompt for 20 tokens keeps copying; a chat answer
  whose 2-gram guess was right once rarely goes on). Every step checks a sequence's guess
  against what the model generated, drafted or not (`PromptLookup.settle`), so the odds of a
  kind of guess are measured even while none of it goes in a step.

`plan_drafts` then lines up the guessed tokens, the likeliest first over all sequences, and
takes as many as give the step the most expected tokens per second. In one pass, a token right
with odds q is worth its cost b when q > b * (expected tokens) / (step seconds). One client and
an answer copying its prompt: long drafts. Sixteen clients on two cores: the step already has 16
tokens, so only drafts nearly sure to be right go in.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

#: A step of n tokens costs (1 - SLOPE) + SLOPE * n steps of one until two widths were timed
#: (measured on two CPU cores with a small model: a step of 9 tokens costs about 4.5).
PRIOR_SLOPE = 0.5

#: The odds a guessed token is right (given the ones before it were) before any was checked,
#: by the length of the match it came from (the shared table's matches are long).
PRIOR_ODDS = {2: 0.4, 3: 0.5, 4: 0.6}
PRIOR_LONG = 0.9

#: Where the buckets of a run's length start: runs of 0, 1, 2, 3, 4-5, 6-8, 9-12, 13-20, 21-32
#: and 33+ tokens have odds of their own.
RUN_EDGES = (1, 2, 3, 4, 6, 9, 13, 21, 33)


@dataclass(frozen=True)
class PassCost:
    """Seconds of one pass of `llama_decode` over n tokens: `one` for a single token (None: as
    the line says), a + b * n for more."""

    a: float
    b: float
    one: float | None = None

    def seconds(self, n: int) -> float:
        if n == 1 and self.one is not None:
            return self.one
        return self.a + self.b * n


@dataclass
class StepCost:
    """Seconds of a generation-only step's `llama_decode`: the running mean of the one-token
    steps, and a line in the tokens of the wider ones, fit (least squares) through the running
    mean of each width timed, each weighted by how often it ran (up to `cap`). The one-token
    steps are left out of the line once a wider one was timed: on two CPU cores (SmolLM2-135M)
    one token took 8.98 ms, two 16.34 and four 23.7, so a line through all would call a first
    drafted token cheaper than it is and a single step dearer. The prior's shape
    (`PRIOR_SLOPE`) through the narrowest width's mean (one-token steps included) adds one more
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
        """(a, b): a step of n tokens (two or more, once such a step was timed) costs a + b * n
        seconds; None before any step."""
        if self._line is None and self._mean:
            self._line = self._fit()
        return self._line

    def cost(self) -> PassCost | None:
        """The line, and a one-token step's mean apart; None before any step."""
        line = self.line()
        return None if line is None else PassCost(*line, self._mean.get(1))

    def _fit(self) -> tuple[float, float]:
        narrow = min(self._mean)
        one = self._mean[narrow] / ((1 - PRIOR_SLOPE) + PRIOR_SLOPE * narrow)
        prior = (
            narrow + self.reach,
            one * ((1 - PRIOR_SLOPE) + PRIOR_SLOPE * (narrow + self.reach)),
        )
        means = {n: m for n, m in self._mean.items() if n > 1} or self._mean
        points = [(n, m, float(min(self._count[n], self.cap))) for n, m in means.items()]
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
    """The odds a guessed token is right given the ones before it were, for each source (the
    length of the guess's match: 16 for the shared table, else 4, 3 or 2) and bucket of the run
    before it (`RUN_EDGES`): right tokens against wrong ones, each bucket's counts decaying by
    `decay` per token checked so they follow the workload."""

    decay: float = 0.98
    weight: float = 2.0  # of the prior, in tokens
    _counts: dict[tuple[int, int], list[float]] = field(default_factory=dict)

    def _of(self, source: int, run: int) -> list[float]:
        key = (source, bisect.bisect_right(RUN_EDGES, run))
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0.0, 0.0]
        return counts

    def odds(self, source: int, run: int, n: int) -> list[float]:
        """The odds of each of the next `n` tokens of a guess from `source` after a run of
        `run` right ones, each given that the ones before it are right. A bucket's prior is
        the bucket below it (the shortest runs': `PRIOR_ODDS`), worth `weight` tokens: runs
        longer than any checked yet are taken to go on as the longest checked did."""
        if n <= 0:
            return []
        last = bisect.bisect_right(RUN_EDGES, run + n - 1)
        p = PRIOR_ODDS.get(source, PRIOR_LONG)
        by_bucket = []
        for bucket in range(last + 1):
            right, wrong = self._counts.get((source, bucket), (0.0, 0.0))
            p = (right + self.weight * p) / (right + wrong + self.weight)
            by_bucket.append(p)
        return [by_bucket[bisect.bisect_right(RUN_EDGES, run + j)] for j in range(n)]

    def record(self, source: int, run: int, right: int, wrong: bool) -> None:
        """A guess from `source` after a run of `run`: its first `right` tokens were right,
        and (`wrong`) the one after them was not (False: it was not checked)."""
        for j in range(right):
            counts = self._of(source, run + j)
            counts[0] = counts[0] * self.decay + 1
            counts[1] *= self.decay
        if wrong:
            counts = self._of(source, run + right)
            counts[0] *= self.decay
            counts[1] = counts[1] * self.decay + 1


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


def can_pay(base: int, budget: int, split: bool) -> bool:
    """Whether any draft could raise a step's tokens per second: a step of `base` generated
    tokens with room for `budget` drafted ones. In one pass, yes. Split into passes (`split`),
    drafted tokens go in passes of their own; with T = a + b * base the step's seconds, d drafted
    tokens, all right, in one more pass give (base + d) / (T + a + b * d), more than base / T
    only when d > base. A lone drafted token's pass costs a one-token step instead, which
    pays only when that step is cheaper than T / base (measured: 8.62 ms, against 5.1 ms a
    token in a step of 8). So with `budget` <= `base` (nine sequences or more in a step of 17)
    no draft pays, and the lookups can be skipped."""
    return not split or budget > base


def plan_drafts(
    candidates: Sequence[Sequence[float]],
    base: int,
    cost: PassCost,
    budget: int,
    seq_ids: list[int] | None = None,
) -> list[int]:
    """How many tokens of each candidate draft to put in a step of `base` generated tokens.

    `candidates` holds, per sequence, the odds of each token of its guess (`DraftOdds.odds`:
    the i-th is right given the ones before it were, so it is right with the product of the
    first i); `cost` is what one pass of `llama_decode` over n tokens costs; at most
    `budget` drafted tokens in all. The tokens are lined up likeliest first, and the step takes
    the first k of them for the k that gives the most expected tokens per second.

    `seq_ids`: each sequence has its own KV stream, so llama.cpp splits the step into `passes`,
    each costing its own `cost`; `candidates` then has every generating sequence (no draft: (0, 0)),
    in batch order, with these ids. A drafted token beside other sequences goes in a pass of
    its own; drafts of the same length share one only when their sequences' ids follow each
    other. Without `seq_ids` (or with one sequence) the step is one pass."""
    split = seq_ids is not None and len(seq_ids) > 1
    take = [0] * len(candidates)

    def seconds() -> float:
        if not split:
            return cost.seconds(base + sum(take))
        assert seq_ids is not None
        return sum(cost.seconds(n) for n in passes(seq_ids, [1 + t for t in take]))

    expected = float(base)
    best, best_rate = 0, expected / seconds()
    order: list[int] = []
    heap = [(-c[0], i) for i, c in enumerate(candidates) if c and c[0] > 0]
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
        odds = candidates[i]
        if take[i] < len(odds) and odds[take[i]] > 0:
            heapq.heappush(heap, (-(q * odds[take[i]]), i))
    take = [0] * len(candidates)
    for i in order[:best]:
        take[i] += 1
    return take
