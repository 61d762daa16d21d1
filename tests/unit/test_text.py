from gpt4all_api.engine.text import StopMatcher, TokenTextDecoder


def feed_all(m: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for p in pieces:
        text, stopped = m.feed(p)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(m.flush())
    return "".join(out), False


def test_stop_inside_one_piece() -> None:
    assert feed_all(StopMatcher(["END"]), ["abcENDdef"]) == ("abc", True)


def test_stop_across_pieces_is_never_emitted() -> None:
    m = StopMatcher(["</s>"])
    emitted = []
    for piece in ["hello <", "/", "s", ">more"]:
        text, stopped = m.feed(piece)
        emitted.append(text)
        assert "<" not in "".join(emitted) or not stopped
    assert "".join(emitted) == "hello "


def test_held_prefix_released_when_it_does_not_complete() -> None:
    assert feed_all(StopMatcher(["###"]), ["a#", "#b", "c"]) == ("a##bc", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopMatcher(["b", "a"]), ["xxab"]) == ("xx", True)


def test_no_stops_passes_through() -> None:
    assert feed_all(StopMatcher([]), ["a", "b"]) == ("ab", False)


def test_utf8_split_across_tokens() -> None:
    d = TokenTextDecoder()
    data = "é🙂".encode()
    out = "".join(d.feed(data[i : i + 1]) for i in range(len(data))) + d.flush()
    assert out == "é🙂"
