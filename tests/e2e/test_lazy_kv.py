"""The KV cache takes RAM as sequences write it (`--lazy-kv`, the default, Linux): a server with
16 sequences of 8,192 tokens (2.2 GB of q8_0 keys and f16 values) starts and answers in a
fraction of that, and its greedy answers are the ones a server holding the whole cache gives."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import HTTP, ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="lazy_kv is Linux only"),
]

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
ARGS = ["--parallel", "16", "--context-size", "8192"]
# sequences x cells x layers x (K in q8_0, 34 bytes per 32 values, + V in f16, 2 bytes per value)
KV_MB = 16 * 8192 * 30 * 192 * (34 / 32 + 2) / 2**20


def rss_mb(srv: ServerProcess) -> float:
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def ask(srv: ServerProcess, i: int) -> str:
    chat = {
        "model": EMBEDDED,
        "messages": [{"role": "user", "content": f"Name {i + 2} animals that live in rivers."}],
        "max_tokens": 48,
        "temperature": 0,
    }
    r = HTTP.post(srv.base_url + "/v1/chat/completions", json=chat)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def start(home: Path, embedded_model: Path, *args: str) -> ServerProcess:
    models = home / "models"
    models.mkdir()
    (models / EMBEDDED).symlink_to(embedded_model)
    return ServerProcess(models_dir=models, log_path=home / "server.log", args=[*ARGS, *args])


@pytest.fixture(scope="module")
def lazy(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start(tmp_path_factory.mktemp("lazy"), embedded_model).start()
    yield srv
    srv.stop()


def test_the_cache_takes_ram_as_it_is_written_and_answers_do_not_change(
    lazy: ServerProcess, embedded_model: Path, tmp_path: Path
) -> None:
    answers = [ask(lazy, i) for i in range(4)]
    with ThreadPoolExecutor(8) as pool:  # every sequence used once, each one a prefix copy
        list(pool.map(lambda i: ask(lazy, i), range(4, 20)))
    body = HTTP.get(lazy.base_url + "/metrics").text
    copies = re.search(r"^gpt4all_api_prefix_copies_total\{[^}]*\} (\S+)$", body, re.M)
    assert copies and float(copies.group(1)) >= 8  # the copies wrote only the cells they hold
    held = rss_mb(lazy)
    assert held < 0.2 * KV_MB, (held, KV_MB)  # the model, Python, a few hundred cells each
    assert "MiB of KV cache pages wait to be written" in lazy.log_path.read_text()
    whole = start(tmp_path, embedded_model, "--no-lazy-kv").start()
    try:
        assert rss_mb(whole) > KV_MB  # every cell resident from the start
        assert [ask(whole, i) for i in range(4)] == answers
    finally:
        whole.stop()
