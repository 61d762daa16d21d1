"""`gpt4all-api models pull NAME --ray`: the same verified download, run as a Ray task pinned to
every alive node of the cluster, into that node's models folder (the same path on each). With
a models folder on shared storage, pull once without `--ray` instead: every node sees it."""

from __future__ import annotations

from pathlib import Path

from ..library.catalog import CatalogEntry
from ..settings import Settings
from .launch import connect


def _fetch(entry: CatalogEntry, models_dir: Path, reserve: int) -> str:
    from ..library.download import fetch_model

    if (models_dir / entry.filename).is_file():
        return f"already installed: {models_dir / entry.filename}"
    return f"downloaded: {fetch_model(entry, models_dir, reserve=reserve)}"


def pull_on_every_node(settings: Settings, entry: CatalogEntry) -> list[tuple[str, str]]:
    """(node address, what happened there) for every alive node; a node that failed raises."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    connect(settings, log_to_driver=False)
    fetch = ray.remote(num_cpus=0)(_fetch)
    calls = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ref = fetch.options(scheduling_strategy=where).remote(
            entry, settings.models_dir, settings.download_reserve
        )
        calls.append((node.get("NodeManagerAddress", node["NodeID"]), ref))
    return [(address, ray.get(ref)) for address, ref in calls]
