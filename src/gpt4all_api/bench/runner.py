"""Runs the benchmark: levels and the prefix scenario against a URL, or the full comparison."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import re
import shlex
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from ..engine.model import Model
from ..engine.own_thread import run_on_own_thread
from .grounded import GroundedResult, grounded_messages, run_grounded
from .inproc import EngineAlone
from .load import PrefixResult, check_loopback, new_client, run_level, run_prefix, stream_chat
from .lookup_bound import cut_guess_speedup, perfect_lookup_speedup, plan_speedup
from .profile import Profiler
from .raw import RawResult, StepCost, raw_decode, render_messages, step_costs
from .servers import (
    CpuHog,
    ManagedServer,
    RssSampler,
    ServerOptions,
    free_port,
    llama_cpp_command,
    llama_server_command,
    ours_command,
)
from .stats import LevelResult, RequestRecord, TokenSource, summarize, token_source

log = logging.getLogger(__name__)

OURS = "gpt4all-api"
THEIRS = "llama-cpp-python"
LLAMA_SERVER = "llama-server"
ALL_SERVERS = (OURS, LLAMA_SERVER, THEIRS)
_ENV_WORD = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Variant:
    """Our server once more under another name, with more flags and environment variables
    (a tuning point measured in the same run, e.g. `passive=OMP_WAIT_POLICY=passive`)."""

    name: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """`NAME=WORDS`: words like `KEY=VALUE` (upper-case key) are environment variables of
        the server process, the others flags of `gpt4all-api serve`."""
        name, sep, rest = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"a variant is NAME=FLAGS-OR-ENV, got {spec!r}")
        args: list[str] = []
        env: list[tuple[str, str]] = []
        for word in shlex.split(rest):
            if _ENV_WORD.match(word):
                key, _, value = word.partition("=")
                env.append((key, value))
            else:
                args.append(word)
        return cls(name.strip(), tuple(args), tuple(env))

    @property
    def server_name(self) -> str:
        return f"{OURS} [{self.name}]"


@dataclass(frozen=True)
class BenchConfig:
    """How much load to send. Every level is bounded by a request count and a time limit."""

    levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests_per_client: int = 4
    min_requests: int = 8
    max_tokens: int = 64
    temperature: float = 0.0  # of the levels' requests (the grounded ones are greedy)
    time_limit: float = 120.0  # seconds per level; no request starts after it
    warmup: int = 2
    prefix: bool = True
    prefix_tokens: int = 1500
    prefix_reps: int = 3
    prefix_max_tokens: int = 16
    hog: int = 0  # with N > 0 every level runs again beside N busy-looping processes
    grounded_passes: int = 0  # passes over the grounded prompts (0: no grounded workload)
    grounded_max_tokens: int = 192
    #: After the servers ran one after the other: this many rounds with every server up at once,
    #: each level run by every server in turn (the order alternating round by round), so that
    #: the ratios compare runs seconds apart rather than minutes on a noisy machine.
    rounds: int = 0

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
    hog_levels: list[LevelResult] = field(default_factory=list)  # the same levels beside a hog
    grounded: list[GroundedResult] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # py-spy outputs written

    def hog_level(self, concurrency: int) -> LevelResult | None:
        return next((lv for lv in self.hog_levels if lv.concurrency == concurrency), None)

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
    grounded: tuple[tuple[str, dict[str, Any] | None], ...] = (),
    read_metrics: bool = False,
    profiler: Profiler | None = None,
    fresh_engines: bool = False,
) -> ServerReport:
    """Every concurrency level, the prefix scenario, the grounded workload (once per
    `(label, extra request fields)` in `grounded`), then the levels again beside a CPU hog,
    against one running server."""
    check_loopback(base_url)
    base_url = base_url.rstrip("/")
    report = ServerReport(name=name, base_url=base_url, model=model)
    say = progress or (lambda _msg: None)
    async with new_client(1, api_key) as client:
        for i in range(config.warmup):
            await stream_chat(client, base_url, model, [{"role": "user", "content": "Hi"}], 8 + i)

    async def level(c: int, tag: str) -> LevelResult:
        if rss is not None:
            rss.reset()
        with profiler.level(c, tag) if profiler else contextlib.nullcontext():
            records, wall = await run_level(
                base_url,
                model,
                c,
                config.requests_for(c),
                config.max_tokens,
                config.time_limit,
                api_key,
                config.temperature,
            )
        _count(records, counter)
        lv = summarize(c, records, wall, source or token_source(records, counter is not None))
        if rss is not None:
            rss.sample()
            lv.peak_rss_mb = rss.peak_mb
            lv.server_cpu_s = rss.cpu_since_reset()
            lv.other_cpu_s = rss.other_cpu_since_reset()
        say(
            f"{name}{tag}: {c} clients, {lv.requests} requests, {lv.tokens_per_s:.1f} tokens/s, "
            f"TTFT p50 {_ms(lv.ttft_p50)}, {lv.errors} errors"
        )
        return lv

    for c in config.levels:
        report.levels.append(await level(c, ""))
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
    for label, extra in grounded if config.grounded_passes > 0 else ():
        g = await run_grounded(
            base_url,
            model,
            server=name,
            label=label,
            passes=config.grounded_passes,
            max_tokens=config.grounded_max_tokens,
            extra=extra,
            api_key=api_key,
            read_metrics=read_metrics,
            fresh_engine=fresh_engines,
        )
        _count(g.records, counter)
        report.grounded.append(g)
        acc = "" if g.acceptance is None else f", {g.acceptance:.0%} of drafts accepted"
        err = next((r.error for r in g.records if r.error), None)
        say(
            f"{name}: grounded, {label}: {g.tokens_per_s:.1f} tokens/s{acc}, {g.errors} errors"
            + (f" ({err[:160]})" if err else "")
        )
    if config.hog > 0:
        with CpuHog(config.hog):
            time.sleep(0.5)  # let the hogs get going
            for c in config.levels:
                report.hog_levels.append(await level(c, f" beside {config.hog} CPU hog(s)"))
    if profiler is not None:
        report.profiles = list(profiler.written)
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
    """The comparison run: raw ceilings, every server, the machine and the settings."""

    config: BenchConfig
    options: ServerOptions
    raw: list[RawResult]
    servers: dict[str, ServerReport]
    machine: dict[str, Any]
    started: str
    duration_s: float = 0.0
    #: With the grounded workload and raw decode: what a step of k tokens of one sequence costs
    step_costs: list[StepCost] = field(default_factory=list)
    #: With those and our grounded answers: prompt lookup's speed-up were every draft right
    lookup_bound: float | None = None
    #: And with our own guesses, each cut where it goes wrong: the speed-up per grounded pass
    guess_bound: list[float] = field(default_factory=list)
    #: And with the engine's own choice of how much of each guess to draft, per grounded pass
    plan_bound: list[float] = field(default_factory=list)
    #: With `rounds`: {server: {clients: [the level's result in each round]}}
    interleaved: dict[str, dict[int, list[LevelResult]]] = field(default_factory=dict)

    def raw_for(self, n_seq: int) -> RawResult | None:
        return next((r for r in self.raw if r.n_seq == n_seq), None)

    def round_ttfts(self, name: str, clients: int) -> list[float]:
        """`name`'s TTFT p50 at `clients` in each interleaved round that measured one."""
        runs = self.interleaved.get(name, {}).get(clients, [])
        return [t for lv in runs if (t := lv.ttft_p50) is not None]

    def round_ratios(self, name: str, reference: str, clients: int) -> list[float]:
        """`name`'s tokens/s over `reference`'s, round by round, at one level."""
        a = self.interleaved.get(name, {}).get(clients, [])
        b = self.interleaved.get(reference, {}).get(clients, [])
        return [
            x.tokens_per_s / y.tokens_per_s for x, y in zip(a, b, strict=False) if y.tokens_per_s
        ]


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
    variants: tuple[Variant, ...] = (),
    profile_dir: Path | None = None,
    profile_level: int | None = None,
    profile_format: str = "speedscope",
    progress: Callable[[str], None] | None = None,
    engine_alone: bool = True,
) -> CompareReport:
    """Raw ceilings, then each server alone, one after the other, in one run: ours, its
    variants, llama-server, llama-cpp-python (in the order of `servers`, variants after ours).
    With `config.rounds` and `engine_alone` (and our server among `servers`), our engine in
    this process takes its turn in every round too (`inproc.py`)."""
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
        # raw decode and the step costs run on threads that end with them (`own_thread.py`):
        # an OpenMP team left in this process would slow the engine alone of the rounds
        for n in raw_seqs if raw_reps > 0 else ():
            raw = run_on_own_thread(
                lambda n=n: raw_decode(
                    model,
                    n,
                    config.max_tokens,
                    threads=options.threads,
                    context_size=options.context_size,
                    batch_size=options.batch_size,
                    reps=raw_reps,
                )
            )
            report.raw.append(raw)
            say(f"raw decode, {n} sequences: {raw.tokens_per_s:.1f} tokens/s")
        if raw_reps > 0 and config.grounded_passes > 0:
            report.step_costs = run_on_own_thread(
                lambda: step_costs(
                    model,
                    threads=options.threads,
                    context_size=options.context_size,
                    batch_size=options.batch_size,
                    kv_types=options.kv_types,
                )
            )
            best = max(report.step_costs, key=lambda c: c.ceiling)
            say(f"step costs: {best.tokens} tokens cost {best.steps:.1f} single-token steps")
        with tempfile.TemporaryDirectory(prefix="gpt4all-bench-") as tmp:
            for name, command, env, ours in server_plan(options, servers, variants):
                server = planned_server(name, command, env, Path(tmp) / "{}.log")
                grounded: tuple[tuple[str, dict[str, Any] | None], ...] = (
                    (
                        ("prompt lookup on", None),  # the default: drafts where they pay
                        ("prompt lookup forced", {"prompt_lookup": True}),  # drafts every step
                        ("prompt lookup off", {"prompt_lookup": False}),
                    )
                    if ours
                    else (("greedy", None),)
                )
                with server, RssSampler(server.proc.pid, decode_threads=options.threads) as rss:  # type: ignore[union-attr]
                    profiler = (
                        Profiler(
                            server.proc.pid,  # type: ignore[union-attr]
                            name,
                            profile_dir,
                            profile_level or max(config.levels),
                            profile_format,
                        )
                        if ours and profile_dir is not None
                        else None
                    )
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
                            grounded=grounded,
                            read_metrics=ours,
                            profiler=profiler,
                            fresh_engines=ours,
                        )
                    )
            lookup_bounds(model, report)
            if config.rounds > 0:
                plan = server_plan(options, servers, variants)
                alone = EngineAlone(model, options) if engine_alone and OURS in servers else None
                report.interleaved = run_rounds(
                    plan, config, options.model_path.name, Path(tmp), counter, say, alone
                )
    finally:
        model.close()
    report.duration_s = time.monotonic() - t0
    return report


def lookup_bounds(model: Model, report: CompareReport) -> None:
    """`perfect_lookup_speedup`, `cut_guess_speedup` and `plan_speedup` of our greedy grounded
    answers (lookup off), with the step costs measured in this run; left unset without either."""
    ours = report.servers.get(OURS)
    off = next((g for g in ours.grounded if g.label == "prompt lookup off"), None) if ours else None
    if not report.step_costs or off is None or off.errors:
        return
    every = off.texts()  # pass after pass
    texts = every[: off.per_pass or len(every)]
    cases = [
        (
            model.tokenize(render_messages(model, grounded_messages(i))),
            model.tokenize(text, add_special=False),
        )
        for i, text in enumerate(texts)
    ]
    report.lookup_bound = perfect_lookup_speedup(cases, report.step_costs)
    passes = len(every) // len(texts) if texts else 0
    report.guess_bound = cut_guess_speedup(cases, report.step_costs, passes)
    report.plan_bound = plan_speedup(cases, report.step_costs, passes)


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
                    _count(records, counter)
                    lv = summarize(c, records, wall, "tokenizer")
                    out[name].setdefault(c, []).append(lv)
                    say(
                        f"round {r + 1}/{config.rounds}, {name}: {c} clients, "
                        f"{lv.tokens_per_s:.1f} tokens/s, TTFT p50 {_ms(lv.ttft_p50)}, "
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
