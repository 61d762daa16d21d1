"""Prompt lookup's bound with drafts that are always right (bench/lookup_bound.py)."""

from __future__ import annotations

import pytest

from gpt4all_api.bench.lookup_bound import longest_span, perfect_lookup_speedup, step_cost
from gpt4all_api.bench.raw import StepCost

# k tokens cost 1 + (k - 1) / 2 single-token steps
COSTS = [StepCost(tokens=k, ms=10 + 5 * (k - 1), steps=1 + (k - 1) / 2) for k in (1, 2, 4, 8, 16)]


def test_step_costs_between_and_past_the_measured_sizes() -> None:
    assert step_cost(COSTS, 3) == pytest.approx(2.0)
    assert step_cost(COSTS, 32) == pytest.approx(8.5 * 2)  # past the last: in proportion


def test_the_longest_span_the_rest_starts_with() -> None:
    assert longest_span([1, 2, 3, 9, 1, 2, 3, 4], [1, 2, 3, 4, 5], room=8) == (4, 4)
    assert longest_span([1, 2, 3, 4], [1, 2, 3, 4], room=2) == (0, 2)
    assert longest_span([1, 2], [7, 1], room=8) == (0, 0)


def test_an_answer_copying_its_prompt_is_bounded_by_the_step_costs() -> None:
    prompt = list(range(100, 120))
    copy = list(range(105, 115))  # ten tokens of the prompt: the first decoded, nine drafted
    assert perfect_lookup_speedup([(prompt, copy)], COSTS) == pytest.approx(10 / 5.5)
    fresh = [1, 2, 3, 4, 5]  # nothing to copy: plain decoding
    assert perfect_lookup_speedup([(prompt, fresh)], COSTS) == pytest.approx(1.0)
    assert perfect_lookup_speedup([], COSTS) == 0.0


def test_the_servers_own_guesses_cut_where_they_go_wrong() -> None:
    from gpt4all_api.bench.lookup_bound import cut_guess_speedup

    prompt = list(range(100, 120))
    copy = list(range(105, 115))
    # "105" alone matches no n-gram (one plain step); "105 106" finds the other eight
    assert cut_guess_speedup([(prompt, copy)], COSTS) == pytest.approx([10 / (1 + 5)])
    # an edit inside the copy: the guess after it is wrong at once, then right again
    edited = [105, 106, 107, 1, 108, 109, 110, 111, 112]
    first = cut_guess_speedup([(prompt, edited)], COSTS)[0]
    assert 1.0 < first < perfect_lookup_speedup([(prompt, edited)], COSTS) + 1e-9
    # a second pass drafts the first pass's answer from the shared table: the edit too
    again = cut_guess_speedup([(prompt, edited)], COSTS, passes=2)
    assert again[0] == pytest.approx(first) and again[1] > first


def test_the_engines_own_plan_replayed_lies_between_plain_decoding_and_the_cut_guesses() -> None:
    from gpt4all_api.bench.lookup_bound import cut_guess_speedup, plan_speedup

    prompt = [7, 8, 9, *range(100, 180)]
    copy = list(range(100, 170))  # a long copy: once the run is long the plan drafts
    cut = cut_guess_speedup([(prompt, copy)], COSTS)[0]
    plan = plan_speedup([(prompt, copy)], COSTS)[0]
    assert 1.2 < plan <= cut + 1e-9
    # an answer that copies nothing: guesses are checked, none pays, plain decoding's speed
    fresh = list(range(300, 340))
    assert plan_speedup([(prompt, fresh)], COSTS) == pytest.approx([1.0])
    assert plan_speedup([], COSTS) == []


def test_the_plan_replayed_with_other_odds_settings() -> None:
    """`scripts/lookup-replay` tries the plan's odds with other settings on saved runs."""
    from gpt4all_api.bench.lookup_bound import plan_speedup
    from gpt4all_api.engine.drafting import DraftOdds

    prompt = [7, 8, 9, *range(100, 180)]
    copy = list(range(100, 170))
    default = plan_speedup([(prompt, copy)], COSTS)
    assert plan_speedup([(prompt, copy)], COSTS, odds=DraftOdds()) == default
    # a prior worth many tokens keeps the first guesses' low odds longer: fewer drafts
    slow = plan_speedup([(prompt, copy)], COSTS, odds=DraftOdds(weight=50.0))
    assert 1.0 <= slow[0] < default[0]


def test_the_replay_prices_steps_as_the_engine_does() -> None:
    """The one-token step apart, a line through the wider ones (`drafting.StepCost`)."""
    from gpt4all_api.bench.lookup_bound import pass_cost

    cost = pass_cost(COSTS, 17)  # k tokens: 1 + (k - 1) / 2 steps, on one line
    assert (cost.a, cost.b, cost.one) == pytest.approx((0.5, 0.5, 1.0))
    measured = [  # two CPU cores: two tokens cost nearly two steps, each next one 0.42
        StepCost(tokens=k, ms=ms, steps=ms / 8.98)
        for k, ms in ((1, 8.98), (2, 16.34), (4, 23.7), (8, 38.79), (16, 69.26))
    ]
    cost = pass_cost(measured, 17)
    assert cost.seconds(1) == 1.0
    assert cost.seconds(2) == pytest.approx(16.34 / 8.98, rel=0.02)
    assert cost.b == pytest.approx(0.42, abs=0.01)
