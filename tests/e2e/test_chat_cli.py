"""`gpt4all-api chat` as a user runs it: a subprocess fed through stdin, against the real model."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from conftest import ServerProcess, default_sigint, free_port

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


def idle(base: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until no model has a busy slot or a waiting request; return the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(base + "/v1/stats", timeout=10).json()
        if time.monotonic() > deadline or all(
            m["busy_slots"] == 0 and m["waiting"] == 0 for m in stats["models"].values()
        ):
            return stats
        time.sleep(0.2)


def read_blocks(stream: IO[bytes], blocks: list[bytes]) -> threading.Thread:
    """Collect what the process writes, block by block as it arrives, in a thread."""

    def run() -> None:
        while block := os.read(stream.fileno(), 4096):
            blocks.append(block)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


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
    reads: list[bytes] = []
    reader = read_blocks(proc.stdout, reads)
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
    out = b"".join(reads).decode()
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


def test_ctrl_c_stops_a_reply_and_frees_the_slot(server: ServerProcess, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        chat_command(
            "--url",
            server.base_url,
            "--system",
            "You are a storyteller who writes very long stories.",
            "--temperature",
            "0",
            "--max-tokens",
            "1500",
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=tmp_path,
        preexec_fn=default_sigint,  # Ctrl-C as at a terminal
    )
    with proc:
        assert proc.stdin and proc.stdout and proc.stderr
        blocks: list[bytes] = []
        reader = read_blocks(proc.stdout, blocks)
        proc.stdin.write(b"Write a very long story about a dragon who learns to cook.\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while sum(map(len, blocks)) < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(map(len, blocks)) >= 80, blocks
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the reply streams

        stats = idle(server.base_url)
        assert all(m["busy_slots"] == 0 for m in stats["models"].values()), stats
        proc.stdin.write(b"/reset\n")  # the chat goes on after a stop
        proc.stdin.close()
        try:
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
        err = proc.stderr.read().decode()
    assert rc == 0, err
    assert "(stopped)" in err
    assert err.index("(stopped)") < err.index("(new conversation)")
    assert SUMMARY.findall(err) == [], err  # the stopped reply never reached its end


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
