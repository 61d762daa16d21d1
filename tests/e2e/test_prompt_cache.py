"""A conversation that comes back after more others than the server has sequences is restored
from the prompt cache in RAM (`--prompt-cache-mb`) instead of prefilled again: its prompt counts
as cached, the restore counter moves, and the greedy answer is the one it got the first time.
With the cache off, the same conversation is prefilled anew."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
WORDS = ["river", "stone", "maple", "harbour", "lantern", "copper", "meadow", "falcon", "willow"]


def start(home: Path, embedded_model: Path, *args: str) -> ServerProcess:
    models = home / "models"
    models.mkdir()
    (models / EMBEDDED).symlink_to(embedded_model)
    return ServerProcess(models_dir=models, log_path=home / "server.log", args=list(args)).start()


@pytest.fixture(scope="module", params=["streams", "unified"])
def one_slot(
    request: pytest.FixtureRequest, embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerProcess]]:
    args = ["--parallel", "1"]
    if request.param == "unified":
        args += ["--kv-unified", "--kv-size", "2048"]
    srv = start(tmp_path_factory.mktemp(f"cache-{request.param}"), embedded_model, *args)
    yield request.param, srv
    srv.stop()


def metric(srv: ServerProcess, name: str) -> float:
    body = HTTP.get(srv.base_url + "/metrics").text
    m = re.search(rf"^gpt4all_api_{name}\{{[^}}]*\}} (\S+)$", body, re.M)
    assert m is not None, name
    return float(m.group(1))


def conversation(i: int) -> list[dict[str, str]]:
    notes = " ".join(random.Random(i).choices(WORDS, k=180))
    return [
        {"role": "system", "content": f"You keep notes for project {i}: {notes}."},
        {"role": "user", "content": "Which word comes first in the notes?"},
    ]


def ask(srv: ServerProcess, messages: list[dict[str, str]]) -> tuple[str, int, int]:
    """(answer, prompt tokens, cached prompt tokens) of a greedy chat answer."""
    oai = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
    r = oai.chat.completions.create(
        model=EMBEDDED,
        messages=messages,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    cached = r.usage.prompt_tokens_details.cached_tokens or 0
    return r.choices[0].message.content or "", r.usage.prompt_tokens, cached


def test_a_conversation_that_comes_back_is_restored_from_ram(
    one_slot: tuple[str, ServerProcess],
) -> None:
    kind, srv = one_slot
    restores = metric(srv, "prompt_cache_restores_total")
    first, prompt_tokens, _ = ask(srv, conversation(1))
    assert prompt_tokens > 200
    for i in (2, 3):  # two other conversations take the one sequence in turn
        ask(srv, conversation(i))
    assert metric(srv, "prompt_cache_bytes") > 0
    again, _, cached = ask(srv, conversation(1))
    assert cached >= prompt_tokens - 1, (cached, prompt_tokens)  # all but the last token
    assert metric(srv, "prompt_cache_restores_total") >= restores + 1
    if kind == "streams":  # the same cells in the same places: the same logits
        assert again == first
    # the conversation's next turn, after another one ran, starts from its saved state too
    ask(srv, conversation(4))
    turn = [*conversation(1), {"role": "assistant", "content": again}]
    turn.append({"role": "user", "content": "And which word comes last?"})
    _, turn_tokens, cached = ask(srv, turn)
    assert cached >= prompt_tokens, (cached, turn_tokens)


def test_without_the_cache_the_conversation_is_prefilled_again(
    embedded_model: Path, tmp_path: Path
) -> None:
    srv = start(tmp_path, embedded_model, "--parallel", "1", "--prompt-cache-mb", "0")
    try:
        first, _, _ = ask(srv, conversation(1))
        ask(srv, conversation(2))
        again, _, cached = ask(srv, conversation(1))
        assert cached < 40, cached  # the chat template's preamble at most
        assert again == first
        assert metric(srv, "prompt_cache_bytes") == 0
    finally:
        srv.stop()
