"""The `gpt4all-api` command. Thin: every subcommand calls the library."""

from __future__ import annotations

import importlib.util
import logging
import signal
from pathlib import Path
from typing import Any

import click

from . import __version__, cli_threads  # cli_threads first: OpenMP's wait, before llama.cpp
from .bench.command import bench
from .cli_docs import docs
from .cli_models import models
from .cli_settings import settings_from_flags, settings_options
from .settings import Settings


def _settings(**overrides: Any) -> Settings:
    """Settings from flags that were given (None means: not given), then env, .env, defaults."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@click.group()
@click.version_option(__version__, prog_name="gpt4all-api")
def main() -> None:
    """An OpenAI-compatible API server over local GPT4All / GGUF models."""


@settings_options
@main.command()
def serve(**flags: Any) -> None:
    """Start the HTTP server.

    Every setting has a flag; one not given is read from its environment variable
    (GPT4ALL_API_<NAME>, or MODEL_PATH, DEFAULT_MODEL, API_KEYS), then `.env`, then the default.
    """
    import uvicorn

    from .app import create_app

    settings = settings_from_flags(flags)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger(__name__).debug(
        "OpenMP wait policy: %s", cli_threads.applied or "as inherited from the environment"
    )
    if settings.ray:
        _serve_on_ray(settings)
        return
    try:
        app = create_app(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    # On SIGTERM uvicorn stops accepting, lets running requests (streams too) finish within
    # the grace period, then re-raises the signal once it is done: end with status 0 then.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    loop, http = _http_stack()
    click.echo(
        f"gpt4all-api on http://{settings.host}:{settings.port}/v1 "
        f"(default model: {app.state.server.default_model}; event loop {loop}, HTTP {http})",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop=loop,
        http=http,
        log_level=settings.log_level,
        access_log=False,  # the app writes its own access line (with request id and tokens)
        timeout_graceful_shutdown=settings.shutdown_grace,
    )


def _http_stack() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (C, dependencies of the
    package; a fifth less of the event loop's CPU per streamed token, docs/performance.md)
    where they are installed, else asyncio's own loop and h11 (pure Python)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def _serve_on_ray(settings: Settings) -> None:
    """`serve --ray`: the same app as a Ray Serve deployment (docs/scale-out.md)."""
    import threading

    from .cluster.launch import serve_forever

    stop = threading.Event()
    click.echo(f"gpt4all-api on Ray Serve: http://{settings.host}:{settings.port}/v1", err=True)
    serve_forever(settings, stop)


@settings_options
@main.command("bench-affinity")
@click.option("--conversations", default=8, show_default=True, help="Conversations.")
@click.option("--concurrency", default=2, show_default=True, help="Requests at once.")
@click.option("--turns", default=4, show_default=True, help="Turns per conversation.")
@click.option("--history-tokens", default=1500, show_default=True, help="First-turn history.")
@click.option("--max-tokens", default=16, show_default=True, help="max_tokens of every turn.")
@click.option(
    "--routers", default="prefix,pow2", show_default=True, help="Routers to compare, in order."
)
def bench_affinity(
    conversations: int,
    concurrency: int,
    turns: int,
    history_tokens: int,
    max_tokens: int,
    routers: str,
    **flags: Any,
) -> None:
    """Prefix-affinity routing against Ray's default router on a Ray cluster: the share of later
    turns that reuse their KV cache and their time to first token (docs/scale-out.md).

    The server settings (--min-replicas, --threads, ...) say how each deployment is made."""
    from .bench.affinity import measure, table

    settings = settings_from_flags(flags)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = measure(
        settings,
        tuple(r.strip() for r in routers.split(",") if r.strip()),
        conversations=conversations,
        concurrency=concurrency,
        turns=turns,
        history_tokens=history_tokens,
        max_tokens=max_tokens,
    )
    click.echo(table(results))


main.add_command(models)
main.add_command(bench)
main.add_command(docs)


@main.command()
def devices() -> None:
    """The GPU backends llama.cpp was built with and the GPUs it sees, with their free memory;
    the CPU features it uses, and whether weights are repacked by default."""
    from .engine.devices import built_gpu_backends, cpu_features, gpu_devices, repack_by_default

    built = built_gpu_backends()
    click.echo(f"llama.cpp GPU backends built: {', '.join(built) if built else 'none (CPU only)'}")
    found = gpu_devices()
    for d in found:
        click.echo(
            f"{d.index}: {d.name} ({d.backend}) {d.description}: "
            f"{d.free / 2**30:.1f} GiB free of {d.total / 2**30:.1f} GiB"
        )
    if not found:
        click.echo("no GPU found: models run on the CPU")
    features = cpu_features()
    used = [name for name, on in features.items() if on == "1"]
    click.echo(f"CPU features llama.cpp uses: {' '.join(used) or 'none reported'}")
    click.echo(f"repack auto: {repack_by_default(features)[1]}")


@main.command()
@click.option("--model", help="Model to chat with (default: the server's default model).")
@click.option("--url", help="A running server, e.g. http://127.0.0.1:8000 (default: in-process).")
@click.option("--api-key", help="API key sent as 'Authorization: Bearer' to --url.")
@click.option("--system", help="System prompt.")
@click.option("--temperature", type=float, help="Sampling temperature.")
@click.option("--max-tokens", type=int, help="Most tokens per reply.")
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    help="Folder of .gguf models (in-process only).",
)
def chat(
    model: str | None,
    url: str | None,
    api_key: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    models_dir: Path | None,
) -> None:
    """Chat in the terminal, streaming replies. /reset starts over, /quit or Ctrl-D leaves.

    Without --url the model runs in this process (the first reply waits for it to load).
    """
    from .chat_cli import ChatClient, ChatError, ChatSession, LocalServer

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    params = {"temperature": temperature, "max_tokens": max_tokens}
    params = {k: v for k, v in params.items() if v is not None}
    local: LocalServer | None = None
    try:
        if url is None:
            settings = _settings(default_model=model, models_dir=models_dir, log_level="warning")
            local = LocalServer(settings)
            click.echo("loading the model...", err=True)
            local.start()
            url = local.url
        client = ChatClient(url, api_key=api_key)
        try:
            name = model or client.default_model()
            click.echo(f"chatting with {name} ({client.base_url}); /help for commands", err=True)
            ChatSession(client, model=model, system=system, params=params).run()
        finally:
            client.close()
    except (ChatError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if local is not None:
            local.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
