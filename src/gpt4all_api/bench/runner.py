"""Runs the benchmark: levels and the prefix scenario against a URL, or the full comparison."""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from ..engine.model import Model
from .load import PrefixResult, check_loopback, new_client, run_level, run_prefix, stream_chat
from .raw import RawResult, raw_decode, render_messages
from .servers import (
    ManagedServer,
    RssSampler,
    ServerOptions,
    free_port,
    llama_cpp_command,
    ours_command,
)
from .stats import LevelResult, RequestRecord, TokenSource, summarize, token_source

OURS = "gpt4all-api"
THEIRS = "llama-cpp-python"


@dataclass(frozen=True)
class BenchConfig:
    """How much load to send. Every level is bounded by a request count and a time limit."""

    levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests_per_client: int = 4
    min_requests: int = 8
    max_tokens: int = 64
    time_limit: float = 120.0  # seconds per level; no request starts after it
    warmup: int = 2
    prefix: bool = True
    prefix_tokens: int = 1500
    prefix_reps: int = 3
    prefix_max_tokens: int = 16

    def requests_for(self, concurrency: int) -> int:
        return max(self.min_requests, concurrency * self.requests_per_client)


class TokenCounter:
    """Counts output tokens with the model's own tokenizer, the same way for every server."""

    def __init__(self, model: Model):
        self.model = model

    def count(self, text: str) -> int:
        return len(self.model.tokenize(text, add_special=False, parse_special=False))

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        return len(self.model.tokenize(render_messages(self.model, messages)))


@dataclass
class ServerReport:
    """One server's figures: a row per concurrency level, the prefix scenario, memory."""

    name: str
    base_url: str
    model: str | None
    levels: list[LevelResult] = field(default_factory=list)
    prefix: PrefixResult | None = None
    peak_rss_mb: float | None = None

    def level(self, concurrency: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)


def first_model(base_url: str, api_key: str | None = None) -> str | None:
    """The first model a server lists (what to ask for when no model was named)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    r = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=30, trust_env=False)
    r.raise_for_status()
    data = r.json().get("data") or []
    return data[0]["id"] if data else None


async def bench_url(
    base_url: str,
    model: str | None,
    config: BenchConfig,
    *,
    name: str = "server",
    counter: TokenCounter | None = None,
    rss: RssSampler | None = None,
    source: TokenSource | None = None,
    api_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ServerReport:
    """Every concurrency level, then the prefix scenario, against one running server."""
    check_loopback(base_url)
    base_url = base_url.rstrip("/")
    report = ServerReport(name=name, base_url=base_url, model=model)
    say = progress or (lambda _msg: None)
    async with new_client(1, api_key) as client:
        for i in range(config.warmup):
            await stream_chat(client, base_url, model, [{"role": "user", "content": "Hi"}], 8 + i)
    for c in config.levels:
        if rss is not None:
            rss.reset()
        records, wall = await run_level(
            base_url,
            model,
            c,
            config.requests_for(c),
            config.max_tokens,
            config.time_limit,
            api_key,
        )
        _count(records, counter)
        lv = summarize(c, records, wall, source or token_source(records, counter is not None))
        if rss is not None:
            rss.sample()
            lv.peak_rss_mb = rss.peak_mb
            lv.server_cpu_s = rss.cpu_since_reset()
        report.levels.append(lv)
        say(
            f"{name}: {c} clients, {lv.requests} requests, {lv.tokens_per_s:.1f} tokens/s, "
            f"TTFT p50 {_ms(lv.ttft_p50)}, {lv.errors} errors"
        )
    if config.prefix:
        report.prefix = await run_prefix(
            base_url,
            model,
            config.prefix_tokens,
            config.prefix_reps,
            config.prefix_max_tokens,
            counter.count_messages if counter else None,
            api_key,
            time_limit=config.time_limit,
        )
        say(f"{name}: prefix reuse speeds TTFT up {report.prefix.speedup or 0:.1f}x")
    if rss is not None:
        report.peak_rss_mb = max((lv.peak_rss_mb or 0) for lv in report.levels) or None
    return report


def _count(records: list[RequestRecord], counter: TokenCounter | None) -> None:
    if counter is not None:
        for r in records:
            if r.ok:
                r.counted_tokens = counter.count(r.text)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


@dataclass
class CompareReport:
    """The comparison run: raw ceilings, both servers, the machine and the settings."""

    config: BenchConfig
    options: ServerOptions
    raw: list[RawResult]
    servers: dict[str, ServerReport]
    machine: dict[str, Any]
    started: str
    duration_s: float = 0.0

    def raw_for(self, n_seq: int) -> RawResult | None:
        return next((r for r in self.raw if r.n_seq == n_seq), None)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "llama_cpp_python": version("llama-cpp-python"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_compare(
    config: BenchConfig,
    options: ServerOptions,
    *,
    raw_seqs: tuple[int, ...] = (1, 8),
    raw_reps: int = 3,
    servers: tuple[str, ...] = (OURS, THEIRS),
    progress: Callable[[str], None] | None = None,
) -> CompareReport:
    """Raw ceilings, then our server, then llama-cpp-python's, one after the other."""
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    report = CompareReport(
        config=config,
        options=options,
        raw=[],
        servers={},
        machine=machine_info(),
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    model = Model.load(options.model_path)
    try:
        counter = TokenCounter(model)
        for n in raw_seqs if raw_reps > 0 else ():
            raw = raw_decode(
                model,
                n,
                config.max_tokens,
                threads=options.threads,
                context_size=options.context_size,
                batch_size=options.batch_size,
                reps=raw_reps,
            )
            report.raw.append(raw)
            say(f"raw decode, {n} sequences: {raw.tokens_per_s:.1f} tokens/s")
        commands = {OURS: ours_command, THEIRS: llama_cpp_command}
        with tempfile.TemporaryDirectory(prefix="gpt4all-bench-") as tmp:
            for name in servers:
                port = free_port()
                server = ManagedServer(
                    name, commands[name](options, port), port, Path(tmp) / f"{name}.log"
                )
                with server, RssSampler(server.proc.pid) as rss:  # type: ignore[union-attr]
                    report.servers[name] = asyncio.run(
                        bench_url(
                            server.base_url,
                            options.model_path.name,
                            config,
                            name=name,
                            counter=counter,
                            rss=rss,
                            source="tokenizer",
                            progress=say,
                        )
                    )
    finally:
        model.close()
    report.duration_s = time.monotonic() - t0
    return report
