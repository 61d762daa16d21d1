"""`gpt4all-api docs ...`: LocalDocs collections from the command line.

Each command talks to a running server (`--url`) or, without one, serves the app in this
process (the data folder is the same one `serve` uses) and talks to that: both ways go through
the Files and Vector stores API, as any client would.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .localdocs.folder import DocsClient, DocsError, SyncReport, sync
from .settings import Settings


class Ctx:
    def __init__(self, url: str | None, api_key: str | None, settings: dict[str, Any]):
        self.url = url
        self.api_key = api_key
        self.settings = {k: v for k, v in settings.items() if v is not None}

    @contextlib.contextmanager
    def client(self) -> Iterator[DocsClient]:
        from .chat_cli import ChatError, LocalServer

        local = None
        url = self.url
        try:
            if url is None:
                local = LocalServer(Settings(log_level="warning", **self.settings))
                click.echo("starting the server in this process...", err=True)
                local.start()
                url = local.url
            with DocsClient(url, self.api_key) as client:
                yield client
        except (DocsError, ChatError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            if local is not None:
                local.stop()


@click.group()
@click.option("--url", help="A running server, e.g. http://127.0.0.1:8000 (default: in-process).")
@click.option("--api-key", help="API key sent as 'Authorization: Bearer' to --url.")
@click.option(
    "--models-dir", type=click.Path(path_type=Path), help="Folder of .gguf models (in-process)."
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="The server's data folder (in-process)."
)
@click.option("--embedding-model", help="Model that embeds new collections (in-process).")
@click.pass_context
def docs(
    ctx: click.Context,
    url: str | None,
    api_key: str | None,
    models_dir: Path | None,
    data_dir: Path | None,
    embedding_model: str | None,
) -> None:
    """LocalDocs collections: folders of documents to chat with, with their sources."""
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Ctx(
        url,
        api_key,
        {"models_dir": models_dir, "data_dir": data_dir, "embedding_model": embedding_model},
    )


def _progress() -> tuple[Any, Any]:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", desc="indexing", leave=False, disable=None)

    def update(counts: dict[str, int]) -> None:
        bar.total = counts["total"]
        bar.n = counts["total"] - counts["in_progress"]
        bar.refresh()

    return bar, update


def _sync(client: DocsClient, name: str, folder: Path, force: bool) -> SyncReport:
    bar, update = _progress()
    try:
        report = sync(client, name, folder, force=force, progress=update)
    finally:
        bar.close()
    parts = [
        f"{len(report.added)} added",
        f"{len(report.updated)} updated",
        f"{len(report.removed)} removed",
        f"{report.unchanged} unchanged",
    ]
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    click.echo(f"{name}: " + ", ".join(parts))
    for path, why in report.failed.items():
        click.echo(f"  failed: {path}: {why}", err=True)
    return report


@docs.command("add")
@click.argument("name")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--watch",
    type=float,
    metavar="SECONDS",
    help="Keep the collection current: look at the folder again every SECONDS until Ctrl-C.",
)
@click.pass_obj
def add(obj: Ctx, name: str, folder: Path, watch: float | None) -> None:
    """Index FOLDER as collection NAME (or bring it up to date: new, changed and removed files).

    Text, Markdown, reStructuredText, HTML, PDF and DOCX files are read, in subfolders too."""
    with obj.client() as client:
        _sync(client, name, folder, force=False)
        if watch is None:
            return
        click.echo(f"watching {folder} every {watch:g} s (Ctrl-C to stop)", err=True)
        try:
            while True:
                time.sleep(watch)
                report = sync(client, name, folder)
                if report.added or report.updated or report.removed:
                    click.echo(
                        f"{name}: {len(report.added)} added, {len(report.updated)} updated, "
                        f"{len(report.removed)} removed"
                    )
        except KeyboardInterrupt:
            pass


@docs.command("list")
@click.pass_obj
def list_collections(obj: Ctx) -> None:
    """Collections, their files and their folders."""
    with obj.client() as client:
        stores = client.collections()
        click.echo(f"{'NAME':<24} {'ID':<28} {'FILES':>5} {'FAILED':>6}  {'STATUS':<11} FOLDER")
        for s in stores:
            c = s["file_counts"]
            click.echo(
                f"{s.get('name') or '':<24} {s['id']:<28} {c['total']:>5} {c['failed']:>6}  "
                f"{s['status']:<11} {s['metadata'].get('folder', '')}"
            )


@docs.command("rm")
@click.argument("name")
@click.pass_obj
def remove(obj: Ctx, name: str) -> None:
    """Delete collection NAME and its indexed files (the folder is left alone)."""
    with obj.client() as client:
        store = client.collection(name)
        if store is None:
            raise click.ClickException(f"no collection named {name!r}")
        n = client.delete_collection(store)
        click.echo(f"removed {name} ({n} files)")


@docs.command("reindex")
@click.argument("name")
@click.option("--all", "force", is_flag=True, help="Index every file again, changed or not.")
@click.pass_obj
def reindex(obj: Ctx, name: str, force: bool) -> None:
    """Bring collection NAME up to date with its folder."""
    with obj.client() as client:
        store = client.collection(name)
        if store is None:
            raise click.ClickException(f"no collection named {name!r}")
        folder = store["metadata"].get("folder")
        if not folder:
            raise click.ClickException(f"{name} was not made from a folder")
        _sync(client, name, Path(folder), force=force)


@docs.command("search")
@click.argument("name")
@click.argument("query")
@click.option("-n", "--max-results", type=click.IntRange(1, 50), default=5, show_default=True)
@click.pass_obj
def search(obj: Ctx, name: str, query: str, max_results: int) -> None:
    """The chunks of collection NAME that best match QUERY, best first."""
    with obj.client() as client:
        store = client.collection(name)
        if store is None:
            raise click.ClickException(f"no collection named {name!r}")
        for hit in client.search(store["id"], query, max_results):
            path = hit["attributes"].get("path") or hit["filename"]
            text = " ".join(hit["content"][0]["text"].split())
            click.echo(f"{hit['score']:.3f}  {path}\n       {text[:300]}")
