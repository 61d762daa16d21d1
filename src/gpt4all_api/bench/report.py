"""The benchmark's output: Markdown tables, the targets check, JSON and the plot."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from .config import LLAMA_SERVER, OURS, THEIRS
from .inproc import ENGINE_ALONE
from .runner import CompareReport, ServerReport
from .stats import LevelResult, cpu_ms_per_token
from .targets import targets, targets_table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def levels_table(report: ServerReport, levels: list[LevelResult] | None = None) -> str:
    """One row per concurrency level (`levels`: another set of them, e.g. beside the hog)."""
    rows = [
        "| clients | requests | errors | output tok/s | req/s | TTFT p50 ms | TTFT p95 ms "
        "| ITL p50 ms | ITL p95 ms | peak RSS MB | server CPU ms/token "
        "| of it outside the decode threads |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in report.levels if levels is None else levels:
        rss = f"{lv.peak_rss_mb:.0f}" if lv.peak_rss_mb else "-"
        cpu = cpu_ms_per_token(lv)
        other = cpu_ms_per_token(lv, outside_decode=True)
        rows.append(
            f"| {lv.concurrency} | {lv.requests} | {lv.errors} | {lv.tokens_per_s:.1f} "
            f"| {lv.requests_per_s:.2f} | {_ms(lv.ttft_p50)} | {_ms(lv.ttft_p95)} "
            f"| {_ms(lv.itl_p50)} | {_ms(lv.itl_p95)} | {rss} "
            f"| {'-' if cpu is None else f'{cpu:.1f}'} "
            f"| {'-' if other is None else f'{other:.2f}'} |"
        )
    return "\n".join(rows)


def prefix_table(reports: list[ServerReport]) -> str:
    rows = [
        "| server | history tokens | cached tokens (2nd turn) | cold TTFT p50 ms "
        "| 2nd-turn TTFT p50 ms | speed-up |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in reports:
        p = r.prefix
        if p is None:
            continue
        cached = ", ".join("n/a" if c is None else str(c) for c in p.cached_tokens)
        hist = ", ".join(str(n) for n in p.prompt_tokens)
        rows.append(
            f"| {r.name} | {hist} | {cached} | {_ms(p.ttft_p50('cold'))} "
            f"| {_ms(p.ttft_p50('warm'))} | {p.speedup or 0:.1f}x |"
        )
    return "\n".join(rows)


def server_text(report: ServerReport) -> str:
    lv0 = report.levels[0] if report.levels else None
    source = lv0.token_source if lv0 else "-"
    parts = [
        f"## {report.name} at {report.base_url} (model {report.model}; tokens from {source})",
        "",
        levels_table(report),
    ]
    if report.hog_levels:
        parts += ["", "Beside the CPU hog:", "", levels_table(report, report.hog_levels)]
    if report.prefix is not None:
        parts += ["", prefix_table([report])]
    return "\n".join(parts)


def reference(report: CompareReport) -> str | None:
    """The server the ratio column divides by: llama-server when it ran, else llama-cpp-python."""
    for name in (LLAMA_SERVER, THEIRS):
        if name in report.servers:
            return name
    return None


def compare_table(report: CompareReport) -> str:
    """Every server at every level, in one table, with tok/s as a ratio to the reference."""
    ref_name = reference(report)
    ref = report.servers.get(ref_name) if ref_name else None
    rows = [
        f"| clients | server | output tok/s | ÷ {ref_name or '-'} | TTFT p50 ms | TTFT p95 ms "
        "| ITL p50 ms | peak RSS MB | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report.config.levels:
        b = ref.level(c) if ref else None
        for name, srv in report.servers.items():
            a = srv.level(c)
            if a is None:
                continue
            rss = f"{a.peak_rss_mb:.0f}" if a.peak_rss_mb else "-"
            rows.append(
                f"| {c} | {name} | {_tps(a)} | {_ratio(_v(a), _v(b))} | {_ms(a.ttft_p50)} "
                f"| {_ms(a.ttft_p95)} | {_ms(a.itl_p50)} | {rss} | {a.errors} |"
            )
    return "\n".join(rows)


def rounds_table(report: CompareReport) -> str:
    """Tokens/s of every server in each interleaved round, their median, and the median of the
    round-by-round ratios to the reference."""
    ref_name = reference(report)
    n = report.config.rounds
    rows = [
        f"| clients | server | tok/s, rounds 1-{n} | median tok/s | ÷ {ref_name or '-'}, "
        "median of rounds (min-max) | TTFT p50 ms, median |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for c in report.config.levels:
        for name, by_level in report.interleaved.items():
            runs = by_level.get(c, [])
            if not runs:
                continue
            tps = [lv.tokens_per_s for lv in runs]
            ratios = report.round_ratios(name, ref_name, c) if ref_name else []
            spread = (
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                if ratios and name != ref_name
                else "-"
            )
            ttft = report.round_ttfts(name, c)
            rows.append(
                f"| {c} | {name} | {', '.join(f'{x:.1f}' for x in tps)} "
                f"| {statistics.median(tps):.1f} | {spread} "
                f"| {_ms(statistics.median(ttft)) if ttft else '-'} |"
            )
    return "\n".join(rows)


def http_cost_lines(report: CompareReport) -> list[str]:
    """Our server over our engine alone (no HTTP) and the engine over llama-server, median of
    the round-by-round ratios at every level: what HTTP costs us, and what the engine does."""
    if ENGINE_ALONE not in report.interleaved or OURS not in report.interleaved:
        return []
    ref_name = reference(report)
    parts = []
    for c in report.config.levels:
        http = report.round_ratios(OURS, ENGINE_ALONE, c)
        if not http:
            continue
        line = f"{c} client(s): server ÷ engine alone {statistics.median(http):.2f}x"
        alone = report.round_ratios(ENGINE_ALONE, ref_name, c) if ref_name else []
        if alone:
            line += f", engine alone ÷ {ref_name} {statistics.median(alone):.2f}x"
        parts.append(f"- {line}")
    if not parts:
        return []
    return ["What HTTP costs (medians of the round-by-round ratios):", "", *parts, ""]


def peak_rss_table(report: CompareReport) -> str:
    rows = ["| server | peak RSS MB (all levels) |", "|---|---:|"]
    for name, srv in report.servers.items():
        rows.append(f"| {name} | {'-' if not srv.peak_rss_mb else f'{srv.peak_rss_mb:.0f}'} |")
    return "\n".join(rows)


def hog_table(report: CompareReport) -> str:
    """Every level idle and beside the CPU hog: what each server keeps of its throughput."""
    rows = [
        f"| clients | server | idle tok/s | beside {report.config.hog} hog(s) tok/s | kept "
        "| idle TTFT p50 ms | hog TTFT p50 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in report.config.levels:
        for name, srv in report.servers.items():
            a, h = srv.level(c), srv.hog_level(c)
            if a is None or h is None:
                continue
            kept = f"{100 * h.tokens_per_s / a.tokens_per_s:.0f}%" if a.tokens_per_s else "-"
            rows.append(
                f"| {c} | {name} | {_tps(a)} | {_tps(h)} | {kept} | {_ms(a.ttft_p50)} "
                f"| {_ms(h.ttft_p50)} |"
            )
    return "\n".join(rows)


def grounded_table(report: CompareReport) -> str:
    """The grounded workload: every server and setting, speed-up over our prompt lookup off."""
    ref_name = reference(report)
    base = (
        next(
            (g for g in report.servers[OURS].grounded if g.label == "prompt lookup off"),
            None,
        )
        if OURS in report.servers
        else None
    )
    ref = next(iter(report.servers[ref_name].grounded), None) if ref_name else None
    rows = [
        "| server | setting | requests | errors | output tokens | output tok/s "
        f"| ÷ {OURS} lookup off | ÷ {ref_name or '-'} | pass 1 / later passes tok/s "
        "| decode tok/s | TTFT p50 ms | drafted | accepted | acceptance |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, srv in report.servers.items():
        for g in srv.grounded:
            ok = len(g.records) - g.errors
            drafted = "-" if g.drafted is None else f"{g.drafted:.0f}"
            accepted = "-" if g.accepted is None else f"{g.accepted:.0f}"
            acc = "-" if g.acceptance is None else f"{g.acceptance:.0%}"
            dec = g.decode_tokens_per_s
            first, later = g.pass_tokens_per_s()
            passes = " / ".join("-" if x is None else f"{x:.1f}" for x in (first, later))
            rows.append(
                f"| {name} | {g.label} | {ok} | {g.errors} | {g.tokens} | {g.tokens_per_s:.1f} "
                f"| {_ratio(g.tokens_per_s, base.tokens_per_s if base else None)} "
                f"| {_ratio(g.tokens_per_s, ref.tokens_per_s if ref else None)} | {passes} "
                f"| {'-' if dec is None else f'{dec:.1f}'} "
                f"| {_ms(g.ttft_p50)} | {drafted} | {accepted} | {acc} |"
            )
    return "\n".join(rows)


def step_cost_table(report: CompareReport) -> str:
    """What a step of k tokens of one sequence costs: prompt-lookup speculation's ceiling."""
    rows = [
        "| tokens in one step (1 + drafts) | llama_decode ms | in single-token steps "
        "| speed-up if every draft were accepted |",
        "|---:|---:|---:|---:|",
    ]
    for c in report.step_costs:
        rows.append(f"| {c.tokens} | {c.ms:.1f} | {c.steps:.2f} | {c.ceiling:.2f}x |")
    return "\n".join(rows)


def _v(lv: LevelResult | None) -> float | None:
    return lv.tokens_per_s if lv else None


def _tps(lv: LevelResult | None) -> str:
    return "-" if lv is None else f"{lv.tokens_per_s:.1f}"


def raw_table(report: CompareReport) -> str:
    ours = report.servers.get(OURS)
    rows = [
        f"| sequences | raw decode tok/s (runs) | raw prefill + decode tok/s "
        f"| {OURS} tok/s at as many clients | of raw decode | of raw prefill + decode "
        f"| raw CPU ms/token | {OURS} CPU ms/token |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for raw in report.raw:
        lv = ours.level(raw.n_seq) if ours else None
        runs = ", ".join(f"{x:.0f}" for x in raw.runs_tokens_per_s)
        pct = f"{100 * lv.tokens_per_s / raw.tokens_per_s:.0f}%" if lv and raw.tokens_per_s else "-"
        full = raw.with_prefill_tokens_per_s
        pct_full = f"{100 * lv.tokens_per_s / full:.0f}%" if lv and full else "-"
        raw_cpu, our_cpu = raw.cpu_ms_per_token, cpu_ms_per_token(lv) if lv else None
        rows.append(
            f"| {raw.n_seq} | {raw.tokens_per_s:.1f} ({runs}) | {full:.1f} | {_tps(lv)} | {pct} "
            f"| {pct_full} "
            f"| {'-' if raw_cpu is None else f'{raw_cpu:.1f}'} "
            f"| {'-' if our_cpu is None else f'{our_cpu:.1f}'} |"
        )
    return "\n".join(rows)


def lookup_bounds_text(report: CompareReport) -> list[str]:
    """The step costs of one sequence and what they bound prompt lookup to, as report lines."""
    parts: list[str] = []
    if report.step_costs:
        parts += [
            f"One sequence with {report.step_costs_context or 'a chat prompt of'} tokens in its "
            "KV (as many as a grounded answer's token has before it, on average), raw "
            "`llama_decode` (no HTTP): a step that verifies k - 1 drafted tokens costs this many "
            "single-token steps, which bounds what prompt lookup can gain at one client on this "
            "machine.",
            "",
            step_cost_table(report),
            "",
        ]
    if report.lookup_bound is not None:
        parts += [
            "Were every draft right (at each step the longest span of its own context that our "
            "greedy answer goes on with, as much of it as pays), prompt lookup would make these "
            f"answers {report.lookup_bound:.2f}x faster than plain decoding.",
            "",
        ]
    if report.guess_bound:
        passes = " / ".join(f"{x:.2f}x" for x in report.guess_bound)
        parts += [
            "With our own lookup's guesses instead (its n-gram index and shared table, the passes "
            "as run), each cut exactly where it goes wrong: "
            f"{passes} (pass 1{' / later' if len(report.guess_bound) > 1 else ''}); "
            "what knowing where a guess goes wrong would give.",
            "",
        ]
    if report.plan_bound:
        passes = " / ".join(f"{x:.2f}x" for x in report.plan_bound)
        parts += [
            "With the engine's own choice of how much of each guess to draft (its odds learned as "
            f"the engine learns them, steps costing what was measured): {passes}; what the default "
            "gives without the noise of a timed run.",
            "",
        ]
    return parts


def compare_text(report: CompareReport) -> str:
    m = report.machine
    o = report.options
    parts = [
        f"# Benchmark {report.started}, {report.duration_s:.0f} s",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['system']}; Python {m['python']}, "
        f"llama-cpp-python {m['llama_cpp_python']}; load average at start "
        f"{', '.join(map(str, m['load_average_at_start']))}.",
        f"Model {o.model_path.name}; {o.threads} threads; context {o.context_size} per sequence; "
        f"batch {o.batch_size}; parallel slots {o.parallel} (ours and llama-server); KV cache "
        f"K {o.kv_types[0]}, V {o.kv_types[1]}; flash attention {o.flash_attention}; chat, "
        f"max_tokens {report.config.max_tokens}, temperature {report.config.temperature:g}, "
        "repeat_penalty 1; output tokens counted with the model's tokenizer for every server.",
        "",
        "## Side by side",
        "",
        compare_table(report),
        "",
        peak_rss_table(report),
        "",
    ]
    if report.interleaved:
        parts += [
            f"## Interleaved rounds ({report.config.rounds}: every server up, each level run "
            "by each server in turn, the order alternating)",
            "",
            rounds_table(report),
            "",
            *http_cost_lines(report),
        ]
    if any(srv.grounded for srv in report.servers.values()):
        parts += [
            f"## Grounded workload (1 client, greedy, max_tokens "
            f"{report.config.grounded_max_tokens}, {report.config.grounded_passes} pass(es) "
            "over the prompts)",
            "",
            grounded_table(report),
            "",
        ]
    parts += lookup_bounds_text(report)
    if report.config.hog > 0:
        parts += [
            f"## Beside a CPU hog ({report.config.hog} busy-looping processes)",
            "",
            hog_table(report),
            "",
        ]
    if report.raw:
        parts += ["## Raw batched decode (no HTTP) against our server", "", raw_table(report), ""]
    profiles = [p for srv in report.servers.values() for p in srv.profiles]
    if profiles:
        parts += ["Profiles (py-spy): " + ", ".join(profiles), ""]
    for r in report.servers.values():
        parts += [server_text(r), ""]
    parts += ["## Targets", "", targets_table(report), ""]
    return "\n".join(parts)


def to_json(obj: Any) -> Any:
    """Plain data for `--json`: dataclasses as dicts, paths as strings, records summarised."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if hasattr(obj, "speedup"):  # the prefix scenario: add its summary
            out |= {
                "cold_ttft_p50": obj.ttft_p50("cold"),
                "warm_ttft_p50": obj.ttft_p50("warm"),
                "speedup": obj.speedup,
            }
        if hasattr(obj, "tokens_per_s") and hasattr(obj, "n_seq"):
            out["tokens_per_s"] = obj.tokens_per_s
            out["cpu_ms_per_token"] = obj.cpu_ms_per_token
            out["with_prefill_tokens_per_s"] = obj.with_prefill_tokens_per_s
        if isinstance(obj, CompareReport):
            out["targets"] = [{"target": t, "measured": v, "met": m} for t, v, m in targets(obj)]
        return out
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def plot(report: CompareReport, path: Path) -> None:
    """Tokens/s and p50 TTFT against concurrency for both servers, raw ceilings as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    styles = {OURS: "o-", THEIRS: "s--", LLAMA_SERVER: "d-."}
    for name, r in report.servers.items():
        style = styles.get(name, "x:")
        xs = [lv.concurrency for lv in r.levels]
        ax1.plot(xs, [lv.tokens_per_s for lv in r.levels], style, label=name)
        ax2.plot(xs, [(lv.ttft_p50 or 0) * 1000 for lv in r.levels], style, label=name)
    if report.raw:
        ax1.plot(
            [r.n_seq for r in report.raw],
            [r.tokens_per_s for r in report.raw],
            "k^",
            label="raw batched decode",
        )
    ax1.set(xlabel="concurrent clients", ylabel="output tokens/s", title="Aggregate throughput")
    ax2.set(xlabel="concurrent clients", ylabel="ms", title="Time to first token (p50)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(report.config.levels), [str(c) for c in report.config.levels])
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
