"""A folder kept as a LocalDocs collection: a vector store named after the collection, holding
one uploaded file per document of the folder. `sync` compares the folder with the store (each
file's relative path and size/modification time are kept as its attributes) and uploads what is
new or changed, and removes what is gone. It speaks the server's HTTP API, so it works the same
against a running server and against one started in this process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .ingest import SUFFIXES


class DocsError(Exception):
    """The server refused a request or could not be reached."""


@dataclass
class SyncReport:
    store_id: str = ""
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> why
    unchanged: int = 0


def documents(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every document in the folder a collection can read (hidden
    files and folders left out)."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            yield rel.as_posix(), path


def signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class DocsClient:
    """The Files and Vector stores API of a server, for collections."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 300.0):
        from ..chat_cli import api_base

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=api_base(base_url), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DocsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise DocsError(f"cannot reach {self.http.base_url}: {exc}") from exc
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            raise DocsError(f"{r.status_code}: {message}")
        return r.json()

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            query = {"limit": 100, "order": "asc", **params}
            if after:
                query["after"] = after
            page = self.call("GET", path, params=query)
            yield from page["data"]
            if not page.get("has_more"):
                return
            after = page["last_id"]

    def collections(self) -> list[dict[str, Any]]:
        return list(self.pages("/vector_stores"))

    def collection(self, name: str) -> dict[str, Any] | None:
        for store in self.collections():
            if store.get("name") == name or store["id"] == name:
                return store
        return None

    def store_files(self, store_id: str) -> list[dict[str, Any]]:
        return list(self.pages(f"/vector_stores/{store_id}/files"))

    def upload(self, path: Path) -> str:
        with path.open("rb") as f:
            body = self.call(
                "POST", "/files", files={"file": (path.name, f)}, data={"purpose": "assistants"}
            )
        return str(body["id"])

    def remove(self, store_id: str, file_id: str) -> None:
        """A file out of the store, and its upload deleted."""
        self.call("DELETE", f"/vector_stores/{store_id}/files/{file_id}")
        self.call("DELETE", f"/files/{file_id}")

    def delete_collection(self, store: dict[str, Any]) -> int:
        """The store and the files uploaded into it; the number of files."""
        files = self.store_files(store["id"])
        for f in files:
            self.remove(store["id"], f["id"])
        self.call("DELETE", f"/vector_stores/{store['id']}")
        return len(files)

    def search(self, store_id: str, query: str, limit: int) -> list[dict[str, Any]]:
        body = {"query": query, "max_num_results": limit}
        return list(self.call("POST", f"/vector_stores/{store_id}/search", json=body)["data"])

    def wait(
        self, store_id: str, progress: Callable[[dict[str, int]], None] | None = None
    ) -> dict[str, Any]:
        """Poll until nothing of the store is in progress; the store."""
        while True:
            store = self.call("GET", f"/vector_stores/{store_id}")
            if progress is not None:
                progress(store["file_counts"])
            if store["file_counts"]["in_progress"] == 0:
                return store
            time.sleep(0.25)


def sync(
    client: DocsClient,
    name: str,
    folder: Path,
    *,
    force: bool = False,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> SyncReport:
    """Make collection `name` hold the documents of `folder` (created when missing); `force`
    indexes every file again."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise DocsError(f"{folder} is not a folder")
    store = client.collection(name)
    if store is None:
        store = client.call(
            "POST", "/vector_stores", json={"name": name, "metadata": {"folder": str(folder)}}
        )
    elif store["metadata"].get("folder") != str(folder):
        client.call(
            "POST",
            f"/vector_stores/{store['id']}",
            json={"metadata": {**store["metadata"], "folder": str(folder)}},
        )
    report = SyncReport(store_id=store["id"])
    held = {f["attributes"].get("path"): f for f in client.store_files(store["id"])}
    seen: set[str] = set()
    for rel, path in documents(folder):
        seen.add(rel)
        sig = signature(path)
        old = held.get(rel)
        if old is not None and old["attributes"].get("signature") == sig and not force:
            report.unchanged += 1
            continue
        file_id = client.upload(path)
        client.call(
            "POST",
            f"/vector_stores/{store['id']}/files",
            json={"file_id": file_id, "attributes": {"path": rel, "signature": sig}},
        )
        if old is not None:
            client.remove(store["id"], old["id"])
            report.updated.append(rel)
        else:
            report.added.append(rel)
    for rel, old in held.items():
        if rel not in seen:
            client.remove(store["id"], old["id"])
            report.removed.append(str(rel))
    client.wait(store["id"], progress)
    for f in client.store_files(store["id"]):
        if f["status"] == "failed":
            error = f.get("last_error") or {}
            report.failed[f["attributes"].get("path", f["id"])] = error.get("message", "failed")
    return report
