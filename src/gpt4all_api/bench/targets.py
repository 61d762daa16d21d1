"""The benchmark's targets: each measured against its goal, met or not."""

from __future__ import annotations

import re
import statistics

from .config import LLAMA_SERVER, OURS, THEIRS
from .runner import CompareReport


def grounded_identical(report: CompareReport) -> bool | None:
    """Whether our greedy answers with prompt lookup on (and forced) equal those with it off."""
    ours = report.servers.get(OURS)
    if ours is None:
        return None
    runs = {g.label: g for g in ours.grounded}
    on, off = runs.get("prompt lookup on"), runs.get("prompt lookup off")
    if on is None or off is None or on.errors or off.errors:
        return None
    forced = runs.get("prompt lookup forced")
    if forced is not None and (forced.errors or forced.texts() != off.texts()):
        return False
    return on.texts() == off.texts()


class _Targets:
    """The target lines as they are checked: (what, measured, met?), None when not measured."""

    def __init__(self) -> None:
        self.out: list[tuple[str, str, bool | None]] = []

    def check(
        self, what: str, value: float | None, goal: float, fmt: str, *, most: bool = False
    ) -> None:
        if value is None:
            self.out.append((what, "not measured", None))
            return
        met = value <= goal if most else value >= goal
        text = fmt.format(value)
        more = 0
        while not met and text == _finer(fmt, more).format(goal) and more < 4:
            more += 1  # a miss that rounds to the goal: digits until it does not
            text = _finer(fmt, more).format(value)
        self.out.append((what, text, met))


def _finer(fmt: str, more: int) -> str:
    """`fmt` ("{:.2f}x", "{:.0%}") with `more` more digits."""
    return re.sub(r"\.(\d+)([f%])", lambda m: f".{int(m[1]) + more}{m[2]}", fmt)


def _raw_and_llama_cpp_python_targets(report: CompareReport, t: _Targets) -> None:
    ours, theirs = report.servers.get(OURS), report.servers.get(THEIRS)
    for n, pct, times in ((1, 0.80, 1.5), (8, 0.85, 4.0)):
        a = ours.level(n) if ours else None
        b = theirs.level(n) if theirs else None
        raw = report.raw_for(n)
        t.check(
            f"{n} client(s): >= {pct:.0%} of raw {n}-sequence decode",
            a.tokens_per_s / raw.tokens_per_s if a and raw and raw.tokens_per_s else None,
            pct,
            "{:.0%}",
        )
        t.check(
            f"{n} client(s): >= {times}x {THEIRS}",
            a.tokens_per_s / b.tokens_per_s if a and b and b.tokens_per_s else None,
            times,
            "{:.2f}x",
        )


def _llama_server_targets(report: CompareReport, t: _Targets) -> None:
    ours, llama = report.servers.get(OURS), report.servers.get(LLAMA_SERVER)
    if llama is None:
        return
    for n in report.config.levels:
        if n not in (1, 8, 16, 32):
            continue
        ratios = report.round_ratios(OURS, LLAMA_SERVER, n)
        if ratios:  # interleaved rounds: the median of the round-by-round ratios
            t.check(
                f"{n} client(s): >= 1.0x {LLAMA_SERVER} (median of {len(ratios)} rounds)",
                statistics.median(ratios),
                1.0,
                "{:.2f}x",
            )
            continue
        a, b = (ours.level(n) if ours else None), llama.level(n)
        t.check(
            f"{n} client(s): >= 1.0x {LLAMA_SERVER}",
            a.tokens_per_s / b.tokens_per_s if a and b and b.tokens_per_s else None,
            1.0,
            "{:.2f}x",
        )


def _ttft_16_target(report: CompareReport, t: _Targets) -> None:
    ours = report.servers.get(OURS)
    rounds8, rounds16 = report.round_ttfts(OURS, 8), report.round_ttfts(OURS, 16)
    if rounds8 and rounds16:  # interleaved rounds: their medians, as for tokens/s
        t.check(
            f"p50 TTFT at 16 clients <= 2x at 8 clients (medians of {report.config.rounds} rounds)",
            statistics.median(rounds16) / statistics.median(rounds8),
            2.0,
            "{:.2f}x",
            most=True,
        )
    elif ours is not None and ours.level(16) and ours.level(8):
        a8, a16 = ours.level(8), ours.level(16)
        t.check(
            "p50 TTFT at 16 clients <= 2x at 8 clients",
            a16.ttft_p50 / a8.ttft_p50 if a8.ttft_p50 and a16.ttft_p50 else None,  # type: ignore[union-attr]
            2.0,
            "{:.2f}x",
            most=True,
        )


def _grounded_targets(report: CompareReport, t: _Targets) -> None:
    ours = report.servers.get(OURS)
    if ours is None or not ours.grounded:
        return
    runs = {g.label: g for g in ours.grounded}
    on, off = runs.get("prompt lookup on"), runs.get("prompt lookup off")
    if not (on and off):
        return
    bound = report.lookup_bound
    t.check(
        "grounded workload: prompt lookup >= 1.8x tok/s of lookup off"
        + ("" if bound is None else f" (here, were every draft right: {bound:.2f}x)"),
        on.tokens_per_s / off.tokens_per_s if off.tokens_per_s else None,
        1.8,
        "{:.2f}x",
    )
    same = grounded_identical(report)
    t.out.append(
        (
            "grounded workload: greedy answers identical with lookup on and off",
            "-" if same is None else ("identical" if same else "differ"),
            same,
        )
    )


def _latency_and_memory_targets(report: CompareReport, t: _Targets) -> None:
    ours, theirs = report.servers.get(OURS), report.servers.get(THEIRS)
    one, eight = (ours.level(1), ours.level(8)) if ours else (None, None)
    t.check(
        "p50 TTFT at 8 clients <= 3x at 1 client",
        eight.ttft_p50 / one.ttft_p50
        if one and eight and one.ttft_p50 and eight.ttft_p50
        else None,
        3.0,
        "{:.2f}x",
        most=True,
    )
    p = ours.prefix if ours else None
    t.check(
        "2nd-turn TTFT >= 3x lower than cold (prefix reuse)",
        p.speedup if p else None,
        3.0,
        "{:.1f}x",
    )
    if p is not None:
        reused = [c or 0 for c in p.cached_tokens]
        ok = bool(reused) and all(
            c >= 0.9 * n for c, n in zip(reused, p.prompt_tokens, strict=False)
        )
        t.out.append(("cached_tokens reports the reused history", ", ".join(map(str, reused)), ok))
    rss_a = ours.level(8).peak_rss_mb if ours and ours.level(8) else None  # type: ignore[union-attr]
    rss_b = theirs.level(8).peak_rss_mb if theirs and theirs.level(8) else None  # type: ignore[union-attr]
    t.check(
        "peak RSS at 8 clients <= 1.5x llama-cpp-python's",
        rss_a / rss_b if rss_a and rss_b else None,
        1.5,
        "{:.2f}x",
        most=True,
    )


def targets(report: CompareReport) -> list[tuple[str, str, bool | None]]:
    """The performance targets: (what, measured, met?), None when not measured."""
    t = _Targets()
    _raw_and_llama_cpp_python_targets(report, t)
    _llama_server_targets(report, t)
    _ttft_16_target(report, t)
    _grounded_targets(report, t)
    _latency_and_memory_targets(report, t)
    return t.out


def targets_table(report: CompareReport) -> str:
    rows = ["| target | measured | met |", "|---|---:|---|"]
    for what, value, met in targets(report):
        rows.append(f"| {what} | {value} | {'-' if met is None else ('yes' if met else 'NO')} |")
    return "\n".join(rows)
