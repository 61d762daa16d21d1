"""The servers of a comparison run, and its interleaved rounds: every server up at once (and our
engine alone in this process), each level run by each in turn."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from .config import (
    LLAMA_SERVER,
    OURS,
    THEIRS,
    BenchConfig,
    TokenCounter,
    Variant,
    count_tokens,
    ms,
)
from .inproc import EngineAlone
from .load import run_level
from .servers import (
    ManagedServer,
    ServerOptions,
    free_port,
    llama_cpp_command,
    llama_server_command,
    ours_command,
)
from .stats import LevelResult, RequestRecord, summarize


def planned_server(
    name: str, command: Callable[[int], list[str]], env: dict[str, str], log_path: Path
) -> ManagedServer:
    """A server of the plan on a free port, logging to `log_path` (its `{}` is the name, made
    safe for a file name)."""
    port = free_port()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    log_file = log_path.with_name(log_path.name.format(slug))
    return ManagedServer(name, command(port), port, log_file, env=env or None)


def run_rounds(
    plan: list[tuple[str, Callable[[int], list[str]], dict[str, str], bool]],
    config: BenchConfig,
    model: str,
    tmp: Path,
    counter: TokenCounter,
    say: Callable[[str], None],
    engine: EngineAlone | None = None,
) -> dict[str, dict[int, list[LevelResult]]]:
    """Every server up at once (idle ones wait without spinning), and `engine`, our engine
    in this process, beside them; `config.rounds` rounds of every level, each level run by
    every one in turn, the order reversed every other round. Each first answers the level
    prompts once, one client, unmeasured."""
    t = config.temperature
    with contextlib.ExitStack() as stack:
        runs: list[tuple[str, Callable[[int, int, float], Awaitable[_Run]]]] = []
        for name, command, env, _ours in plan:
            server = stack.enter_context(planned_server(name, command, env, tmp / "{}-rounds.log"))
            runs.append((name, _http_level(server.base_url, model, config, t)))
        if engine is not None:
            stack.enter_context(engine)
            runs.append((engine.name, _engine_level(engine, config, t)))
        out: dict[str, dict[int, list[LevelResult]]] = {name: {} for name, _ in runs}
        for _name, level in runs:
            asyncio.run(level(1, config.requests_for(1), 300))
        for r in range(config.rounds):
            for c in config.levels:
                for name, level in runs if r % 2 == 0 else runs[::-1]:
                    records, wall = asyncio.run(level(c, config.requests_for(c), config.time_limit))
                    count_tokens(records, counter)
                    lv = summarize(c, records, wall, "tokenizer")
                    out[name].setdefault(c, []).append(lv)
                    say(
                        f"round {r + 1}/{config.rounds}, {name}: {c} clients, "
                        f"{lv.tokens_per_s:.1f} tokens/s, TTFT p50 {ms(lv.ttft_p50)}, "
                        f"{lv.errors} errors"
                    )
    return out


_Run = tuple[list[RequestRecord], float]


def _http_level(
    base_url: str, model: str, config: BenchConfig, temperature: float
) -> Callable[[int, int, float], Awaitable[_Run]]:
    """One level of closed-loop clients against a server: (clients, requests, time limit)."""

    def level(c: int, n: int, limit: float) -> Awaitable[_Run]:
        return run_level(base_url, model, c, n, config.max_tokens, limit, None, temperature)

    return level


def _engine_level(
    engine: EngineAlone, config: BenchConfig, temperature: float
) -> Callable[[int, int, float], Awaitable[_Run]]:
    """The same against our engine in this process."""

    def level(c: int, n: int, limit: float) -> Awaitable[_Run]:
        return engine.run_level(c, n, config.max_tokens, limit, temperature)

    return level


def server_plan(
    options: ServerOptions, servers: tuple[str, ...], variants: tuple[Variant, ...]
) -> list[tuple[str, Callable[[int], list[str]], dict[str, str], bool]]:
    """(name, port -> command line, extra environment, is ours) for every server to run."""
    plan: list[tuple[str, Callable[[int], list[str]], dict[str, str], bool]] = []
    for name in servers:
        if name == OURS:
            plan.append((OURS, lambda port: ours_command(options, port), {}, True))
            for v in variants:
                opts = dataclasses.replace(options, extra_args=(*options.extra_args, *v.args))
                plan.append(
                    (
                        v.server_name,
                        lambda port, opts=opts: ours_command(opts, port),  # type: ignore[misc]
                        dict(v.env),
                        True,
                    )
                )
        elif name == LLAMA_SERVER:
            if options.llama_server is None:
                raise RuntimeError("llama-server needs --llama-server PATH")
            plan.append((LLAMA_SERVER, lambda port: llama_server_command(options, port), {}, False))
        elif name == THEIRS:
            plan.append((THEIRS, lambda port: llama_cpp_command(options, port), {}, False))
        else:
            raise ValueError(f"unknown server {name!r}")
    return plan
