"""Servers started by `bench --compare`: ours, llama-cpp-python's and llama.cpp's llama-server,
on free loopback ports; a sampler of their memory (peak RSS of the process tree); CPU hogs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..cli_threads import child_env
from ..engine.devices import repack_by_default
from ..engine.kv_types import DEFAULT_KV_TYPES, FlashAttention, flash_attention_on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerOptions:
    """What every server is given alike."""

    model_path: Path
    threads: int
    context_size: int = 2048  # per sequence
    batch_size: int = 512
    # Ours and llama-server's slots (llama-cpp-python's server decodes one request at a time).
    parallel: int = 16
    extra_args: tuple[str, ...] = ()  # more flags for our server (tuning runs)
    #: Ours and llama-server's K and V cache types (a quantized one runs flash attention).
    kv_types: tuple[str, str] = DEFAULT_KV_TYPES
    flash_attention: FlashAttention = "auto"  # ours and llama-server's (-fa)
    llama_server: Path | None = None  # llama.cpp's llama-server binary, when compared
    llama_server_args: tuple[str, ...] = ()  # more flags for llama-server


def ours_command(opts: ServerOptions, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gpt4all_api",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models-dir",
        str(opts.model_path.parent),
        "--model",
        opts.model_path.name,
        "--threads",
        str(opts.threads),
        "--context-size",
        str(opts.context_size),
        "--parallel",
        str(opts.parallel),
        "--batch-size",
        str(opts.batch_size),
        "--kv-cache-type-k",
        opts.kv_types[0],
        "--kv-cache-type-v",
        opts.kv_types[1],
        "--flash-attention",
        opts.flash_attention,
        "--log-level",
        "warning",
        *opts.extra_args,
    ]


def _no_repack() -> list[str]:
    """`--no-repack` where our `repack=auto` keeps the weights as the file has them
    (`devices.repack_by_default`), for the other servers to run the same kernels."""
    return [] if repack_by_default()[0] else ["--no-repack"]


def llama_cpp_command(opts: ServerOptions, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gpt4all_api.bench.llama_cpp_server",
        *_no_repack(),
        "--model",
        str(opts.model_path),
        "--model_alias",
        opts.model_path.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(opts.threads),
        "--n_threads_batch",
        str(opts.threads),
        "--n_ctx",
        str(opts.context_size),
        "--n_batch",
        str(opts.batch_size),
        "--n_ubatch",
        str(opts.batch_size),
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
    ]


def llama_server_command(opts: ServerOptions, port: int) -> list[str]:
    """llama.cpp's llama-server set up like ours: the same model, threads, slots (`-np`), context
    per slot (`-c` is the total, split across the slots), batch and KV cache type; no web UI, no
    downloads (the binary is built without curl)."""
    if opts.llama_server is None:
        raise ValueError("no llama-server binary given")
    cache = ["-ctk", opts.kv_types[0], "-ctv", opts.kv_types[1]]
    flash = flash_attention_on(opts.flash_attention, opts.kv_types)
    fa = ["-fa", {True: "on", False: "off", None: "auto"}[flash]]
    return [
        str(opts.llama_server),
        "--model",
        str(opts.model_path),
        "--alias",
        opts.model_path.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(opts.threads),
        "--threads-batch",
        str(opts.threads),
        "--ctx-size",
        str(opts.context_size * opts.parallel),
        "--parallel",
        str(opts.parallel),
        "--batch-size",
        str(opts.batch_size),
        "--ubatch-size",
        str(opts.batch_size),
        *cache,
        *fa,
        *_no_repack(),
        "--no-webui",
        *opts.llama_server_args,
    ]


@dataclass
class ManagedServer:
    """A server subprocess logging to a file; ready once `GET /v1/models` answers 200."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    # Added to the environment, which is this process's without the OpenMP wait policy that
    # our CLI set for itself (each server chooses its own; ours from GPT4ALL_API_THREAD_WAIT).
    env: dict[str, str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 180.0) -> ManagedServer:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
                env={**child_env(), **(self.env or {})},
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                r = httpx.get(self.base_url + "/models", timeout=2, trust_env=False)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RssSampler:
    """Samples the resident memory of a process and its children in a background thread."""

    pid: int
    interval: float = 0.1
    peak_bytes: int = 0
    #: The server's decode threads (`--threads`): the CPU time of every other thread (HTTP,
    #: event loop, Python glue) is also counted apart, since on a machine whose cores all
    #: decode, that work takes its time from a decode thread.
    decode_threads: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    cpu_at_reset: float = 0.0
    threads_at_reset: dict[tuple[int, int], float] = field(default_factory=dict)

    def _procs(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> int:
        import psutil

        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time the process tree has used so far."""
        import psutil

        total = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def thread_seconds(self) -> dict[tuple[int, int], float]:
        """User + system CPU time of each thread of the process tree so far."""
        import psutil

        out: dict[tuple[int, int], float] = {}
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                for t in p.threads():
                    out[(p.pid, t.id)] = t.user_time + t.system_time
        return out

    def reset(self) -> None:
        """Start a new measurement: peak RSS from now, CPU time counted from now."""
        self.peak_bytes = 0
        self.sample()
        self.cpu_at_reset = self.cpu_seconds()
        self.threads_at_reset = self.thread_seconds()

    def cpu_since_reset(self) -> float:
        return self.cpu_seconds() - self.cpu_at_reset

    def other_cpu_since_reset(self) -> float | None:
        """CPU time since `reset` of every thread but the `decode_threads` busiest ones."""
        if self.decode_threads <= 0:
            return None
        before = self.threads_at_reset
        used = sorted(
            (t - before.get(key, 0.0) for key, t in self.thread_seconds().items()), reverse=True
        )
        return sum(used[self.decode_threads :])

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


_HOG_CODE = "while True:\n    pass\n"


@dataclass
class CpuHog:
    """`n` processes that busy-loop on the CPU beside the server (a shared machine), started
    and stopped by the benchmark."""

    n: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @staticmethod
    def command() -> list[str]:
        return [sys.executable, "-c", _HOG_CODE]

    def start(self) -> CpuHog:
        for _ in range(self.n):
            self.procs.append(
                subprocess.Popen(
                    self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        self.procs.clear()

    def __enter__(self) -> CpuHog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
