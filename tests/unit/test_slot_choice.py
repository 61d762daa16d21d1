"""Which free sequence a new prompt runs in: its own conversation's, else an empty one, else the
least recently used; never another conversation's just because they share a preamble."""

from gpt4all_api.engine.scheduler import _pick_slot
from gpt4all_api.engine.sequences import Slot

PREAMBLE = list(range(1000, 1020))  # the template's system block, shared by every prompt


def conversation(tag: int, n: int = 200) -> list[int]:
    return PREAMBLE + [tag * 10_000 + i for i in range(n)]


def test_the_next_turn_goes_to_the_sequence_holding_its_history() -> None:
    a, b = conversation(1), conversation(2)
    slots = [Slot(0, list(a), last_used=5.0), Slot(1, list(b), last_used=1.0), Slot(2)]
    slot, keep = _pick_slot(slots, [*a, 7, 8, 9])
    assert slot.seq_id == 0 and keep == len(a)


def test_a_new_conversation_takes_an_empty_sequence_not_one_sharing_the_preamble() -> None:
    slots = [Slot(0, conversation(1), last_used=1.0), Slot(1), Slot(2, conversation(2), 2.0)]
    slot, keep = _pick_slot(slots, conversation(3))
    assert slot.seq_id == 1 and keep == 0


def test_without_an_empty_sequence_the_least_recently_used_one_keeps_the_preamble() -> None:
    slots = [Slot(0, conversation(1), last_used=3.0), Slot(1, conversation(2), last_used=1.0)]
    slot, keep = _pick_slot(slots, conversation(3))
    assert slot.seq_id == 1 and keep == len(PREAMBLE)


def test_the_longest_continued_history_wins() -> None:
    a = conversation(1)
    slots = [Slot(0, a[:100], last_used=9.0), Slot(1, a[:180], last_used=1.0)]
    slot, keep = _pick_slot(slots, a)
    assert slot.seq_id == 1 and keep == 180


def test_without_reuse_the_prompt_shares_nothing() -> None:
    a = conversation(1)
    slots = [Slot(0, list(a), last_used=1.0), Slot(1)]
    slot, keep = _pick_slot(slots, [])
    assert slot.seq_id == 1 and keep == 0


def test_the_same_prompt_again_finds_it_though_the_sequence_also_holds_the_answer() -> None:
    prompt = conversation(1, n=30)
    answer = list(range(90_000, 90_064))
    slots = [Slot(0), Slot(1, prompt + answer, last_used=1.0)]
    slot, keep = _pick_slot(slots, prompt)
    assert slot.seq_id == 1 and keep == len(prompt)
