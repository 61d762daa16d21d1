"""The `gpt4all-api` command. Thin: every subcommand calls the library."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import click

from . import __version__
from .bench.command import bench
from .cli_models import models
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


@main.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--model", "default_model", help="Default model: a file name in the models folder.")
@click.option("--models-dir", type=click.Path(path_type=Path), help="Folder of .gguf models.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="The server's own data (stored responses)."
)
@click.option("--context-size", type=int, help="Context length of each slot, in tokens.")
@click.option("--threads", type=int, help="CPU threads for llama.cpp.")
@click.option("--parallel", type=int, help="Sequences decoded together (slots).")
@click.option("--batch-size", type=int, help="Most tokens per llama_decode step.")
@click.option("--prompt-batch-size", type=int, help="Prompt chunk per request per step.")
@click.option("--prompt-template", help="Default completions prompt template (%1 = prompt).")
@click.option("--catalog-url", help="The GPT4All catalog (models3.json) to use.")
@click.option("--max-loaded-models", type=int, help="Most models loaded at once (default 3).")
@click.option("--memory-budget", type=float, help="GiB of RAM loaded models may use (0: no limit).")
@click.option("--keep-alive", type=float, help="Seconds an idle model stays loaded (<0: forever).")
@click.option(
    "--strict-max-tokens/--clip-max-tokens",
    default=None,
    help="Refuse, or clip, a max_tokens that does not fit the context.",
)
@click.option("--log-level", help="debug, info, warning or error.")
@click.option(
    "--api-key", "api_keys", multiple=True, help="Require this API key (repeatable; API_KEYS)."
)
@click.option(
    "--cors-origins", multiple=True, help="Allow this browser origin by CORS (repeatable, or a,b)."
)
@click.option("--max-body-size", type=int, help="Largest request body, in bytes (default 1 MiB).")
@click.option("--max-queue", type=int, help="Requests waiting per model before 503 (0: no limit).")
@click.option("--max-tokens-limit", type=int, help="Most tokens one request may generate.")
@click.option("--request-timeout", type=float, help="Seconds a generation may take (0: no limit).")
@click.option("--max-messages", type=int, help="Most messages in one chat request.")
@click.option("--max-prompt-chars", type=int, help="Most characters of prompt in one request.")
@click.option("--shutdown-grace", type=float, help="Seconds running requests get after SIGTERM.")
def serve(**flags: Any) -> None:
    """Start the HTTP server."""
    import uvicorn
    from sse_starlette.sse import AppStatus

    from .app import create_app

    for name in ("api_keys", "cors_origins"):
        flags[name] = list(flags[name]) or None  # repeatable flags: not given -> environment
    settings = _settings(**flags)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        app = create_app(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    # On SIGTERM uvicorn stops accepting, lets running requests (streams too, rather than
    # sse-starlette cutting them at once) finish within the grace period, then re-raises the
    # signal once it is done: end with status 0 then.
    AppStatus.disable_automatic_graceful_drain()
    signal.signal(signal.SIGTERM, _exit_cleanly)
    click.echo(
        f"gpt4all-api on http://{settings.host}:{settings.port}/v1 "
        f"(default model: {app.state.server.default_model})",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app writes its own access line (with request id and tokens)
        timeout_graceful_shutdown=settings.shutdown_grace,
    )


main.add_command(models)
main.add_command(bench)


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
