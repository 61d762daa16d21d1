"""How fast prompt lookup could make the grounded answers, were every draft right.

Replays each greedy answer step by step against what a step of k tokens costs on this machine
(`raw.step_costs`). At every step the draft is the longest span of the sequence's own context
(prompt and answer so far) that the answer goes on with, as much of it as gives the most tokens
per single-token step: no drafted token is ever rejected. Drafting from the sequence's own
context can hardly do better; real drafters guess, and some of their tokens are rejected.

`cut_guess_speedup` replays the same answers with the server's own guesses instead (each
sequence's n-gram index and the engine's shared table, over as many passes as the bench ran),
each cut exactly where it goes wrong: what knowing when to stop a draft would give, the part of
the gap to the bound above that no choice of draft lengths can close.

`plan_speedup` replays them once more with the engine's own choice (`drafting.DraftOdds`
learning from every step, `drafting.plan_drafts` with the measured costs as `StepCost` sees them):
what the default would give were every step to cost what was measured, without the noise of a
timed run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from ..engine.drafting import DraftOdds, PassCost, plan_drafts
from ..engine.lookup import PromptLookup, SharedNgrams
from .raw import StepCost

Cases = Sequence[tuple[list[int], list[int]]]


def step_cost(costs: Sequence[StepCost], k: int) -> float:
    """A step of `k` tokens in single-token steps, between the measured sizes (linear)."""
    points = sorted((c.tokens, c.steps) for c in costs)
    for (a, ca), (b, cb) in itertools.pairwise(points):
        if a <= k <= b:
            return ca + (cb - ca) * (k - a) / (b - a)
    last, c_last = points[-1]
    return c_last * k / last


def longest_span(context: list[int], rest: list[int], room: int) -> tuple[int, int]:
    """(start, length) of the longest span of `context`, at most `room` long, that `rest`
    starts with; (0, 0) when its first token is nowhere in `context`."""
    best, at = 0, 0
    if not rest:
        return 0, 0
    first = rest[0]
    limit = min(room, len(rest))
    for j, token in enumerate(context):
        if token != first:
            continue
        n = 1
        while n < limit and j + n < len(context) and context[j + n] == rest[n]:
            n += 1
        if n > best:
            best, at = n, j
            if n == limit:
                break
    return at, best


def perfect_lookup_speedup(
    cases: Sequence[tuple[list[int], list[int]]], costs: Sequence[StepCost], room: int = 64
) -> float:
    """Tokens over single-token steps for the answers (prompt, answer tokens) with drafts that
    are always right."""
    if not costs or not cases:
        return 0.0
    steps, tokens = 0.0, 0
    for prompt, answer in cases:
        i = 0
        while i < len(answer):
            context = prompt + answer[: i + 1]  # the step's token is the answer's i-th
            _, span = longest_span(context, answer[i + 1 :], room)
            n = _best_part(costs, span)  # the part of the span worth a step
            steps += step_cost(costs, 1 + n)
            i += 1 + n
        tokens += len(answer)
    return tokens / steps if steps else 0.0


def _best_part(costs: Sequence[StepCost], right: int) -> int:
    """How many of `right` tokens that are sure to be right to put in a step: the most tokens
    per single-token step."""
    return max(range(right + 1), key=lambda m: (1 + m) / step_cost(costs, 1 + m))


def _replay(
    cases: Cases,
    costs: Sequence[StepCost],
    passes: int,
    draft_max: int,
    take: Callable[[PromptLookup, list[int], int], int],
    settle: Callable[[PromptLookup, int, int, int | None], None] | None = None,
) -> list[float]:
    """Per pass over the answers: tokens over single-token steps when every step puts in
    `take(lookup, guess, right)` tokens of what `PromptLookup` guesses (one `SharedNgrams` for
    all, as in the engine), `right` of which the answer goes on with; `settle(lookup, drafted,
    accepted, following token or None)` after each step that guessed."""
    shared = SharedNgrams()
    out = []
    for _ in range(passes):
        steps, tokens = 0.0, 0
        for prompt, answer in cases:
            # as in perfect_lookup_speedup: the step's token is the answer's i-th, in the
            # context, and the guess is for the tokens after it
            look = PromptLookup(draft_max=draft_max, tokens=[*prompt, *answer[:1]], shared=shared)
            i = 0
            while i < len(answer):
                guess = look.draft(len(answer) - i - 1)
                right = 0
                while right < len(guess) and guess[right] == answer[i + 1 + right]:
                    right += 1
                n = take(look, guess, right) if guess else 0
                accepted = min(n, right)
                steps += step_cost(costs, 1 + n)
                look.extend(answer[i + 1 : i + 2 + accepted])
                if settle is not None and look.guess is not None:
                    after = i + 1 + accepted
                    settle(look, n, accepted, answer[after] if after < len(answer) else None)
                i += 1 + accepted
            tokens += len(answer)
        out.append(tokens / steps if steps else 0.0)
    return out


def cut_guess_speedup(
    cases: Cases, costs: Sequence[StepCost], passes: int = 1, draft_max: int = 16
) -> list[float]:
    """Per pass over the answers (prompt, answer tokens): tokens over single-token steps when
    every step drafts what `PromptLookup` guesses, cut where the guess goes wrong, of it as
    much as pays."""
    if not costs or not cases:
        return []
    return _replay(cases, costs, passes, draft_max, lambda _, __, right: _best_part(costs, right))


def pass_cost(costs: Sequence[StepCost], widest: int) -> PassCost:
    """In single-token steps, as the engine's `StepCost` sees them: the least-squares line a +
    b * k through the measured steps of 2 <= k <= `widest` tokens, and the one-token step
    apart."""
    one = next((c.steps for c in costs if c.tokens == 1), None)
    points = [(c.tokens, c.steps) for c in costs if 1 < c.tokens <= widest]
    if len(points) < 2:
        points = [(c.tokens, c.steps) for c in costs if c.tokens <= widest] or [(1, 1.0)]
    if len(points) < 2:
        return PassCost(0.0, points[0][1] / points[0][0], one)
    mk = sum(k for k, _ in points) / len(points)
    ms = sum(s for _, s in points) / len(points)
    b = sum((k - mk) * (s - ms) for k, s in points) / sum((k - mk) ** 2 for k, _ in points)
    return PassCost(ms - b * mk, b, one)


def plan_speedup(
    cases: Cases,
    costs: Sequence[StepCost],
    passes: int = 1,
    draft_max: int = 16,
    odds: DraftOdds | None = None,
) -> list[float]:
    """Per pass over the answers: tokens over single-token steps when every step drafts what
    the engine's plan takes of `PromptLookup`'s guess, its odds learned as the engine learns
    them (a fresh `odds` given: with its settings), with the measured costs as `pass_cost`
    puts them."""
    if not costs or not cases:
        return []
    odds = odds or DraftOdds()
    cost = pass_cost(costs, draft_max + 1)

    def take(look: PromptLookup, guess: list[int], _: int) -> int:
        return plan_drafts([odds.odds(look.source, look.run, len(guess))], 1, cost, draft_max)[0]

    def settle(look: PromptLookup, drafted: int, accepted: int, following: int | None) -> None:
        source, run = look.source, look.run
        odds.record(source, run, *look.settle(drafted, accepted, following))

    return _replay(cases, costs, passes, draft_max, take, settle)
