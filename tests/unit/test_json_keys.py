"""`KeyGuard`: the tokens that would close a key its object already has, over a toy vocabulary."""

from __future__ import annotations

from gpt4all_api.engine.json_keys import KeyGuard, QuoteTable

VOCAB = ['{"', "name", '":', ' "', "Tom", '",', ' "', "n", "ame", '"', "age", "}", "[", "]", "{",
         '"}', "\\", ':', ",", "x", 'a"', "a"]  # fmt: skip
ESCAPES = ["\\u0061", "me", '\\u0061me"']  # pieces with a JSON escape in them


def guard(vocab: list[str] = VOCAB) -> KeyGuard:
    return KeyGuard(QuoteTable(lambda t: vocab[t].encode(), len(vocab)))


def escape_guard() -> KeyGuard:
    return guard(VOCAB + ESCAPES)


def feed(g: KeyGuard, *pieces: str) -> None:
    for p in pieces:
        g.feed(g.table.pieces.index(p.encode()))  # the first token with this piece


def banned(g: KeyGuard) -> set[str]:
    return {g.table.pieces[t].decode() for t in g.banned()}


def test_a_key_cannot_be_closed_as_one_its_object_has() -> None:
    g = guard()
    feed(g, '{"', "name", '":', ' "', "Tom", '",', ' "')
    assert banned(g) == set()  # nothing written of the second key yet: "name" is four bytes off
    feed(g, "n")
    assert banned(g) == set()
    feed(g, "ame")
    assert banned(g) == {'":', '"', '",', '"}'}  # each would close "name" again
    feed(g, "x", '":')  # "namex" is a new key
    assert banned(g) == set()


def test_a_token_holding_the_rest_of_the_key_and_its_quote_is_banned() -> None:
    g = guard()
    feed(g, '{"', "n", "a", '":', "x", ",", ' "', "n")
    assert banned(g) == {'a"'}  # "n" then 'a"' would close "na" again


def test_nested_objects_and_arrays_keep_their_own_keys() -> None:
    g = guard()
    feed(g, '{"', "name", '":', "{", '"', "name")
    assert banned(g) == set()  # the inner object has no "name" yet
    feed(g, '":', "x", "}", ",", ' "', "name")
    assert banned(g) >= {'":', '"'}  # back in the outer object, which has "name"
    g = guard()
    feed(g, '{"', "age", '":', "[", "{", '"', "age", '":', "x", "}", ",", "{", '"', "age")
    assert banned(g) == set()  # each object in the array is new


def test_strings_that_are_values_and_escaped_quotes_are_not_keys() -> None:
    g = guard()
    feed(g, '{"', "name", '":', ' "', "name")
    assert banned(g) == set()  # a value may repeat a key's text
    feed(g, '",', ' "', "name", "\\")
    assert banned(g) == set()  # after a backslash the next quote is part of the key
    feed(g, '"', "x", '":', "x")
    assert banned(g) == set()


def test_text_around_the_json_is_skipped() -> None:
    g = guard()
    feed(g, "x", '"', "name", '"', "{", '"', "name", '":', "x", "}", "x", '"', "name")
    assert banned(g) == set()  # outside the object nothing is a key


def test_keys_are_compared_as_a_parser_reads_them_escapes_and_all() -> None:
    g = escape_guard()
    feed(g, '{"', "n", "\\u0061", "me", '":', "x", ",", ' "', "name")
    assert banned(g) >= {'":', '"'}  # "n\\u0061me" was "name"
    g = escape_guard()
    feed(g, '{"', "name", '":', "x", ",", ' "', "n", "\\u0061", "me")
    assert banned(g) >= {'":', '"'}  # and the other way round
    g = escape_guard()
    feed(g, '{"', "name", '":', "x", ",", ' "', "n")
    assert '\\u0061me"' in banned(g)  # one token closing it with an escape inside
    feed(g, "\\u0061")
    assert banned(g) == set()  # "na" is no key yet, and "name" is two tokens off
