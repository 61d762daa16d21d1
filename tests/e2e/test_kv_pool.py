"""Sixteen sequences at once, the shared KV pool and prompt-lookup speculation, end to end
through the OpenAI client.

- 16 sequences run at once (the default `parallel`).
- With `--kv-unified`, when the running sequences outgrow the pool, the newest is preempted and
  later resumes: every answer runs its full length, nothing fails.
- Prompt lookup drafts tokens from the request's own context and verifies them in the batch:
  greedy answers are token for token those without it (50 prompts), seeded sampled answers are
  the same too, and the metrics show drafts accepted on answers that quote their prompt.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
NO_END = {"0": -100, "2": -100}  # <|endoftext|> and <|im_end|>: answers run to max_tokens
WORDS = [
    "apples",
    "bread",
    "carrots",
    "dates",
    "eggs",
    "flour",
    "grapes",
    "honey",
    "jam",
    "kale",
    "lemons",
    "milk",
    "noodles",
    "oranges",
    "pears",
    "quinoa",
    "rice",
    "salt",
    "tomatoes",
    "vinegar",
    "walnuts",
    "yogurt",
    "zucchini",
    "basil",
    "cheese",
    "butter",
]
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for sleeping well.",
    "Explain what a prime number is.",
    "Name four planets.",
    "What do bees make?",
    "Say hello in Spanish and in German.",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What is 12 times 3?",
]


def grounded(i: int) -> list[dict[str, str]]:
    """A conversation whose answer repeats a list from its own history (prompt lookup hits)."""
    rng = random.Random(i)
    items = rng.sample(WORDS, rng.randint(6, 14))
    text = "\n".join(f"{n + 1}. {w}" for n, w in enumerate(items))
    return [
        {"role": "user", "content": f"Copy this shopping list exactly:\n{text}"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "Once more, exactly the same."},
    ]


def copying_prompt(words: list[str]) -> str:
    """A list copied once, asked for again, the copy begun, in the model's own chat format: the
    model goes on copying the list, so prompt lookup's drafts are nearly all right."""
    items = "\n".join(f"{n + 1}. {w}" for n, w in enumerate(words))
    return (
        f"<|im_start|>user\nCopy this shopping list exactly:\n{items}<|im_end|>\n"
        f"<|im_start|>assistant\n{items}<|im_end|>\n"
        "<|im_start|>user\nOnce more, exactly the same.<|im_end|>\n"
        f"<|im_start|>assistant\n1. {words[0]}\n"
    )


def prompts() -> list[list[dict[str, str]]]:
    """50 prompts: 40 that quote their context, 10 ordinary questions."""
    return [grounded(i) for i in range(40)] + [[{"role": "user", "content": q}] for q in QUESTIONS]


def metric(srv: ServerProcess, name: str) -> float:
    m = re.search(
        rf"^gpt4all_api_{name}_total\{{[^}}]*\}} (\S+)$",
        HTTP.get(srv.base_url + "/metrics").text,
        re.M,
    )
    assert m is not None, name
    return float(m.group(1))


def start(home: Path, embedded_model: Path, *args: str) -> ServerProcess:
    models = home / "models"
    models.mkdir()
    (models / EMBEDDED).symlink_to(embedded_model)
    return ServerProcess(models_dir=models, log_path=home / "server.log", args=list(args)).start()


@pytest.fixture(scope="module")
def server(
    embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    srv = start(tmp_path_factory.mktemp("pool"), embedded_model)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def small_pool(
    embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # 8 sequences, but a pool of 1,024 tokens: 8 answers of 150 tokens cannot all fit at once
    srv = start(
        tmp_path_factory.mktemp("small-pool"),
        embedded_model,
        *("--kv-unified", "--parallel", "8", "--kv-size", "1024", "--context-size", "512"),
    )
    yield srv
    srv.stop()


def client(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key="none", timeout=600, max_retries=0)


def ask(srv: ServerProcess, messages: list[dict[str, str]], **kw: Any) -> str:
    r = client(srv).chat.completions.create(model=EMBEDDED, messages=messages, **kw)
    return r.choices[0].message.content or ""


def test_sixteen_sequences_run_at_once(server: ServerProcess) -> None:
    """16 streams at once: every one has its first token before any has its last (none waits
    for another's whole reply, as the 9th would with eight slots)."""
    oai = client(server)
    firsts: list[float] = []
    ends: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def one(i: int) -> None:
        barrier.wait()
        stream = oai.chat.completions.create(
            model=EMBEDDED,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=48,
            temperature=0,
            stream=True,
            logit_bias=NO_END,
        )
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic()
        with lock:
            firsts.append(first or float("inf"))
            ends.append(time.monotonic())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(16)))
    assert len(firsts) == 16
    assert max(firsts) < min(ends)
    body = HTTP.get(server.base_url + "/metrics").text
    assert re.search(r"^gpt4all_api_slots\{[^}]*\} 16\.0$", body, re.M)
    assert re.search(r"^gpt4all_api_kv_cache_capacity_tokens\{[^}]*\} 32768\.0$", body, re.M)


def test_interleaved_conversations_each_keep_their_cache(server: ServerProcess) -> None:
    """Four conversations take turns (each one's first turn, then each one's second): every
    second turn finds its whole history in the KV cache. A new conversation takes an empty (or
    the least recently used) sequence, not one whose cache shares only the system preamble."""
    oai = client(server)
    histories = [
        [
            {
                "role": "user",
                "content": f"Conversation {c}. "
                + " ".join(random.Random(c).choices(WORDS, k=120))
                + ". Name one.",
            }
        ]
        for c in range(4)
    ]
    firsts = []
    for messages in histories:
        reply = oai.chat.completions.create(
            model=EMBEDDED, messages=messages, max_tokens=8, temperature=0
        )
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        messages.append({"role": "user", "content": "And another?"})
        firsts.append(reply.usage.prompt_tokens)
    for messages, first in zip(histories, firsts, strict=True):
        reply = oai.chat.completions.create(
            model=EMBEDDED, messages=messages, max_tokens=8, temperature=0
        )
        details = reply.usage.prompt_tokens_details
        assert details is not None and details.cached_tokens >= first, (first, reply.usage)


def test_greedy_answers_are_the_same_with_and_without_prompt_lookup(server: ServerProcess) -> None:
    drafted, accepted = metric(server, "draft_tokens"), metric(server, "draft_accepted_tokens")

    def run(lookup: bool) -> list[str]:
        def one(messages: list[dict[str, str]]) -> str:
            # true: drafts in every step, where the engine would measure whether they pay
            extra = {"prompt_lookup": lookup}
            return ask(server, messages, max_tokens=64, temperature=0, extra_body=extra)

        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(one, prompts()))

    without = run(False)
    assert metric(server, "draft_tokens") == drafted  # the request field turns drafting off
    with_lookup = run(True)
    mismatched = [i for i, (a, b) in enumerate(zip(without, with_lookup, strict=True)) if a != b]
    assert not mismatched, [(without[i], with_lookup[i]) for i in mismatched[:3]]
    assert metric(server, "draft_tokens") > drafted  # drafting was on
    assert metric(server, "draft_accepted_tokens") > accepted


def test_an_answer_that_copies_its_prompt_is_mostly_drafted(server: ServerProcess) -> None:
    prompt = copying_prompt(WORDS[:20])
    drafted, accepted = metric(server, "draft_tokens"), metric(server, "draft_accepted_tokens")
    oai = client(server)
    kw: dict[str, Any] = {"model": EMBEDDED, "prompt": prompt, "max_tokens": 80, "temperature": 0}
    on = oai.completions.create(**kw, extra_body={"prompt_lookup": True}).choices[0].text
    new_drafts = metric(server, "draft_tokens") - drafted
    new_accepted = metric(server, "draft_accepted_tokens") - accepted
    off = oai.completions.create(**kw, extra_body={"prompt_lookup": False}).choices[0].text
    assert on == off
    assert on.startswith(f"2. {WORDS[1]}\n3. {WORDS[2]}")  # it does copy the list
    assert new_accepted >= 40 and new_accepted >= 0.7 * new_drafts


def test_by_default_a_copying_answer_is_drafted_and_a_fresh_one_barely(
    server: ServerProcess,
) -> None:
    # lookup on by default (no request field): the engine decides what to draft from the odds
    # and step costs it measured; a copying answer gets long drafts, nearly all right
    words = WORDS[::-1][:20]  # not the list another test copies (the shared table has that)
    prompt = copying_prompt(words)
    oai = client(server)
    kw: dict[str, Any] = {"model": EMBEDDED, "temperature": 0, "max_tokens": 80}
    drafted, accepted = metric(server, "draft_tokens"), metric(server, "draft_accepted_tokens")
    on = oai.completions.create(prompt=prompt, **kw)
    copy_drafted = metric(server, "draft_tokens") - drafted
    copy_accepted = metric(server, "draft_accepted_tokens") - accepted
    off = oai.completions.create(prompt=prompt, **kw, extra_body={"prompt_lookup": False})
    assert on.choices[0].text == off.choices[0].text
    assert on.choices[0].text.startswith(f"2. {words[1]}\n3. {words[2]}")  # it copies
    assert on.usage is not None
    n = on.usage.completion_tokens
    assert copy_accepted >= 0.5 * n and copy_accepted >= 0.8 * copy_drafted, (
        n,
        copy_drafted,
        copy_accepted,
    )
    # a question whose answer quotes nothing: few drafted tokens (kinds tried now and then)
    drafted = metric(server, "draft_tokens")
    fresh = oai.chat.completions.create(
        messages=[{"role": "user", "content": "Describe a sunrise over a mountain lake."}], **kw
    )
    assert fresh.usage is not None
    assert metric(server, "draft_tokens") - drafted <= 0.25 * fresh.usage.completion_tokens


def test_a_steps_drafted_tokens_reach_a_streaming_client_in_one_write(
    server: ServerProcess,
) -> None:
    # every drafted token that a step accepts is a frame of its own, but the frames of one step
    # go out in one write: httpx yields at least one piece per HTTP chunk (a server `send`)
    words = WORDS[5:25]
    prompt = copying_prompt(words)
    kw: dict[str, Any] = {"model": EMBEDDED, "prompt": prompt, "max_tokens": 80, "temperature": 0}
    off = client(server).completions.create(**kw, extra_body={"prompt_lookup": False})
    pieces: list[bytes] = []
    body = {**kw, "stream": True, "prompt_lookup": True}
    with HTTP.stream("POST", server.base_url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        pieces.extend(r.iter_raw())
    frames = [f for f in b"".join(pieces).decode().split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == off.choices[0].text  # the same answer, every frame whole
    assert text.startswith(f"2. {words[1]}\n3. {words[2]}")  # it copies: drafts are accepted
    assert len(frames) >= 40
    assert len(pieces) <= len(frames) / 2, (len(pieces), len(frames))


def test_seeded_sampled_answers_are_the_same_with_and_without_prompt_lookup(
    server: ServerProcess,
) -> None:
    for i in range(6):
        kw: dict[str, Any] = {"max_tokens": 48, "temperature": 0.9, "seed": 100 + i}
        a = ask(server, grounded(i), **kw, extra_body={"prompt_lookup": False})
        b = ask(server, grounded(i), **kw, extra_body={"prompt_lookup": True})
        c = ask(server, grounded(i), **kw)  # the engine decides, step by step
        assert a == b == c


def test_a_question_asked_again_drafts_from_the_earlier_answer(server: ServerProcess) -> None:
    # an answer that quotes nothing of its prompt: its own context has little to draft from,
    # but the engine's table of every sequence's 16-token spans holds the first answer
    messages = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]

    def run(lookup: bool) -> tuple[str, int, float, float]:
        drafted, accepted = metric(server, "draft_tokens"), metric(server, "draft_accepted_tokens")
        r = client(server).chat.completions.create(
            model=EMBEDDED,
            messages=messages,
            max_tokens=96,
            temperature=0,
            extra_body={"prompt_lookup": lookup},
        )
        assert r.usage is not None
        return (
            r.choices[0].message.content or "",
            r.usage.completion_tokens,
            metric(server, "draft_tokens") - drafted,
            metric(server, "draft_accepted_tokens") - accepted,
        )

    first, n, _, first_accepted = run(True)
    again, n_again, drafted, accepted = run(True)
    off, _, off_drafted, _ = run(False)
    assert first == again == off and n == n_again and off_drafted == 0
    assert n > 32
    # the second answer is mostly drafted, and nearly every draft is right
    assert accepted >= 0.6 * n and accepted >= 0.9 * drafted, (n, drafted, accepted)
    assert accepted > first_accepted


def test_a_full_shared_pool_preempts_and_every_answer_runs_its_length(
    small_pool: ServerProcess,
) -> None:
    oai = client(small_pool)

    def one(i: int) -> tuple[str, int, str]:
        r = oai.chat.completions.create(
            model=EMBEDDED,
            messages=[{"role": "user", "content": QUESTIONS[i]}],
            max_tokens=150,
            temperature=0,
            logit_bias=NO_END,
        )
        assert r.usage is not None
        choice = r.choices[0]
        return choice.finish_reason, r.usage.completion_tokens, choice.message.content or ""

    before = metric(small_pool, "preempted_sequences")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert metric(small_pool, "preempted_sequences") > before  # 8 x ~175 tokens > 1,024
    for reason, tokens, text in results:
        assert (reason, tokens) == ("length", 150)
        assert len(text) > 150  # the resumed answers go on (no empty or cut text)
    # the pool is whole again: every cell can be used
    body = HTTP.get(small_pool.base_url + "/metrics").text
    assert re.search(r"^gpt4all_api_kv_cache_capacity_tokens\{[^}]*\} 1024\.0$", body, re.M)
    assert re.search(r"^gpt4all_api_running_sequences\{[^}]*\} 0\.0$", body, re.M)
    assert one(0)[:2] == ("length", 150)


def test_a_shared_prefix_is_copied_into_a_new_sequence_and_answers_the_same(
    server: ServerProcess,
) -> None:
    """Two prompts that share a long start (a system prompt, a document) and then differ: the
    second starts from a copy of the first one's KV (cached tokens, the copy counter), the first
    keeps its cache for its next turn, and the greedy answer is the same as with every prompt
    token computed afresh (echo with logprobs scores every token, so nothing is reused)."""
    oai = client(server)
    doc = "Notes. " + " ".join(random.Random(99).choices(WORDS, k=260)) + ".\n"
    first = doc + "Question: which word comes first, and which one comes right after it?\nAnswer:"
    second = doc + "Question: name a fruit from the notes.\nAnswer:"
    copies = metric(server, "prefix_copies")
    a = oai.completions.create(model=EMBEDDED, prompt=first, max_tokens=16, temperature=0)
    b = oai.completions.create(model=EMBEDDED, prompt=second, max_tokens=24, temperature=0)
    assert metric(server, "prefix_copies") >= copies + 1
    details = b.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= a.usage.prompt_tokens - 20, b.usage
    # the first prompt's sequence still holds it: its next turn is cached in full
    follow = first + a.choices[0].text + "\nQuestion: and the last one?\nAnswer:"
    c = oai.completions.create(model=EMBEDDED, prompt=follow, max_tokens=4, temperature=0)
    details = c.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= a.usage.prompt_tokens, c.usage
    cold = oai.completions.create(
        model=EMBEDDED, prompt=second, max_tokens=24, temperature=0, echo=True, logprobs=0
    )
    assert cold.choices[0].text == second + b.choices[0].text
