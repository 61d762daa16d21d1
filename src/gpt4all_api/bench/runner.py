"""Runs the benchmark: levels and the prefix scenario against a URL, or the full comparison."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from ..engine.own_thread import run_on_own_thread
from .config import (
    OURS,
    THEIRS,
    BenchConfig,
    TokenCounter,
    Variant,
    count_tokens,
    ms,
)
from .grounded import GROUNDED_PROMPTS, GroundedResult, grounded_messages, run_grounded
from .inproc import EngineAlone
from .load import PrefixResult, check_loopback, new_client, run_level, run_prefix, stream_chat
from .lookup_bound import cut_guess_speedup, perfect_lookup_speedup, plan_speedup
from .profile import Profiler
from .raw import RawResult, StepCost, raw_decode, render_messages, step_costs
from .rounds import planned_server, run_rounds, server_plan
from .servers import (
    CpuHog,
    RssSampler,
    ServerOptions,
)
from .stats import LevelResult, TokenSource, summarize, token_source

log = logging.getLogger(__name__)


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
        count_tokens(records, counter)
        lv = summarize(c, records, wall, source or token_source(records, counter is not None))
        if rss is not None:
            rss.sample()
            lv.peak_rss_mb = rss.peak_mb
            lv.server_cpu_s = rss.cpu_since_reset()
            lv.other_cpu_s = rss.other_cpu_since_reset()
        say(
            f"{name}{tag}: {c} clients, {lv.requests} requests, {lv.tokens_per_s:.1f} tokens/s, "
            f"TTFT p50 {ms(lv.ttft_p50)}, {lv.errors} errors"
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
        count_tokens(g.records, counter)
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
    #: after `step_costs_context` tokens (as many as a grounded answer's tokens have before them,
    #: on average: attention over them makes a step dearer, the more so the more tokens it has)
    step_costs: list[StepCost] = field(default_factory=list)
    step_costs_context: int = 0
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
                    kv_types=options.kv_types,
                    flash_attention=options.flash_attention,
                    reps=raw_reps,
                )
            )
            report.raw.append(raw)
            say(f"raw decode, {n} sequences: {raw.tokens_per_s:.1f} tokens/s")
        if raw_reps > 0 and config.grounded_passes > 0:
            held = grounded_context(model, config.grounded_max_tokens)
            report.step_costs = run_on_own_thread(
                lambda: step_costs(
                    model,
                    threads=options.threads,
                    context_size=options.context_size,
                    batch_size=options.batch_size,
                    kv_types=options.kv_types,
                    flash_attention=options.flash_attention,
                    context=held,
                )
            )
            report.step_costs_context = held
            best = max(report.step_costs, key=lambda c: c.ceiling)
            say(
                f"step costs after {held} tokens: {best.tokens} tokens cost {best.steps:.1f} "
                "single-token steps"
            )
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


def grounded_prompts(model: Model) -> list[list[int]]:
    """The grounded prompts' tokens, as the chat template renders them."""
    return [
        model.tokenize(render_messages(model, grounded_messages(i)))
        for i in range(len(GROUNDED_PROMPTS))
    ]


def grounded_context(model: Model, max_tokens: int) -> int:
    """The tokens a grounded answer's token has before it, on average: its prompt's and half
    the answer's."""
    prompts = [len(p) for p in grounded_prompts(model)]
    return round(sum(prompts) / len(prompts)) + max_tokens // 2


def grounded_cases(
    model: Model, every: list[str], per_pass: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(prompt tokens, answer tokens) of one pass of grounded answers given pass after pass
    (`per_pass` answers each, 0: one pass), and how many passes there were."""
    texts = every[: per_pass or len(every)]
    prompts = grounded_prompts(model)
    cases = [
        (prompts[i % len(prompts)], model.tokenize(text, add_special=False))
        for i, text in enumerate(texts)
    ]
    return cases, len(every) // len(texts) if texts else 0


def lookup_bounds(model: Model, report: CompareReport) -> None:
    """`perfect_lookup_speedup`, `cut_guess_speedup` and `plan_speedup` of our greedy grounded
    answers (lookup off), with the step costs measured in this run; left unset without either."""
    ours = report.servers.get(OURS)
    off = next((g for g in ours.grounded if g.label == "prompt lookup off"), None) if ours else None
    if not report.step_costs or off is None or off.errors:
        return
    cases, passes = grounded_cases(model, off.texts(), off.per_pass)
    report.lookup_bound = perfect_lookup_speedup(cases, report.step_costs)
    report.guess_bound = cut_guess_speedup(cases, report.step_costs, passes)
    report.plan_bound = plan_speedup(cases, report.step_costs, passes)
