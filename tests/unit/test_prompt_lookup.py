"""Prompt-lookup drafting: which tokens are guessed, and how the draft length adapts."""

from __future__ import annotations

import pytest

from gpt4all_api.engine.lookup import PromptLookup


def test_the_tokens_after_the_newest_earlier_occurrence_are_drafted() -> None:
    look = PromptLookup(draft_max=4, tokens=[1, 2, 3, 4, 5, 6, 9, 1, 2, 3, 7, 8, 1, 2])
    # "1 2" ends the context; its newest earlier occurrence is followed by 3 7 8 1
    assert look.draft(8) == [3, 7, 8, 1]
    assert look.draft(2) == [3, 7]


def test_a_longer_ngram_wins_over_a_newer_shorter_one() -> None:
    look = PromptLookup(draft_max=3, tokens=[5, 1, 2, 10, 11, 12, 9, 2, 20, 21, 5, 1, 2])
    # "5 1 2" matched at the start beats "2" alone (a 1-gram is never used) and "1 2"'s ...
    assert look.draft(3) == [10, 11, 12]


def test_nothing_is_drafted_without_a_match() -> None:
    look = PromptLookup(tokens=[1, 2, 3, 4, 5, 6])
    assert look.draft(8) == []
    look.extend([7, 1, 2])
    assert look.draft(8) == [3, 4, 5, 6, 7, 1, 2]  # the draft stops where the context does


def test_the_index_follows_new_tokens() -> None:
    look = PromptLookup(draft_max=2, tokens=[1, 2, 3])
    assert look.draft(2) == []
    for t in [4, 1, 2]:
        look.extend([t])
    assert look.draft(2) == [3, 4]


def test_each_guess_is_checked_against_what_the_model_generated_drafted_or_not() -> None:
    look = PromptLookup(draft_max=8, tokens=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2])
    assert look.draft(16) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert (look.source, look.run) == (2, 0)  # a 2-gram's match, no right guess before it
    # none of it drafted; the model generated 3, the guess's first token: a run of one
    look.extend([3])
    assert look.settle(0, 0, following=3) == (1, False)
    assert look.run == 1
    # four drafted, all taken, and the token after them right too: the run is six
    assert look.draft(16) == [4, 5, 6, 7, 8, 9, 10, 11]
    look.extend([4, 5, 6, 7, 8])
    assert look.settle(4, 4, following=8) == (5, False)
    assert look.run == 6
    # two of four taken: the third was wrong, and the run starts again
    look.draft(16)
    look.extend([9, 10, 99])
    assert look.settle(4, 2, following=99) == (2, True)
    assert look.run == 0
    assert (look.drafted, look.accepted) == (8, 6)  # what went in a step, not the checks


def test_a_run_is_broken_by_tokens_no_guess_was_checked_against() -> None:
    look = PromptLookup(draft_max=4, tokens=[1, 2, 3, 4, 5, 6, 1, 2])
    look.draft(4)
    look.extend([3])
    look.settle(0, 0, following=3)
    assert look.run == 1
    look.extend([4])  # a step without a guess (a prompt waited to be read)
    assert look.draft(4) == [5, 6, 1, 2]
    assert look.run == 0
    # the answer ended: the guess's tokens after the taken ones were not needed, not wrong
    look.extend([5])
    assert look.settle(3, 1, following=None) == (1, False)
    # no match at all: no guess, and the run is over
    look = PromptLookup(tokens=[1, 2, 3])
    look.run = 5
    assert look.draft(4) == [] and look.run == 0


# -- how much of each draft goes in a step (drafting.py) ---------------------------------------


def test_the_step_cost_is_a_line_fit_through_the_widths_timed() -> None:
    from gpt4all_api.engine.drafting import StepCost

    cost = StepCost()
    assert cost.line() is None
    for _ in range(5):
        cost.record(1, 0.010)
    a, b = cost.line()  # one width: the prior's shape (a step of n costs 0.5 + 0.5 n) through it
    assert (round(a, 6), round(b, 6)) == (0.005, 0.005)
    cost.record(2, 0.020)  # one noisy two-token step does not set the slope
    a, b = cost.line()
    assert 0.004 < b < 0.007
    for n in (3, 5, 9, 17):
        for _ in range(20):
            cost.record(n, 0.004 + 0.006 * n)
    a, b = cost.line()  # many steps of 3, 5, 9, 17 tokens, all on 0.004 + 0.006 n: they rule
    assert abs(b - 0.006) < 0.0006 and abs(a + 9 * b - 0.058) < 0.003


def test_one_token_steps_are_timed_apart_from_the_line_through_wider_ones() -> None:
    """Measured on two cores: one token 8.98 ms, two 16.34, four 23.7, eight 38.79, sixteen
    69.26. A line through all five calls a first drafted token cheaper than it is (8.98 for
    one, 16.34 for two) and a single step dearer than it is."""
    from gpt4all_api.engine.drafting import StepCost

    cost = StepCost()
    for _ in range(5):
        cost.record(1, 0.010)
    only = cost.cost()  # one width: the prior's line, a single token on it
    assert only is not None and only.seconds(1) == 0.010
    assert only.seconds(3) == (only.a + 3 * only.b)
    measured = {1: 8.98, 2: 16.34, 4: 23.7, 8: 38.79, 16: 69.26}
    for _ in range(20):
        for n, ms in measured.items():
            cost.record(n, ms / 1000)
    line = cost.cost()
    assert line is not None and line.one == pytest.approx(0.00898, rel=0.02)  # a running mean
    for n, ms in measured.items():  # every width within 4% of its time
        assert line.seconds(n) == pytest.approx(ms / 1000, rel=0.04)


def test_a_plan_for_one_sequence_pays_for_its_first_drafted_token_in_full() -> None:
    """One token costs 1.0 step, two 1.82 and each next one 0.42: a token right with odds 0.8
    is not worth its 0.82 (a line through one-token steps too, 0.80 + 0.435 n, would take it)."""
    from gpt4all_api.engine.drafting import PassCost, plan_drafts

    apart = PassCost(0.98, 0.42, one=1.0)
    assert plan_drafts([[0.8]], 1, apart, 16) == [0]
    assert plan_drafts([[0.8]], 1, PassCost(0.80, 0.435), 16) == [1]
    # a sure long draft pays for the first token's price: 17 tokens for 8.12 steps
    assert plan_drafts([[0.999] * 16], 1, apart, 16) == [16]


def test_the_odds_follow_the_source_and_the_run_before_a_token() -> None:
    from gpt4all_api.engine.drafting import DraftOdds

    odds = DraftOdds()
    # before any check: short matches are weak, long ones strong, whatever the run
    assert odds.odds(2, 0, 1)[0] < 0.5 < odds.odds(16, 0, 1)[0]
    assert odds.odds(2, 0, 1) == odds.odds(2, 40, 1)
    for _ in range(50):
        odds.record(2, 0, right=0, wrong=True)  # a 2-gram's guess with no run: wrong at once
        odds.record(4, 0, right=3, wrong=True)  # a 4-gram's: three right, then wrong
        odds.record(4, 4, right=20, wrong=False)  # from a run of four on: right all along
    assert odds.odds(2, 0, 1)[0] < 0.05
    # a token's odds are its run's: the tokens of one guess climb through the buckets
    climbing = odds.odds(4, 0, 24)
    assert climbing[0] > 0.95 and climbing[3] < 0.1 and min(climbing[4:]) > 0.95
    # runs longer than any checked (33 and more here) go on as the longest checked did
    assert odds.odds(4, 40, 1)[0] > 0.99
    before = odds.odds(3, 0, 3)
    odds.record(3, 0, right=2, wrong=False)  # the answer ended after two right ones
    after = odds.odds(3, 0, 3)
    assert after[0] > before[0] and after[1] > before[1]


def test_a_step_takes_the_drafted_tokens_that_raise_its_tokens_per_second() -> None:
    from gpt4all_api.engine.drafting import PassCost, plan_drafts

    cpu = PassCost(0.5, 0.5)  # a token costs half a one-token step
    # one sequence: the i-th token is right with odds p**i; tokens go in while q > b*E/T
    assert plan_drafts([[0.999] * 16], 1, cpu, 64) == [16]
    assert plan_drafts([[0.99] * 32], 1, cpu, 64) == [13]
    assert plan_drafts([[0.9] * 16], 1, cpu, 64) == [3]
    assert plan_drafts([[0.4] * 16], 1, cpu, 64) == [0]  # a 2-gram guess costs more than it gives
    assert plan_drafts([[0.99] * 16], 1, cpu, 5) == [5]  # at most the budget
    # sixteen sequences: the step already yields 16 tokens for 8.5, only sure tokens pay
    assert plan_drafts([[0.9] * 16] * 16, 16, cpu, 64) == [0] * 16
    assert sum(plan_drafts([[0.99] * 16] * 16, 16, cpu, 64)) > 0
    # the likeliest go first: a copying sequence's before a weaker one's
    taken = plan_drafts([[0.6] * 8, [0.98] * 8], 1, cpu, 64)
    assert taken[1] == 8 and taken[0] < 2
    # where tokens cost little (a GPU), weaker drafts pay too
    assert plan_drafts([[0.4] * 16], 1, PassCost(1.0, 0.02), 64) == [3]
    # each token has its own odds: a doubtful first one before a sure run takes the run along,
    # and a doubtful one after a sure start ends the draft
    assert plan_drafts([[0.7] + [0.999] * 15], 1, cpu, 64) == [16]
    assert plan_drafts([[0.999] * 4 + [0.3] * 12], 1, cpu, 64) == [4]


def test_passes_split_a_step_as_llama_cpp_does_with_the_kv_kept_apart() -> None:
    from gpt4all_api.engine.drafting import passes

    ids = list(range(8))
    assert passes(ids, [1] * 8) == [8]
    assert passes(ids, [3] + [1] * 7) == [8, 2]
    assert passes(ids, [3, 4] + [1] * 6) == [8, 4, 1]
    assert passes(ids, [3, 1, 4] + [1] * 5) == [8, 2, 3]  # 0 and 2 do not follow each other
    assert passes([0, 1, 3], [1, 1, 1]) == [2, 1]  # nor do 1 and 3
    assert passes([5], [17]) == [17]


def test_a_step_in_sequence_order_takes_fewer_passes() -> None:
    """New prompts go into the batch after the generating sequences' tokens; put in sequence
    order, a wave of cached prompts (one token left each) shares the generating ones' pass."""
    from gpt4all_api.engine.batch_order import sequence_order
    from gpt4all_api.engine.drafting import passes

    def sort(ids: list[int], tokens: list[int]) -> tuple[list[int], list[int]]:
        flat = [s for s, n in zip(ids, tokens, strict=True) for _ in range(n)]
        order = sequence_order(flat)
        assert order is not None
        pos = [flat[i] for i in order]
        return sorted(set(ids)), [pos.count(s) for s in sorted(set(ids))]

    # sequence 5 generating, prompts for 0-4 and 6-15 admitted with their last token to read
    ids, tokens = [5, *range(5), *range(6, 16)], [1] * 16
    assert passes(ids, tokens) == [11, 5]
    assert passes(*sort(ids, tokens)) == [16]
    # generating 0-3 and 5-8, a prompt of 20 tokens for 4
    ids, tokens = [0, 1, 2, 3, 5, 6, 7, 8, 4], [1] * 8 + [20]
    assert passes(ids, tokens) == [5, 4, 19]
    assert passes(*sort(ids, tokens)) == [9, 19]
    # each sequence's tokens keep their order, and a sorted batch is left alone
    assert sequence_order([3, 3, 3, 1, 1]) == [3, 4, 0, 1, 2]
    assert sequence_order([0, 0, 1, 2, 2]) is None


def test_sort_batch_moves_each_token_with_its_position_sequence_and_logits_flag() -> None:
    import llama_cpp as lc

    from gpt4all_api.engine.batch_order import sort_batch

    rows = [(20, 7, 2, 1), (21, 8, 2, 0), (0, 3, 0, 1), (10, 5, 1, 0), (11, 6, 1, 1)]
    batch = lc.llama_batch_init(8, 0, 1)
    try:
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.logits[i] = token, pos, logits
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq
        where = sort_batch(batch, len(rows))
        got = [
            (batch.token[i], batch.pos[i], batch.seq_id[i][0], batch.logits[i]) for i in range(5)
        ]
        assert got == [rows[2], rows[3], rows[4], rows[0], rows[1]]
        assert where == [3, 4, 0, 1, 2]  # the old position's new one
        assert sort_batch(batch, len(rows)) is None  # sorted already
    finally:
        lc.llama_batch_free(batch)


def test_with_kv_kept_apart_a_draft_pays_for_the_passes_it_adds() -> None:
    """Eight sequences with their KV apart: llama.cpp puts one token of each in a pass, and
    the drafted tokens in passes of their own. Measured on two cores: a step of 8 tokens took
    47.1 ms, with one drafted token 57.9 ms."""
    from gpt4all_api.engine.drafting import PassCost, plan_drafts

    cpu = PassCost(0.37, 0.63)  # one pass of n tokens: 0.37 + 0.63 n single steps (the Q4_1 model)
    ids = list(range(8))
    idle: list[list[float]] = [[]] * 6
    # counted as in the one pass, a likely token pays: 8.95 tokens for 6.04 against 8 for 5.41
    assert plan_drafts([[0.95] * 4, [], *idle], 8, cpu, 8) == [1] + [0] * 7
    # in a pass of its own it costs 1.0 more, not 0.63: it lowers tokens per second
    assert plan_drafts([[0.95] * 4, [], *idle], 8, cpu, 8, ids) == [0] * 8
    # a sure draft of 16 fills its pass, and pays: 23.9 tokens for 15.9
    assert plan_drafts([[0.999] * 16, [], *idle], 8, cpu, 16, ids) == [16] + [0] * 7
    # as do two sure drafts of 8 on sequences whose ids follow each other: they share a pass
    assert plan_drafts([[0.999] * 8, [0.999] * 8, *idle], 8, cpu, 16, ids) == [8, 8] + [0] * 6
    # not on sequences 0 and 2: two passes, 23.9 tokens for 16.2; one alone, 16.0 for 10.8
    apart = plan_drafts([[0.999] * 8, [], [0.999] * 8, *idle[1:]], 8, cpu, 16, ids)
    assert apart == [0] * 8
    # one sequence: its drafted tokens are in its one pass, the ids change nothing
    for odds in (0.6, 0.9, 0.99):
        alone = plan_drafts([[odds] * 16], 1, cpu, 64)
        assert plan_drafts([[odds] * 16], 1, cpu, 64, [3]) == alone


# -- the table shared by all sequences ---------------------------------------------------------


def test_a_sequence_drafts_what_followed_its_tail_in_another_sequence() -> None:
    from gpt4all_api.engine.lookup import SharedNgrams

    shared = SharedNgrams(n=4, bits=12)
    earlier = [50, 51, 52, 53, 60, 61, 62, 63, 64, 65]  # an earlier prompt and its answer
    PromptLookup(tokens=earlier, shared=shared)  # fed when the sequence starts
    # a new sequence whose context ends as the earlier one did after 4 tokens: it drafts the
    # earlier continuation, chained token by token, up to the limit
    look = PromptLookup(draft_max=4, tokens=[9, 50, 51, 52, 53], shared=shared)
    assert look.draft(8) == [60, 61, 62, 63]
    # tokens a sequence generates are fed too
    look.extend([60, 61, 62, 63, 70])
    other = PromptLookup(draft_max=4, tokens=[8, 60, 61, 62, 63], shared=shared)
    assert other.draft(4) == [70]  # the newest continuation wins; nothing followed "61 62 63 70"


def test_the_shared_table_forgets_and_never_confuses_two_ngrams() -> None:
    import random

    from gpt4all_api.engine.lookup import SharedNgrams

    rng = random.Random(7)
    shared = SharedNgrams(n=8, bits=6)  # 64 slots: most n-grams of 400 tokens collide
    tokens = [rng.randrange(49152) for _ in range(400)]
    shared.add(tokens)
    known = 0
    for i in range(8, 400):
        got = shared.chain(tokens[:i], 1)
        assert got in ([], [tokens[i]])  # a slot taken by another n-gram gives no draft
        known += bool(got)
    assert 0 < known <= 64
    assert shared.chain([1] * 8, 4) == []


def test_a_prompt_and_single_tokens_fill_the_table_alike() -> None:
    import random

    import numpy as np

    from gpt4all_api.engine.lookup import SharedNgrams

    rng = random.Random(3)
    tokens = [rng.randrange(49152) for _ in range(300)]
    whole, one_by_one = SharedNgrams(n=16, bits=16), SharedNgrams(n=16, bits=16)
    whole.add(tokens)  # NumPy over the whole prompt
    for i in range(len(tokens)):
        one_by_one.add(tokens[: i + 1], i)  # Python, a token at a time
    assert np.array_equal(whole._keys_np, one_by_one._keys_np)
    assert np.array_equal(whole._next_np, one_by_one._next_np)
    assert whole.chain(tokens[:100], 8) == tokens[100:108]


def test_where_no_draft_can_pay_the_lookups_are_skipped() -> None:
    from gpt4all_api.engine.drafting import PassCost, can_pay, plan_drafts

    # one pass: a likely enough token always pays
    assert can_pay(1, 16, split=False) and can_pay(16, 1, split=False)
    # passes of their own: only more drafted tokens than the step has sequences can pay
    assert can_pay(8, 9, split=True)
    assert not can_pay(9, 8, split=True) and not can_pay(16, 1, split=True)
    # and the plan agrees, even for drafts sure to be right, whatever the cost line
    for cost in (PassCost(0.37, 0.63), PassCost(0.9, 0.1), PassCost(0.05, 0.95)):
        for n in (9, 12, 16):
            ids = list(range(n))
            sure = [[0.9999] * 16] * n
            assert plan_drafts(sure, n, cost, 17 - n, ids) == [0] * n
        assert sum(plan_drafts([[0.9999] * 16] * 4, 4, cost, 13, [0, 1, 2, 3])) > 0
