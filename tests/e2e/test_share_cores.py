"""Decode threads give way to other processes (`--share-cores`, the default, Linux): beside
busy-looping processes the engine decodes on one thread, and takes the second back once they
stop. Read from `gpt4all_api_decode_threads` in /metrics, through a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import HTTP, ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/stat").exists(), reason="share_cores reads /proc"),
]

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
LONG = {
    "model": EMBEDDED,
    "messages": [{"role": "user", "content": "Tell me about rivers, at length."}],
    "max_tokens": 400,
    "stream": True,
    "logit_bias": {"0": -100, "2": -100},
}


@pytest.fixture(scope="module")
def server(
    embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("share-cores")
    models = home / "models"
    models.mkdir()
    (models / EMBEDDED).symlink_to(embedded_model)
    srv = ServerProcess(models_dir=models, log_path=home / "server.log", args=["--threads", "2"])
    yield srv.start()
    srv.stop()


def threads(server: ServerProcess) -> int:
    body = HTTP.get(server.base_url + "/metrics").text
    m = re.search(r"^gpt4all_api_decode_threads\{[^}]*\} ([0-9.]+)$", body, re.M)
    assert m, "no decode_threads gauge"
    return int(float(m.group(1)))


def generate_until(server: ServerProcess, want: int, seconds: float) -> bool:
    """Stream long answers (the engine looks at the machine only while it decodes) until the
    gauge reads `want`."""
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        while time.monotonic() < deadline:
            with c.stream("POST", "/v1/chat/completions", json=LONG) as r:
                for n, _ in enumerate(r.iter_lines()):
                    if n % 10 == 0 and threads(server) == want:
                        return True
                    if time.monotonic() > deadline:
                        break
    return threads(server) == want


def test_busy_processes_take_a_decode_thread_and_give_it_back(server: ServerProcess) -> None:
    assert threads(server) == 2
    # enough busy loops that, with their fair share of the cores, fewer than two stay free
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
        for _ in range(3 * (os.cpu_count() or 1))
    ]
    try:
        assert generate_until(server, 1, 60), "still two threads beside the busy processes"
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert generate_until(server, 2, 60), "the second thread was not taken back"
    # the whole log: its tail is mostly the /metrics polls' access lines
    log = server.log_path.read_text(errors="replace")
    assert "decoding on 1 threads" in log
    assert "decoding on 2 threads" in log or "back to 2 threads" in log
