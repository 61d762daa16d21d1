"""Prefix-affinity policy and routing keys (no Ray)."""

from __future__ import annotations

import json
import random

from gpt4all_api.cluster.keys import previous_response_id, routing_text
from gpt4all_api.cluster.prefix import PrefixIndex, choose, ranked


def chat(messages: list[dict[str, str]], path: str = "/v1/chat/completions") -> str | None:
    return routing_text("POST", path, json.dumps({"model": "m", "messages": messages}).encode())


def test_a_later_turn_extends_the_earlier_turns_text() -> None:
    first = [{"role": "system", "content": "S" * 500}, {"role": "user", "content": "hi"}]
    second = [*first, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]
    a, b = chat(first), chat(second)
    assert a and b and b.startswith(a)
    assert chat(first, "/api/chat") == a  # Ollama's chat has the same shape


def test_keys_of_other_requests() -> None:
    assert routing_text("GET", "/v1/models", b"") is None
    assert routing_text("POST", "/v1/embeddings", b"{}") is None
    assert routing_text("POST", "/v1/chat/completions", b"{not json") is None
    anthropic = routing_text(
        "POST", "/v1/messages", json.dumps({"metadata": {"user_id": "u1"}, "messages": []}).encode()
    )
    assert anthropic and "session:u1" in anthropic
    body = json.dumps({"input": "x", "previous_response_id": "resp_1"}).encode()
    assert previous_response_id("/v1/responses", body) == "resp_1"
    assert routing_text("POST", "/v1/completions", b'{"prompt": "abc"}') is not None


def test_the_longest_prefix_wins_unless_it_is_much_busier() -> None:
    index = PrefixIndex(block=8)
    history = "conversation one " * 20
    index.add("a", history)
    index.add("b", "conversation two " * 20)
    rng = random.Random(0)
    order, matched = choose(index, history + "next turn", {"a": 0, "b": 0}, imbalance=4, rng=rng)
    assert order == ["a"] and matched >= len(history) - 8
    order, matched = choose(index, history + "next", {"a": 3, "b": 0}, imbalance=4, rng=rng)
    assert order == ["a"]  # busier, but within the threshold
    order, matched = choose(index, history + "next", {"a": 9, "b": 0}, imbalance=4, rng=rng)
    assert order[0] == "b"  # too busy: the other one


def test_short_messages_match_whole() -> None:
    index = PrefixIndex(block=64)
    first = chat([{"role": "user", "content": "Say hi."}])
    assert first is not None and len(first) < 64
    index.add("a", first)
    later = chat([{"role": "user", "content": "Say hi."}, {"role": "user", "content": "Again."}])
    assert later is not None and index.match("a", later) == len(first)
    assert index.match("b", later) == 0


def test_no_match_falls_back_to_the_less_loaded_of_two() -> None:
    index = PrefixIndex(block=8)
    rng = random.Random(1)
    loads = {"a": 2, "b": 0, "c": 5}
    for _ in range(20):
        order, matched = choose(index, "fresh text " * 10, loads, imbalance=4, rng=rng)
        assert matched == 0 and len(order) == 2 and loads[order[0]] <= loads[order[1]]
    assert choose(index, None, {}, imbalance=4, rng=rng) == ([], 0)


def test_capacity_forgets_the_least_recently_used_blocks_and_ranks() -> None:
    index = PrefixIndex(block=4, capacity=10)
    index.add("a", "x" * 4 + "old!" * 20)
    index.add("a", "newer text that is long enough")
    assert index.match("a", "newer text that is long enough") > 0
    assert index.match("a", "x" * 4 + "old!" * 20) == 0
    index.forget("a")
    assert index.match("a", "newer text") == 0
    assert ranked(["b", "a"], ["a", "b", "c"]) == [["b"], ["a"], ["c"]]
    assert ranked(["a"], ["a"]) == [["a"]]


def test_engine_options_from_settings() -> None:
    import pytest

    pytest.importorskip("ray.serve")
    from gpt4all_api.cluster.deployments import engine_options
    from gpt4all_api.cluster.router import PrefixAffinityRouter
    from gpt4all_api.settings import Settings

    fixed = engine_options(Settings(min_replicas=2, max_replicas=2, parallel=4, max_queue=8))
    assert fixed["num_replicas"] == 2 and fixed["max_ongoing_requests"] == 12
    router = fixed["request_router_config"].request_router_class
    assert router == f"{PrefixAffinityRouter.__module__}.PrefixAffinityRouter"
    scaled = engine_options(
        Settings(min_replicas=1, max_replicas=4, target_ongoing_requests=3, routing="pow2")
    )
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 3,
        "upscale_delay_s": 30.0,
        "downscale_delay_s": 600.0,
    }
    assert "request_router_config" not in scaled and "num_replicas" not in scaled
