"""The `gpt4all-api bench` command: parse flags, run, print Markdown, write JSON and the plot."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, get_args

import click

from ..engine.kv_types import DEFAULT_KV_TYPES, KV_TYPE_NAMES, FlashAttention


def _levels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of client counts, e.g. 1,2,4,8") from None
    if not levels or any(n < 1 for n in levels):
        raise click.BadParameter("client counts must be positive")
    return levels


@click.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8000/v1",
    show_default=True,
    help="Base URL of the OpenAI-compatible server to drive (loopback only).",
)
@click.option("--model", help="Model to ask for (default: the first one the server lists).")
@click.option("--api-key", help="Bearer key, when the server wants one.")
@click.option(
    "--levels",
    default="1,2,4,8,16",
    show_default=True,
    callback=_levels,
    help="Concurrent clients per level.",
)
@click.option("--requests-per-client", default=4, show_default=True, help="Requests per client.")
@click.option("--min-requests", default=8, show_default=True, help="Fewest requests per level.")
@click.option("--max-tokens", default=64, show_default=True, help="max_tokens of every request.")
@click.option(
    "--temperature",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 2.0),
    help="temperature of the levels' requests (above 0 with top_k 40, top_p 0.95, min_p 0.05 "
    "spelled out for every server); the grounded workload stays greedy.",
)
@click.option(
    "--time-limit",
    default=120.0,
    show_default=True,
    help="Seconds per level (no new request after).",
)
@click.option(
    "--prefix/--no-prefix", default=True, show_default=True, help="Prefix-reuse scenario."
)
@click.option("--prefix-tokens", default=1500, show_default=True, help="First-turn history size.")
@click.option("--prefix-reps", default=3, show_default=True, help="Cold/second-turn pairs.")
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GGUF whose tokenizer counts output tokens when a server sends no usage.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Start our server, llama-server (with --llama-server) and llama-cpp-python's one "
    "after the other in one run, plus raw decode.",
)
@click.option(
    "--llama-server",
    "llama_server",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --compare: llama.cpp's llama-server binary (scripts/build-llama-server builds it).",
)
@click.option(
    "--llama-server-arg",
    "llama_server_args",
    multiple=True,
    help="With --compare: an extra flag for llama-server (repeatable).",
)
@click.option(
    "--model-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --compare: the GGUF both servers load (default: the embedded model).",
)
@click.option("--threads", type=int, help="With --compare: CPU threads (default: all cores).")
@click.option(
    "--context-size", default=2048, show_default=True, help="With --compare: per sequence."
)
@click.option("--batch-size", default=512, show_default=True, help="With --compare: n_batch.")
@click.option(
    "--parallel",
    type=int,
    help="With --compare: slots of our server and llama-server (default: the top level).",
)
@click.option(
    "--kv-cache-type",
    type=click.Choice(KV_TYPE_NAMES),
    help="With --compare: K and V cache type of our server and llama-server "
    f"(default: {DEFAULT_KV_TYPES[0]} K, {DEFAULT_KV_TYPES[1]} V, as the server's).",
)
@click.option(
    "--kv-cache-type-k",
    type=click.Choice(KV_TYPE_NAMES),
    help="With --compare: the K cache type (llama-server's -ctk).",
)
@click.option(
    "--kv-cache-type-v",
    type=click.Choice(KV_TYPE_NAMES),
    help="With --compare: the V cache type (llama-server's -ctv).",
)
@click.option(
    "--flash-attention",
    type=click.Choice(get_args(FlashAttention)),
    default="auto",
    show_default=True,
    help="With --compare: flash attention in our server and llama-server (-fa).",
)
@click.option(
    "--server-arg",
    "server_args",
    multiple=True,
    help="With --compare: an extra flag for our server (repeatable), e.g. --server-arg=--x=1.",
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(["gpt4all-api", "llama-server", "llama-cpp-python"]),
    help="With --compare: start only this server (repeatable; raw decode still runs).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    help="With --compare: our server once more, as NAME=WORDS: KEY=VALUE words are its "
    "environment, the others serve flags (repeatable), e.g. 'passive=OMP_WAIT_POLICY=passive' "
    "or 't1=--threads 1'.",
)
@click.option(
    "--hog",
    default=0,
    show_default=True,
    help="With --compare: run every level again beside N busy-looping processes.",
)
@click.option(
    "--grounded-passes",
    default=1,
    show_default=True,
    help="With --compare: passes over the grounded prompts (1 client, greedy; 0: skip).",
)
@click.option(
    "--grounded-max-tokens",
    default=192,
    show_default=True,
    help="max_tokens of the grounded requests.",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --compare: record our server with py-spy (native, all threads) during one "
    "level into this directory.",
)
@click.option("--profile-level", type=int, help="The level to profile (default: the top one).")
@click.option(
    "--profile-format",
    type=click.Choice(["speedscope", "flamegraph", "raw"]),
    default="speedscope",
    show_default=True,
    help="py-spy's output format (flamegraph: SVG).",
)
@click.option("--raw-seqs", default="1,8", show_default=True, callback=_levels, help="Raw decode.")
@click.option(
    "--raw-reps", default=3, show_default=True, help="Raw decode repetitions (0: skip it)."
)
@click.option(
    "--rounds",
    default=0,
    show_default=True,
    help="With --compare: then run every level this many more times with all servers up, "
    "each server in turn (the order alternating), and give the ratios' medians.",
)
@click.option(
    "--engine-alone/--no-engine-alone",
    default=True,
    show_default=True,
    help="With --rounds: our engine in this process, without HTTP, takes its turn in every "
    "round too (what HTTP costs, against what the engine costs).",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results as JSON.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="With --compare: PNG.")
def bench(**o: Any) -> None:
    """Measure throughput and latency of an OpenAI-compatible server under concurrent load.

    Closed-loop clients send streamed chat requests (temperature 0 unless --temperature,
    repeat_penalty 1) at each
    concurrency level; each level reports output tokens/s, requests/s, time to first token and
    inter-token latency (p50/p95) and errors. Every level is bounded by its request count and
    --time-limit.
    """
    from ..engine.model import Model
    from ..library.store import embedded_model_path
    from . import report as rep
    from .config import LLAMA_SERVER, OURS, THEIRS, BenchConfig, TokenCounter, Variant
    from .runner import bench_url, first_model, run_compare
    from .servers import ServerOptions

    config = BenchConfig(
        levels=o["levels"],
        requests_per_client=o["requests_per_client"],
        min_requests=o["min_requests"],
        max_tokens=o["max_tokens"],
        temperature=o["temperature"],
        time_limit=o["time_limit"],
        prefix=o["prefix"],
        prefix_tokens=o["prefix_tokens"],
        prefix_reps=o["prefix_reps"],
        hog=o["hog"],
        grounded_passes=o["grounded_passes"] if o["compare"] else 0,
        grounded_max_tokens=o["grounded_max_tokens"],
        rounds=o["rounds"] if o["compare"] else 0,
    )

    def say(msg: str) -> None:
        click.echo(msg, err=True)

    if o["compare"]:
        model_path = o["model_file"] or embedded_model_path()
        if model_path is None:
            raise click.ClickException("no --model-file and no embedded model installed")
        options = ServerOptions(
            model_path=Path(model_path),
            threads=o["threads"] or os.cpu_count() or 1,
            context_size=o["context_size"],
            batch_size=o["batch_size"],
            parallel=o["parallel"] or max(o["levels"]),
            extra_args=tuple(o["server_args"]),
            kv_types=(
                o["kv_cache_type_k"] or o["kv_cache_type"] or DEFAULT_KV_TYPES[0],
                o["kv_cache_type_v"] or o["kv_cache_type"] or DEFAULT_KV_TYPES[1],
            ),
            flash_attention=o["flash_attention"],
            llama_server=o["llama_server"],
            llama_server_args=tuple(o["llama_server_args"]),
        )
        if o["only"]:
            names = tuple(n for n in (OURS, LLAMA_SERVER, THEIRS) if n in o["only"])
        else:
            names = (OURS, LLAMA_SERVER, THEIRS) if o["llama_server"] else (OURS, THEIRS)
        if LLAMA_SERVER in names and not o["llama_server"]:
            raise click.UsageError("--only llama-server needs --llama-server PATH")
        try:
            variants = tuple(Variant.parse(v) for v in o["variants"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--variant") from None
        try:
            result: Any = run_compare(
                config,
                options,
                raw_seqs=o["raw_seqs"],
                raw_reps=o["raw_reps"],
                servers=names,
                variants=variants,
                profile_dir=o["profile_dir"],
                profile_level=o["profile_level"],
                profile_format=o["profile_format"],
                progress=say,
                engine_alone=o["engine_alone"],
            )
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(rep.compare_text(result))
        if o["plot_path"]:
            rep.plot(result, o["plot_path"])
            say(f"plot written to {o['plot_path']}")
    else:
        url = o["url"].rstrip("/")
        try:
            model = o["model"] or first_model(url, o["api_key"])
        except Exception as exc:
            raise click.ClickException(f"could not list the models at {url}: {exc}") from exc
        counter = TokenCounter(Model.load(o["tokenizer"])) if o["tokenizer"] else None
        try:
            result = asyncio.run(
                bench_url(url, model, config, counter=counter, api_key=o["api_key"], progress=say)
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            if counter is not None:
                counter.model.close()
        click.echo(rep.server_text(result))
    if o["json_path"]:
        o["json_path"].write_text(json.dumps(rep.to_json(result), indent=2) + "\n")
        say(f"results written to {o['json_path']}")
