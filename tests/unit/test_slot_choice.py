"""Which free sequence a new prompt runs in: its own conversation's, else an empty one, else the
least recently used; never another conversation's just because they share a preamble. A prompt
placed in a new sequence starts from a copy of the longest prefix any sequence holds."""

from gpt4all_api.engine.sequences import Slot
from gpt4all_api.engine.slots import MIN_SEED
from gpt4all_api.engine.slots import place as choose

PREAMBLE = list(range(1000, 1020))  # the template's system block, shared by every prompt


def conversation(tag: int, n: int = 200) -> list[int]:
    return PREAMBLE + [tag * 10_000 + i for i in range(n)]


def test_the_next_turn_goes_to_the_sequence_holding_its_history() -> None:
    a, b = conversation(1), conversation(2)
    slots = [Slot(0, list(a), last_used=5.0), Slot(1, list(b), last_used=1.0), Slot(2)]
    place = choose(slots, slots, [*a, 7, 8, 9])
    assert place.slot.seq_id == 0 and place.keep == len(a) and place.source is None


def test_a_new_conversation_takes_an_empty_sequence_not_one_sharing_the_preamble() -> None:
    slots = [Slot(0, conversation(1), last_used=1.0), Slot(1), Slot(2, conversation(2), 2.0)]
    place = choose(slots, slots, conversation(3))
    assert place.slot.seq_id == 1
    # the preamble alone is worth a copy: it is longer than MIN_SEED
    assert len(PREAMBLE) >= MIN_SEED
    assert place.source is not None and place.seed == len(PREAMBLE)


def test_without_an_empty_sequence_the_least_recently_used_one_keeps_the_preamble() -> None:
    slots = [Slot(0, conversation(1), last_used=3.0), Slot(1, conversation(2), last_used=1.0)]
    place = choose(slots, slots, conversation(3))
    assert place.slot.seq_id == 1 and place.keep == len(PREAMBLE) and place.source is None


def test_the_longest_continued_history_wins() -> None:
    a = conversation(1)
    slots = [Slot(0, a[:100], last_used=9.0), Slot(1, a[:180], last_used=1.0)]
    place = choose(slots, slots, a)
    assert place.slot.seq_id == 1 and place.keep == 180 and place.source is None


def test_without_reuse_the_prompt_shares_nothing() -> None:
    a = conversation(1)
    slots = [Slot(0, list(a), last_used=1.0), Slot(1)]
    place = choose(slots, slots, [])
    assert place.slot.seq_id == 1 and place.keep == 0 and place.source is None


def test_the_same_prompt_again_is_copied_and_its_answer_kept() -> None:
    """A prompt asked again finds its KV in the sequence that also holds the first answer: it is
    copied into an empty sequence, so that the first conversation can still go on."""
    prompt = conversation(1, n=30)
    answer = list(range(90_000, 90_064))
    slots = [Slot(0), Slot(1, prompt + answer, last_used=1.0)]
    place = choose(slots, slots, prompt)
    assert place.slot.seq_id == 0 and place.keep == 0
    assert place.source is slots[1] and place.seed == len(prompt)


def test_a_running_sequence_lends_its_system_prompt() -> None:
    """A long system prompt (or document) held by a running sequence starts every new one."""
    system = list(range(5000, 5600))
    running = Slot(0, [*system, 1, 2, 3])
    running.job = object()  # type: ignore[assignment]  # busy: not free, but still a source
    idle = Slot(1, conversation(2), last_used=4.0)
    empty = Slot(2)
    place = choose([idle, empty], [running, idle, empty], [*system, 7, 8])
    assert place.slot is empty and place.source is running and place.seed == len(system)


def test_a_short_shared_prefix_is_not_worth_a_copy() -> None:
    short = PREAMBLE[: MIN_SEED - 1]
    slots = [Slot(0, short + list(range(50)), last_used=1.0), Slot(1)]
    place = choose(slots, slots, [*short, 9, 9, 9])
    assert place.slot.seq_id == 1 and place.source is None and place.keep == 0


def test_beside_busy_sequences_a_new_prompt_keeps_them_consecutive() -> None:
    """Each run of consecutive busy sequence ids costs a pass over the weights in every step:
    the prompt goes next to the busy ones, and its conversation, held further away, is copied
    there instead of being continued in place."""
    a = conversation(1)
    slots = [Slot(i, conversation(10 + i), last_used=float(i)) for i in range(8)]
    slots[6] = Slot(6, list(a), last_used=0.5)
    free = [slots[3], slots[6], slots[7]]
    place = choose(free, slots, [*a, 7, 8, 9], busy={0, 1, 2})
    assert place.slot.seq_id == 3
    assert place.source is slots[6] and place.seed == len(a)
    # with nothing busy, or one pool for every sequence, the conversation goes on in place
    for busy in (set(), None):
        place = choose(free, slots, [*a, 7, 8, 9], busy=busy)
        assert place.slot.seq_id == 6 and place.keep == len(a) and place.source is None


def test_a_sequence_that_joins_two_runs_of_busy_ones_comes_first() -> None:
    slots = [Slot(i) for i in range(8)]
    free = [slots[2], slots[5], slots[7]]
    assert choose(free, slots, conversation(1), busy={0, 1, 3, 4}).slot.seq_id == 2
    # extending a run beats starting a new one, even for an empty sequence further away
    slots[6] = Slot(6, conversation(2), last_used=1.0)
    free = [slots[5], slots[7]]
    assert choose(free, slots, conversation(3), busy={0, 1, 2, 3, 4}).slot.seq_id == 5
