"""What the LocalDocs routes and the dialects call: uploads, vector stores, background
indexing, embeddings and retrieval. One `LocalDocs` per server, built by the app factory; its
database is opened on first use (or at startup when one exists, to finish indexing that a
restart interrupted)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import APIError, InvalidRequest, NotFound
from . import chunk as chunking
from . import search as searching
from .filters import matches
from .index import Index
from .ingest import UnreadableFile, parse

if TYPE_CHECKING:
    from ..state import ServerState
    from .index_pg import PostgresIndex

log = logging.getLogger(__name__)

EMBED_BATCH = 16
NOMIC = "nomic-embed-text"
CLAIM_LEASE = 600.0  # seconds another replica waits before taking over a file being indexed


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def safe_filename(name: str | None) -> str:
    """A file name without folders, control characters or leading dots; at most 255 bytes."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip()
    while len(name.encode("utf-8")) > 255:
        name = name[:-1]
    return name or "upload"


@dataclass(frozen=True)
class Result:
    """A retrieved chunk with what the dialects show of it."""

    hit: searching.Hit
    filename: str
    attributes: dict[str, Any]
    title: str | None
    author: str | None
    date: str | None

    @property
    def file_id(self) -> str:
        return self.hit.chunk.file_id

    def openai(self, with_text: bool = True) -> dict[str, Any]:
        """A result as `vector_stores.search` and `file_search_call.results` show it."""
        out: dict[str, Any] = {
            "file_id": self.file_id,
            "filename": self.filename,
            "score": self.hit.score,
            "attributes": self.attributes,
        }
        if with_text:
            out["content"] = [{"type": "text", "text": self.hit.chunk.text}]
        return out

    def reference(self) -> dict[str, Any]:
        """A reference in the GPT4All app's format."""
        c = self.hit.chunk
        return {
            "file": self.filename,
            "title": self.title or self.filename,
            "author": self.author or "",
            "date": self.date or "",
            "text": c.text,
            "page": c.page if c.page is not None else -1,
            "from": c.start,
            "to": c.end,
        }


class LocalDocs:
    def __init__(self, state: ServerState):
        self.state = state
        self.folder = state.settings.data_dir / "localdocs"
        self._index: Index | PostgresIndex | None = None
        self._owner = uuid.uuid4().hex  # who claims files to index (replicas share them)
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._warned_stand_in = False

    @property
    def index(self) -> Index | PostgresIndex:
        """The SQLite index in the data folder, or the PostgreSQL one (`database_url`) that
        replicas share."""
        if self._index is None:
            url = self.state.settings.database_url
            if url:
                from .index_pg import PostgresIndex

                self._index = PostgresIndex(url)
            else:
                self._index = Index(self.folder)
        return self._index

    async def resume(self) -> None:
        """At startup: queue the files a restart left unindexed (only when a database exists;
        with PostgreSQL, every replica queues them and `claim` picks one per file)."""
        if self.state.settings.database_url or (self.folder / "localdocs.sqlite3").exists():
            for store_id, file_id in await asyncio.to_thread(self.index.pending):
                self._enqueue(store_id, file_id)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
            self._worker = None
        if self._index is not None:
            self._index.close()
            self._index = None

    # -- embedding ---------------------------------------------------------------------

    def default_embedding_model(self) -> str:
        """The setting, else nomic-embed-text from the models folder, else the embedded model
        (a stand-in: it is a chat model)."""
        store = self.state.store
        wanted = self.state.settings.embedding_model
        if wanted:
            return store.resolve(wanted).id
        found = sorted(m.id for m in store.list() if NOMIC in m.id.lower())
        if found:
            return found[-1]
        name = store.embedded.name if store.embedded is not None else self.state.default_model
        if not self._warned_stand_in:
            log.warning(
                "no embedding model (%s) in %s: LocalDocs embeds with %s as a stand-in; "
                "`gpt4all-api models pull nomic-embed-text-v1.5.f16.gguf` for better retrieval",
                NOMIC,
                self.state.settings.models_dir,
                name,
            )
            self._warned_stand_in = True
        return name

    async def embed(self, model: str, texts: Sequence[str], kind: str) -> np.ndarray:
        """Normalised float32 vectors, one per text. `kind`: `document` or `query` (nomic's
        task prefixes)."""
        from ..api.embeddings import embedder_for

        loaded = await self.state.registry.get(model)
        embedder = await embedder_for(self.state, loaded)
        prefix = f"search_{kind}: " if NOMIC in model.lower() else ""
        tokens = [loaded.model.tokenize(prefix + t)[: embedder.n_ctx] for t in texts]
        vectors = await asyncio.to_thread(embedder.embed, tokens)
        return np.stack(vectors).astype(np.float32)

    # -- files -------------------------------------------------------------------------

    async def add_file(self, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        file_id = new_id("file-")
        row = await asyncio.to_thread(
            self.index.add_file, file_id, safe_filename(filename), data, purpose
        )
        log.info("stored file %s (%d bytes)", file_id, len(data))
        return row

    async def file(self, file_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.index.file, file_id)
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return row

    # -- stores ------------------------------------------------------------------------

    async def create_store(
        self,
        name: str | None,
        description: str | None,
        metadata: dict[str, str] | None,
        expires_after: dict[str, Any] | None,
        embedding_model: str | None = None,
    ) -> dict[str, Any]:
        model = (
            self.state.store.resolve(embedding_model).id
            if embedding_model
            else self.default_embedding_model()
        )
        store = {
            "id": new_id("vs_"),
            "name": name,
            "description": description,
            "created_at": int(time.time()),
            "metadata": metadata or {},
            "expires_after": expires_after,
            "embedding_model": model,
        }
        await asyncio.to_thread(self.index.add_store, store)
        return await self.store(store["id"])

    async def store(self, store_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.index.store, store_id)
        if row is None:
            raise NotFound(f"No vector store found with id '{store_id}'.", param="vector_store_id")
        return row

    async def attach(
        self,
        store_id: str,
        file_id: str,
        attributes: dict[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Add a file to a store; it is indexed in the background."""
        await self.file(file_id)
        await asyncio.to_thread(self.index.attach, store_id, file_id, attributes or {}, batch_id)
        self._enqueue(store_id, file_id)

    # -- background indexing -----------------------------------------------------------

    def _enqueue(self, store_id: str, file_id: str) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait((store_id, file_id))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="localdocs-indexer")

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            store_id, file_id = await self._queue.get()
            try:
                await self._index_file(store_id, file_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one file stop the indexer
                log.exception("indexing %s into %s failed", file_id, store_id)

    async def _index_file(self, store_id: str, file_id: str) -> None:
        index = self.index
        entry = await asyncio.to_thread(index.vs_file, store_id, file_id)
        store = await asyncio.to_thread(index.store, store_id)
        if entry is None or store is None or entry["status"] != "in_progress":
            return
        if not await asyncio.to_thread(index.claim, store_id, file_id, self._owner, CLAIM_LEASE):
            log.debug("%s in %s is being indexed elsewhere", file_id, store_id)
            return
        record = await asyncio.to_thread(index.file, file_id)
        started = time.monotonic()
        try:
            if record is None:
                raise UnreadableFile(f"the file {file_id} was deleted")
            data = await asyncio.to_thread(index.read_content, file_id)
            doc = await asyncio.to_thread(parse, data, record["filename"])
            pieces = chunking.chunks(doc)
            if not pieces:
                raise UnreadableFile(f"{record['filename']} holds no text")
            vectors = []
            for i in range(0, len(pieces), EMBED_BATCH):
                if i and not await asyncio.to_thread(
                    index.claim, store_id, file_id, self._owner, CLAIM_LEASE
                ):
                    log.info("%s left %s, or another replica took it over", file_id, store_id)
                    return
                batch = [c.text for c in pieces[i : i + EMBED_BATCH]]
                vectors.append(await self.embed(store["embedding_model"], batch, "document"))
            meta = {
                "title": doc.title,
                "author": doc.author,
                "date": doc.date or _day(record["created_at"]),
            }
            done = await asyncio.to_thread(
                index.put_chunks, store_id, file_id, pieces, np.concatenate(vectors), meta
            )
        except UnreadableFile as exc:
            log.info("could not index %s: %s", file_id, exc.message)
            error = {"code": exc.code, "message": exc.message}
            await asyncio.to_thread(index.set_status, store_id, file_id, "failed", error)
            return
        except (APIError, OSError) as exc:
            message = exc.message if isinstance(exc, APIError) else str(exc)
            log.warning("could not index %s: %s", file_id, message)
            error = {"code": "server_error", "message": message}
            await asyncio.to_thread(index.set_status, store_id, file_id, "failed", error)
            return
        if done:
            log.info(
                "indexed %s into %s: %d chunks in %.1f s",
                file_id,
                store_id,
                len(pieces),
                time.monotonic() - started,
            )

    # -- retrieval ---------------------------------------------------------------------

    async def collections(self, names: Sequence[str], param: str) -> list[str]:
        """Store ids for collection names (a vector store's name, or its id)."""
        ids: list[str] = []
        for name in names:
            found = await asyncio.to_thread(self.index.stores_named, name)
            if not found:
                raise NotFound(f"No LocalDocs collection named '{name}'.", param=param)
            ids += [s["id"] for s in found]
        return list(dict.fromkeys(ids))

    async def search(
        self,
        store_ids: Sequence[str],
        query: str,
        *,
        limit: int,
        threshold: float = 0.0,
        filters: dict[str, Any] | None = None,
        embedding_model: str | None = None,
        mode: searching.Mode = "hybrid",
        param: str = "vector_store_ids",
    ) -> list[Result]:
        """The best `limit` chunks of the stores for `query`, best first. `filters` keep the
        files whose attributes match (before ranking)."""
        stores = [await self.store(s) for s in store_ids]
        model = self._model_of(stores, embedding_model, param)
        if not stores or not query.strip():
            return []
        ids = [s["id"] for s in stores]
        file_ids = None
        if filters:
            entries = [e for i in ids for e in await asyncio.to_thread(self.index.vs_files, i)]
            file_ids = sorted({e["file_id"] for e in entries if matches(filters, e["attributes"])})
            if not file_ids:
                return []
        vector = None
        if mode != "bm25" and model is not None:
            vector = (await self.embed(model, [query], "query"))[0]
        hits = await asyncio.to_thread(
            searching.search,
            self.index,
            ids,
            query,
            vector,
            limit=limit,
            threshold=threshold,
            mode=mode,
            file_ids=file_ids,
        )
        for i in ids:
            await asyncio.to_thread(self.index.touch_store, i)
        return await asyncio.to_thread(self._results, hits)

    def _model_of(self, stores: list[dict[str, Any]], asked: str | None, param: str) -> str | None:
        """The model that embedded the stores; a 400 when they differ, or differ from `asked`."""
        models = {s["embedding_model"] for s in stores}
        if len(models) > 1:
            raise InvalidRequest(
                "these vector stores were embedded with different models "
                f"({', '.join(sorted(models))}) and cannot be searched together",
                param=param,
                code="embedding_model_mismatch",
            )
        model = models.pop() if models else None
        if asked and model and asked != model:
            wanted = self.state.store.resolve(asked).id
            if wanted != model:
                raise InvalidRequest(
                    f"vector store {stores[0]['id']} was embedded with {model}, not "
                    f"{wanted}; search it with {model} or index it again",
                    param="embedding_model",
                    code="embedding_model_mismatch",
                )
        return model

    def _results(self, hits: list[searching.Hit]) -> list[Result]:
        """Hits with their files' names, attributes and metadata (blocking)."""
        out = []
        for h in hits:
            c = h.chunk
            record = self.index.file(c.file_id)
            entry = self.index.vs_file(c.store_id, c.file_id)
            if record is None or entry is None:  # removed meanwhile
                continue
            meta = (entry["title"], entry["author"], entry["date"])
            out.append(Result(h, record["filename"], entry["attributes"], *meta))
        return out


def _day(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()
