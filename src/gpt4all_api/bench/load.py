"""The load generator: streamed chat requests from closed-loop clients, over httpx.

Every client sends one request at a time and the next as soon as the previous one ends, so a
level with N clients keeps N requests in flight. Each level is bounded by a request count and a
time limit (no new request starts after it).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from .stats import RequestRecord, percentile

# Fixed prompts that ask for long answers, so most replies run to max_tokens.
PROMPTS: tuple[str, ...] = (
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in a city by the sea.",
    "Write a detailed guide to planting and caring for a vegetable garden.",
    "Tell me the history of the printing press and why it mattered.",
    "Write a long letter from a sailor to his family back home.",
    "Explain step by step how bread is made, from flour to loaf.",
    "Describe the life cycle of a butterfly in as much detail as you can.",
)

# Filler for the prefix scenario's long first turn: plain prose, tokenizes at ~4.5 chars/token.
_HISTORY_PARAGRAPH = (
    "The harbour town woke slowly. Fishermen checked their nets, the baker opened his shutters "
    "and the smell of warm bread drifted over the cobbled square. Children ran to school past "
    "the old church, whose bell had rung every morning for three hundred years. By noon the "
    "market was full of voices, baskets of apples, crates of fish and bright woollen scarves. "
)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

#: With a temperature above 0: llama.cpp's default top-k, top-p and min-p, spelled out for every
#: server (and for our engine alone, `inproc.py`).
SAMPLED = {"top_k": 40, "top_p": 0.95, "min_p": 0.05}


def check_loopback(base_url: str) -> None:
    """The benchmark only ever drives a server on this machine."""
    host = urlsplit(base_url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(f"the benchmark drives loopback servers only, not {host!r}")


def chat_messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def new_client(
    concurrency: int, api_key: str | None = None, timeout: float = 300.0
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    # trust_env=False: loopback traffic must not be sent to a proxy from the environment.
    return httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers, trust_env=False)


async def stream_chat(
    client: httpx.AsyncClient,
    base_url: str,
    model: str | None,
    messages: list[dict[str, str]],
    max_tokens: int,
    extra: dict[str, Any] | None = None,
    temperature: float = 0.0,
) -> RequestRecord:
    """One streamed chat completion, timing every content chunk. Never raises for HTTP trouble."""
    # Every server gets the same sampling: greedy (or `temperature` with llama.cpp's default
    # top-k, top-p and min-p, spelled out), and no repetition penalty. Left out, the penalty
    # would differ (GPT4All's 1.18 here, llama-cpp-python's 1.1, llama-server's 1.0), and so
    # would the answers, their lengths and the work per token.
    sampling: dict[str, Any] = {"temperature": temperature}
    if temperature > 0:
        sampling |= SAMPLED
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": max_tokens,
        **sampling,
        "repeat_penalty": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    if model:
        body["model"] = model
    rec = RequestRecord(started=time.perf_counter())
    parts: list[str] = []
    try:
        async with client.stream("POST", base_url + "/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode("utf-8", "replace")[:200]
                rec.error = f"HTTP {resp.status_code}: {detail}"
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    _on_chunk(rec, json.loads(data), parts)
                    if rec.error:
                        break
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.finished = time.perf_counter()
    rec.text = "".join(parts)
    return rec


def _on_chunk(rec: RequestRecord, chunk: dict[str, Any], parts: list[str]) -> None:
    if "error" in chunk:
        rec.error = f"stream error: {chunk['error']}"
        return
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            rec.chunk_times.append(time.perf_counter())
            parts.append(content)
        if choice.get("finish_reason"):
            rec.finish_reason = choice["finish_reason"]
    usage = chunk.get("usage")
    if usage:
        rec.usage_prompt = usage.get("prompt_tokens")
        rec.usage_completion = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details") or {}
        rec.cached_tokens = details.get("cached_tokens")


async def run_level(
    base_url: str,
    model: str | None,
    concurrency: int,
    n_requests: int,
    max_tokens: int,
    time_limit: float,
    api_key: str | None = None,
    temperature: float = 0.0,
) -> tuple[list[RequestRecord], float]:
    """`concurrency` closed-loop clients share `n_requests`; returns the records and wall time."""
    async with new_client(concurrency, api_key) as client:

        def one(i: int) -> Awaitable[RequestRecord]:
            messages = chat_messages(i)
            return stream_chat(client, base_url, model, messages, max_tokens, None, temperature)

        return await closed_loop(concurrency, n_requests, time_limit, one)


async def closed_loop(
    concurrency: int,
    n_requests: int,
    time_limit: float,
    one: Callable[[int], Awaitable[RequestRecord]],
) -> tuple[list[RequestRecord], float]:
    """`concurrency` clients, each sending its next request (`one(i)`, i counting up across all
    clients) as soon as its last one ended, until `n_requests` were sent or `time_limit` seconds
    passed (none starts after). Returns the records and the wall time."""
    records: list[RequestRecord] = []
    next_index = 0
    start = time.perf_counter()
    deadline = start + time_limit

    async def client_loop() -> None:
        nonlocal next_index
        while next_index < n_requests and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            records.append(await one(i))

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return records, time.perf_counter() - start


def history_messages(tag: str, target_tokens: int) -> list[dict[str, str]]:
    """A first-turn conversation of about `target_tokens` tokens that starts with a unique tag."""
    pair_tokens = 4 * len(_HISTORY_PARAGRAPH) / 4.4  # two paragraphs a message, ~4.4 chars/token
    turns = max(1, round(target_tokens / pair_tokens))
    msgs = [{"role": "system", "content": f"Session {tag}. You are a helpful assistant."}]
    for k in range(turns):
        msgs.append({"role": "user", "content": f"Part {k + 1}. " + _HISTORY_PARAGRAPH * 2})
        msgs.append({"role": "assistant", "content": "Noted. " + _HISTORY_PARAGRAPH * 2})
    msgs.append({"role": "user", "content": "Summarise the story so far in one paragraph."})
    return msgs


@dataclass
class PrefixResult:
    """Cold first turns against second turns that resend them, one pair per repetition."""

    cold: list[RequestRecord] = field(default_factory=list)
    warm: list[RequestRecord] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)  # of the cold turns

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in (*self.cold, *self.warm))

    def ttft_p50(self, which: str) -> float | None:
        recs = self.cold if which == "cold" else self.warm
        return percentile([t for r in recs if (t := r.ttft) is not None], 50)

    @property
    def speedup(self) -> float | None:
        cold, warm = self.ttft_p50("cold"), self.ttft_p50("warm")
        return cold / warm if cold and warm else None

    @property
    def cached_tokens(self) -> list[int | None]:
        return [r.cached_tokens for r in self.warm]


async def run_prefix(
    base_url: str,
    model: str | None,
    target_tokens: int,
    reps: int,
    max_tokens: int,
    count_prompt: Callable[[list[dict[str, str]]], int | None] | None = None,
    api_key: str | None = None,
    time_limit: float = 120.0,
) -> PrefixResult:
    """Send a long first turn (cold), then a second turn resending it with the reply.

    No new pair starts after `time_limit` seconds (the first pair always runs)."""
    result = PrefixResult()
    deadline = time.perf_counter() + time_limit
    async with new_client(1, api_key) as client:
        for k in range(reps):
            if k and time.perf_counter() > deadline:
                break
            first = history_messages(uuid.uuid4().hex[:12], target_tokens)
            cold = await stream_chat(client, base_url, model, first, max_tokens)
            result.cold.append(cold)
            n = cold.usage_prompt
            if n is None and count_prompt is not None:
                n = count_prompt(first)
            result.prompt_tokens.append(n or 0)
            second = [
                *first,
                {"role": "assistant", "content": cold.text},
                {"role": "user", "content": "Thank you. What happens next?"},
            ]
            result.warm.append(await stream_chat(client, base_url, model, second, max_tokens))
    return result
