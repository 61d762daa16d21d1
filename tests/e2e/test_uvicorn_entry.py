"""`uvicorn gpt4all_api.app:app` starts the server configured from the environment and `.env`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

pytestmark = pytest.mark.e2e


def test_uvicorn_app_reads_dotenv(tmp_path: Path, embedded_model: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(embedded_model, models / "dotenv-default.gguf")
    (tmp_path / ".env").write_text(
        f"MODEL_PATH={models}\nDEFAULT_MODEL=dotenv-default\nGPT4ALL_API_PARALLEL=2\n"
        "GPT4ALL_API_CONTEXT_SIZE=512\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MODEL_PATH", "DEFAULT_MODEL") and not k.startswith("GPT4ALL_API_")
    }
    port = free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gpt4all_api.app:app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "uvicorn.log").read_text()
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        health = httpx.get(base + "/health", timeout=10).json()
        assert health["model"] == "dotenv-default.gguf"
        r = httpx.post(
            base + "/v1/chat/completions",
            timeout=300,
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        )
        assert r.status_code == 200 and r.json()["model"] == "dotenv-default.gguf"
        stats = httpx.get(base + "/v1/stats", timeout=10).json()["models"]["dotenv-default.gguf"]
        assert stats["slots"] == 2 and stats["context_per_slot"] == 512
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
