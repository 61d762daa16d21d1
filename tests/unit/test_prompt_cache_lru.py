"""The prompt cache in RAM (engine/prompt_cache.py): what it keeps, finds and lets go."""

from __future__ import annotations

import ctypes

from gpt4all_api.engine.prompt_cache import PromptCache, new_state


def state(n: int) -> ctypes.Array[ctypes.c_uint8]:
    return new_state(n)


def put(cache: PromptCache, tokens: list[int], buf: ctypes.Array[ctypes.c_uint8]) -> None:
    cache.put(tokens, buf, len(buf))


def test_the_longest_shared_start_is_found() -> None:
    cache = PromptCache(budget=1000)
    put(cache, [1, 2, 3, 4], state(10))
    put(cache, [1, 2, 9, 9, 9], state(10))
    saved, n = cache.longest([1, 2, 3, 4, 5])
    assert saved is not None and saved.tokens == [1, 2, 3, 4] and n == 4
    assert cache.longest([7, 8]) == (None, 0)
    assert cache.covers([1, 2, 9]) and not cache.covers([1, 2, 9, 9, 9, 9])


def test_a_longer_turn_of_the_same_conversation_replaces_the_shorter() -> None:
    cache = PromptCache(budget=1000)
    put(cache, [1, 2, 3], state(10))
    put(cache, [1, 2, 3, 4, 5], state(30))
    assert len(cache) == 1 and cache.held == 30


def test_the_least_recently_used_go_first_past_the_budget() -> None:
    cache = PromptCache(budget=100)
    put(cache, [1], state(40))
    put(cache, [2], state(40))
    cache.longest([1, 5])  # used: [2] is now the oldest
    put(cache, [3], state(40))
    assert cache.held == 80
    assert cache.longest([2])[0] is None and cache.longest([1])[1] == 1
    put(cache, [4], state(101))  # larger than the whole budget: not kept
    assert cache.held == 80 and cache.saves == 3


def test_no_more_states_than_max_entries_are_kept() -> None:
    cache = PromptCache(budget=1000, max_entries=2)
    for t in range(3):
        put(cache, [t], state(1))
    assert len(cache) == 2 and cache.longest([0])[0] is None


def test_shared_starts_are_counted_exactly() -> None:
    from gpt4all_api.engine.sequences import common_prefix_len

    long = list(range(1000))
    assert common_prefix_len(long, long) == 1000
    assert common_prefix_len(long, long[:300]) == 300
    for cut in (0, 1, 63, 64, 65, 128, 500, 999):
        other = [*long[:cut], -1, *long[cut + 1 :]]
        assert common_prefix_len(long, other) == cut
    assert common_prefix_len([], long) == 0


def test_a_dropped_state_gives_its_memory_back() -> None:
    import psutil

    before = psutil.Process().memory_info().rss
    cache = PromptCache(budget=64 << 20, max_entries=1)
    big = new_state(48 << 20)
    ctypes.memset(big, 1, len(big))  # resident
    put(cache, [1], big)
    del big
    assert psutil.Process().memory_info().rss > before + (40 << 20)
    put(cache, [2], state(4096))  # the first state goes: its mapping is unmapped
    assert psutil.Process().memory_info().rss < before + (8 << 20)
