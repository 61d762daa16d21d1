"""Prompt-lookup drafting: which tokens are guessed, and how the draft length adapts."""

from __future__ import annotations

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


def test_the_draft_length_adapts_to_what_the_model_accepts() -> None:
    look = PromptLookup(draft_max=8, tokens=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2])
    assert len(look.draft(16)) == 8
    look.settle(8, 2)  # two accepted: the next drafts are three long
    assert look.limit == 3
    look.settle(3, 3)  # all accepted: double
    assert look.limit == 6
    assert (look.drafted, look.accepted) == (11, 5)


def test_outright_rejections_make_the_sequence_rest_longer_each_time() -> None:
    look = PromptLookup(draft_max=4, tokens=[1, 2, 3, 1, 2])
    assert look.draft(4)
    look.settle(3, 0)
    assert [bool(look.draft(4)) for _ in range(3)] == [False, False, True]
    look.settle(1, 0)
    assert [bool(look.draft(4)) for _ in range(5)] == [False] * 4 + [True]
    look.settle(1, 1)  # an accepted draft ends the rest periods
    assert look.draft(4)


def test_drafting_runs_where_it_pays_and_is_probed_where_it_does_not() -> None:
    from gpt4all_api.engine.lookup import DraftPayoff

    payoff = DraftPayoff(probe_every=4)
    # unmeasured: the steps alternate, so both kinds get measured
    assert [payoff.allow(1) for _ in range(4)] == [False, True, False, True]
    payoff.record(1, drafted=False, emitted=1, seconds=0.02)  # 50 tokens/s
    payoff.record(1, drafted=True, emitted=2, seconds=0.06)  # 33 tokens/s: drafts lose
    probes = [i for i in range(60) if payoff.allow(1)]
    assert probes == [3, 11, 27, 59]  # ever rarer while drafts lose: 4, 8, 16, 32 steps apart
    for _ in range(20):  # the answer turns to copying its prompt: drafts win
        payoff.record(1, drafted=True, emitted=6, seconds=0.06)
    assert [payoff.allow(1) for _ in range(8)].count(True) == 6  # all but the probes
    assert payoff.rates(2) == (None, None)  # each batch width is measured on its own


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
