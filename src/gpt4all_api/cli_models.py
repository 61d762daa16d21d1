"""`gpt4all-api models ...`: the models folder and the GPT4All catalog from the command line.

These commands work on the models folder directly (no server needed). A pull that is interrupted
(Ctrl-C, a dropped connection, a closed laptop) resumes where it stopped when run again.
"""

from __future__ import annotations

import datetime
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import click

from .errors import APIError
from .library.catalog import Catalog, CatalogEntry, catalog_from
from .library.download import DownloadCancelled, fetch_model, human, partial_path
from .library.store import ModelStore, check_name
from .settings import Settings


class Ctx:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.catalog: Catalog = catalog_from(settings)
        self.store = ModelStore(settings.models_dir, catalog=self.catalog)


def _fail(exc: APIError) -> click.ClickException:
    return click.ClickException(exc.message)


@click.group()
@click.option("--models-dir", type=click.Path(path_type=Path), help="Folder of .gguf models.")
@click.option("--catalog-url", help="The models3.json catalog to use.")
@click.pass_context
def models(ctx: click.Context, models_dir: Path | None, catalog_url: str | None) -> None:
    """List, download, inspect and delete models."""
    overrides: dict[str, Any] = {"models_dir": models_dir, "catalog_url": catalog_url}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
    ctx.obj = Ctx(settings)


@models.command("list")
@click.pass_obj
def list_models(obj: Ctx) -> None:
    """Models on disk (the models folder and the embedded model)."""
    found = obj.store.list()
    snap = obj.catalog.cached()
    click.echo(f"{'MODEL':<48} {'SIZE':>9}  CATALOG NAME")
    for m in found:
        known = snap.by_filename(m.id)
        note = known.name if known else ("(embedded default)" if m.embedded else "")
        click.echo(f"{m.id:<48} {human(m.size):>9}  {note}")
    click.echo(f"\n{len(found)} model(s); folder: {obj.settings.models_dir}")


@models.command("catalog")
@click.option("--refresh", is_flag=True, help="Fetch the catalog now, even if the cache is fresh.")
@click.pass_obj
def catalog(obj: Ctx, refresh: bool) -> None:
    """Models of the GPT4All catalog that can be downloaded."""
    snap = obj.catalog.get(refresh=refresh)
    if snap.offline:
        when = (
            datetime.datetime.fromtimestamp(snap.fetched_at).isoformat(" ", "minutes")
            if snap.fetched_at
            else "never"
        )
        click.echo(f"offline: {snap.error}\nshowing the cached catalog (fetched: {when})", err=True)
    local = {m.id for m in obj.store.list()}
    click.echo(f"{'NAME':<36} {'FILE':<48} {'SIZE':>9} {'RAM':>5}  INSTALLED")
    for e in snap.entries:
        size = human(e.filesize) if e.filesize is not None else "?"
        ram = f"{e.ramrequired} GB" if e.ramrequired else "?"
        mark = "yes" if e.filename in local else ""
        click.echo(f"{e.name[:36]:<36} {e.filename[:48]:<48} {size:>9} {ram:>5}  {mark}")
    if not snap.entries:
        click.echo("(the catalog is empty)")


def _entry(obj: Ctx, name: str) -> CatalogEntry:
    try:
        check_name(name)
    except APIError as exc:
        raise _fail(exc) from None
    snap = obj.catalog.get()
    entry = snap.find(name)
    if entry is None:
        where = " (offline: only the cached catalog was searched)" if snap.offline else ""
        raise click.ClickException(f"{name!r} is not in the catalog{where}")
    return entry


@models.command()
@click.argument("name")
@click.option(
    "--ray",
    "on_ray",
    is_flag=True,
    help="Pull into the models folder of every node of the Ray cluster (GPT4ALL_API_RAY_ADDRESS; "
    "default: a local Ray).",
)
@click.pass_obj
def pull(obj: Ctx, name: str, on_ray: bool) -> None:
    """Download NAME (catalog name or file name), verified; resumes an interrupted pull."""
    entry = _entry(obj, name)
    models_dir = obj.settings.models_dir
    if on_ray:
        from .cluster.pull import pull_on_every_node

        try:
            for node, outcome in pull_on_every_node(obj.settings, entry):
                click.echo(f"{node}: {outcome}")
        except Exception as exc:
            raise click.ClickException(f"the pull failed on a node: {exc}") from None
        return
    if (models_dir / entry.filename).is_file():
        click.echo(f"{entry.filename} is already installed in {models_dir}")
        return
    from tqdm import tqdm

    partial = partial_path(models_dir, entry.filename)
    have = partial.stat().st_size if partial.is_file() else 0
    if have:
        click.echo(f"resuming {entry.filename} from {human(have)}")
    bar = tqdm(
        total=entry.filesize,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        desc=entry.filename[:40],
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def progress(status: str, completed: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        if status == "verifying":
            bar.set_description_str("verifying")
        bar.update(completed - bar.n)

    cancel = threading.Event()
    try:
        path = fetch_model(
            entry,
            models_dir,
            on_progress=progress,
            cancel=cancel,
            reserve=obj.settings.download_reserve,
        )
    except KeyboardInterrupt:
        bar.close()
        kept = partial.stat().st_size if partial.is_file() else 0
        raise click.ClickException(
            f"interrupted: {human(kept)} kept in {partial}; run the same command to resume"
        ) from None
    except DownloadCancelled:
        bar.close()
        raise click.ClickException("the download was stopped") from None
    except APIError as exc:
        bar.close()
        raise _fail(exc) from None
    bar.close()
    click.echo(f"{entry.filename} is ready: {path}")


@models.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def rm(obj: Ctx, name: str, yes: bool) -> None:
    """Delete model NAME (or its partial download) from the models folder."""
    try:
        local = obj.store.find(name)
    except APIError as exc:
        raise _fail(exc) from None
    if local is None:
        entry = obj.catalog.cached().find(name)
        partial = partial_path(obj.settings.models_dir, entry.filename) if entry else None
        if partial is None or not partial.is_file():
            raise click.ClickException(f"no model {name!r} in {obj.settings.models_dir}")
        target = partial
    elif local.embedded:
        raise click.ClickException(
            f"{local.id} is the embedded default model; it cannot be deleted"
        )
    else:
        target = local.path
    if not yes:
        click.confirm(f"delete {target}?", abort=True)
    target.unlink()
    click.echo(f"deleted {target}")


@models.command()
@click.argument("name")
@click.pass_obj
def show(obj: Ctx, name: str) -> None:
    """Details of NAME: where it is on disk and what the catalog says about it."""
    try:
        local = obj.store.find(name)
    except APIError as exc:
        raise _fail(exc) from None
    snap = obj.catalog.cached() if local is not None else obj.catalog.get()
    entry = snap.find(name) or (snap.by_filename(local.id) if local else None)
    if local is None and entry is None:
        raise click.ClickException(f"no model {name!r} on disk or in the catalog")
    rows: list[tuple[str, Any]] = []
    if local is not None:
        rows += [("file", local.id), ("path", local.path), ("size", human(local.size))]
        rows.append(("embedded", "yes" if local.embedded else "no"))
    else:
        partial = partial_path(obj.settings.models_dir, entry.filename)  # type: ignore[union-attr]
        state = f"partial, {human(partial.stat().st_size)}" if partial.is_file() else "no"
        rows.append(("installed", state))
    if entry is not None:
        rows += [
            ("name", entry.name),
            ("url", entry.url),
            ("filesize", human(entry.filesize) if entry.filesize is not None else None),
            ("ram required", f"{entry.ramrequired} GB" if entry.ramrequired else None),
            ("parameters", entry.parameters),
            ("quant", entry.quant),
            ("type", entry.type),
            ("sha256", entry.sha256sum),
            ("md5", entry.md5sum),
            ("prompt template", entry.prompt_template),
            ("system prompt", entry.system_prompt or entry.system_message),
            ("description", entry.description),
        ]
    for key, value in rows:
        if value not in (None, ""):
            click.echo(f"{key + ':':<17}{value}")
