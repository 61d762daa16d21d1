"""The thinking/answer split of a reasoning model's text, fed in every possible cut."""

from __future__ import annotations

import pytest

from gpt4all_api.core.reasoning import HARMONY, THINK, Resolved, detect, spec
from gpt4all_api.engine.reasoning import ReasoningSpec, ReasoningSplitter


def _spec(fmt=THINK, thinking=False) -> ReasoningSpec:  # type: ignore[no-untyped-def]
    """The engine's spec for `fmt`, made as the server makes it (one character a token)."""
    resolved = Resolved({}, "", fmt, thinking=thinking, watch=True)
    made = spec(resolved, lambda t: [ord(c) for c in t], lambda ids: "".join(map(chr, ids)), None)
    assert made is not None
    return made


def _run(spec: ReasoningSpec, pieces: list[str]) -> tuple[str, str, ReasoningSplitter]:
    s = ReasoningSplitter(spec)
    out = []
    for p in pieces:
        out += s.feed(p)
    out += s.flush()
    thinking = "".join(t for r, t in out if r)
    answer = "".join(t for r, t in out if not r)
    return thinking, answer, s


def _cuts(text: str) -> list[list[str]]:
    """The text in one piece, char by char, and cut in two at every place."""
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


@pytest.mark.parametrize(
    "text",
    ["<think>\nLet me see.\n</think>\n\nHello there.", "  <think>Let me see.</think>Hello there."],
)
def test_think_tags_split_at_any_cut(text: str) -> None:
    for pieces in _cuts(text):
        thinking, answer, _ = _run(_spec(), pieces)
        assert (thinking, answer) == ("Let me see.", "Hello there."), pieces


def test_prompt_opened_thinking_needs_no_open_tag() -> None:
    for pieces in _cuts("Hmm, two plus two.\n</think>\n\n4"):
        thinking, answer, _ = _run(_spec(thinking=True), pieces)
        assert (thinking, answer) == ("Hmm, two plus two.", "4"), pieces


def test_a_reply_without_thinking_is_all_answer() -> None:
    for pieces in _cuts("Hello <b>there</b>"):
        thinking, answer, s = _run(_spec(), pieces)
        assert (thinking, answer) == ("", "Hello <b>there</b>")
        assert s.reasoning_tokens == 0


def test_unclosed_thinking_is_all_reasoning() -> None:
    thinking, answer, s = _run(_spec(thinking=True), ["a", " b", " </thi"])
    assert (thinking, answer) == ("a b </thi", "")
    assert s.reasoning_tokens == 3


def test_a_partial_open_tag_at_the_end_is_answer() -> None:
    assert _run(_spec(), ["<thi"])[:2] == ("", "<thi")


def test_tokens_are_counted_up_to_the_close() -> None:
    _, _, s = _run(_spec(), ["<", "think", ">", "x", "</", "think", ">", "\n\n", "y", "z"])
    assert s.reasoning_tokens == 7


def test_whitespace_inside_thinking_is_kept_between_words() -> None:
    thinking, _, _ = _run(_spec(thinking=True), ["one", "\n\n", "two", "\n", "</think>", "x"])
    assert thinking == "one\n\ntwo"


@pytest.mark.parametrize(
    "text",
    [
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Hi!",
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>analysis"
        "<|message|> More.<|end|><|start|>assistant<|channel|>final<|message|>Hi!",
    ],
)
def test_harmony_channels(text: str) -> None:
    for pieces in _cuts(text):
        thinking, answer, _ = _run(_spec(HARMONY), pieces)
        assert thinking.replace("More.", "").strip() == "Think." and answer == "Hi!", pieces


def test_harmony_final_channel_alone() -> None:
    for pieces in _cuts("<|channel|>final<|message|>Hi!"):
        assert _run(_spec(HARMONY), pieces)[:2] == ("", "Hi!")


R1 = "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"  # noqa: RUF001
QWEN3 = (
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
    "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_detect_families() -> None:
    r1 = detect(R1)
    assert r1 is not None and r1.family == "think" and r1.opens_itself and r1.switch is None
    q = detect(QWEN3)
    assert q is not None and q.family == "think" and not q.opens_itself
    assert q.switch == "enable_thinking"
    h = detect("<|start|>assistant<|channel|>analysis<|message|>{{ reasoning_effort }}")
    assert h is not None and h.family == "harmony"
    assert detect("{{ messages }}") is None
    tags = detect("{{ messages }}", ("<r>", "</r>"))
    assert tags is not None and (tags.open, tags.close) == ("<r>", "</r>")


@pytest.mark.parametrize(
    "header",
    [
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        "<|message|>",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>",
    ],
)
def test_harmony_calls_become_tool_call_blocks(header: str) -> None:
    text = "<|channel|>analysis<|message|>Need weather.<|end|>" + header + '{"city":"Paris"}'
    want = '<tool_call>{"name": "get_weather", "arguments": {"city":"Paris"}}</tool_call>'
    for end in ("<|call|>", ""):  # `<|call|>` as text, or the end of the generation (an EOG)
        for pieces in _cuts(text + end):
            thinking, answer, s = _run(_spec(HARMONY), pieces)
            assert (thinking, answer) == ("Need weather.", want), pieces
            assert s.ended == bool(end)
