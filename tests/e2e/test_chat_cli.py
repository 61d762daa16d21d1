"""`gpt4all-api chat` as a user runs it: a subprocess fed through stdin, against the real model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ServerProcess, free_port

pytestmark = pytest.mark.e2e

EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUMMARY = re.compile(r"\[(\d+) prompt \+ (\d+) completion tokens, [\d.]+ tokens/s\]")


def chat_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpt4all_api", "chat", *args]


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DEFAULT_MODEL", "MODEL_PATH", "API_KEYS"):
        env.pop(name, None)
    return env


def test_chat_streams_keeps_history_and_resets(server: ServerProcess, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        chat_command(
            "--url",
            server.base_url,
            "--system",
            "You are a helpful assistant.",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    reads: list[tuple[float, bytes]] = []

    def read_stdout() -> None:
        assert proc.stdout
        while block := os.read(proc.stdout.fileno(), 4096):
            reads.append((time.monotonic(), block))

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    script = [
        "What is the capital of France?",
        "What is the capital of France?",  # again, now with the first turn as history
        "/reset",
        "What is the capital of France?",
    ]
    proc.stdin.write(("\n".join(script) + "\n").encode())
    proc.stdin.close()  # end of input = Ctrl-D: the chat ends after the last reply
    with proc:
        try:
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
        err = proc.stderr.read().decode()
    out = b"".join(block for _, block in reads).decode()
    assert rc == 0, err

    assert f"chatting with {EMBEDDED}" in err
    assert "(new conversation)" in err
    assert "Paris" in out
    # The reply arrived piece by piece, not as one block at the end.
    assert len(reads) >= 5, reads
    summaries = [(int(p), int(c)) for p, c in SUMMARY.findall(err)]
    assert len(summaries) == 3, err
    (p1, c1), (p2, _), (p3, _) = summaries
    assert 0 < c1 <= 40
    assert p2 > p1 + c1  # the second question carried the first turn
    assert p3 == p1  # /reset started over


def test_chat_in_process(models_dir: Path, tmp_path: Path) -> None:
    """Without --url the chat runs the model itself."""
    done = subprocess.run(
        chat_command("--models-dir", str(models_dir), "--max-tokens", "12", "--temperature", "0"),
        input="Say hello.\n/quit\nnever sent\n",
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"chatting with {EMBEDDED}" in done.stderr
    assert "http://127.0.0.1:" in done.stderr
    assert done.stdout.strip()
    summaries = SUMMARY.findall(done.stderr)
    assert len(summaries) == 1, done.stderr  # /quit left before the last line
    assert 0 < int(summaries[0][1]) <= 12


def test_chat_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        chat_command("--url", url),
        input="Hi\n",
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"cannot reach {url}/v1" in done.stderr
    assert "Traceback" not in done.stderr
