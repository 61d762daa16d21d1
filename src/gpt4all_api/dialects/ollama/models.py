"""Ollama's model library routes on this server's library: `/api/tags`, `/api/ps`, `/api/show`,
`/api/pull`, `/api/delete`, `/api/version`.

Models are named `<file name without .gguf>:latest` (any of the file name, the name without
`.gguf` and either with `:latest` are accepted back). Details come from the GGUF header and the
GPT4All catalog; downloads and deletes are the ones `/v1/models/pull` and `/v1/models` use.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from ...api import models as library
from ...api.openai_common import check_unknown
from ...api.streaming import ndjson_response
from ...core import reasoning
from ...core import tools as tooling
from ...engine.sampling import SamplingParams
from ...errors import ModelNotFound
from ...library.catalog import CatalogEntry
from ...library.gguf_header import GGUFInfo, read_info
from ...library.store import LocalModel
from ...state import ServerState
from .protocol import JSONRoute, ModelRequest
from .render import timestamp
from .translate import local_name, not_found

router = APIRouter(route_class=JSONRoute)

#: The Ollama version this API answers as: recent enough for clients that check a minimum
#: version before they use tools, structured outputs or `/api/embed`.
OLLAMA_VERSION = "0.12.0"
FOREVER = 100 * 365 * 86400.0  # seconds shown as the expiry of a model kept loaded forever


def ollama_name(model_id: str) -> str:
    base = model_id[:-5] if model_id.lower().endswith(".gguf") else model_id
    return base + ":latest"


def resolve(state: ServerState, name: str) -> LocalModel:
    """The local model an Ollama name stands for; an Ollama-worded 404 if there is none."""
    found = state.store.find(local_name(name))
    if found is None:
        raise not_found(name)
    return found


def _known(state: ServerState, model_id: str) -> CatalogEntry | None:
    catalog = state.store.catalog
    return catalog.cached().by_filename(model_id) if catalog is not None else None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digest(m: LocalModel, known: CatalogEntry | None) -> str:
    """The catalog's sha256 of the file when it has one, else a stable stand-in."""
    return (known and known.sha256sum) or _sha256(f"{m.path}:{m.size}:{m.created}")


def details(info: GGUFInfo, known: CatalogEntry | None) -> dict[str, Any]:
    family = info.architecture or ((known.type or "").lower() if known else "")
    size = info.parameter_size or ((known.parameters or "") if known else "")
    quant = info.quantization or ((known.quant or "").upper() if known else "")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": size,
        "quantization_level": quant,
    }


def card(state: ServerState, m: LocalModel) -> dict[str, Any]:
    known = _known(state, m.id)
    name = ollama_name(m.id)
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(m.created),
        "size": m.size,
        "digest": digest(m, known),
        "details": details(read_info(m.path), known),
    }


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    models = await asyncio.to_thread(lambda: [card(state, m) for m in state.store.list()])
    return {"models": models}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    out = []
    now = time.monotonic()
    for loaded in state.registry.loaded.values():
        if loaded.keep_alive < 0:
            left = FOREVER
        elif loaded.engine.busy:
            left = loaded.keep_alive
        else:
            left = max(0.0, loaded.keep_alive - (now - loaded.idle_since()))
        entry = await asyncio.to_thread(card, state, loaded.entry)
        del entry["modified_at"]
        vram = sum(loaded.offload.device_memory.values())
        entry |= {
            "expires_at": timestamp(time.time() + left),
            "size": loaded.ram + vram,
            "size_vram": vram,
            "context_length": loaded.engine.n_ctx_seq,
        }
        out.append(entry)
    return {"models": out}


def _parameters(state: ServerState, info: GGUFInfo, m: LocalModel) -> list[tuple[str, Any]]:
    loaded = state.registry.loaded.get(m.id)
    trained = info.metadata.get(f"{info.architecture}.context_length")
    n_ctx = state.settings.context_size
    if loaded is not None:
        n_ctx = loaded.engine.n_ctx_seq
    elif isinstance(trained, int) and trained > 0:
        n_ctx = min(n_ctx, trained)
    d = SamplingParams()
    return [
        ("num_ctx", n_ctx),
        ("temperature", d.temperature),
        ("top_k", d.top_k),
        ("top_p", d.top_p),
        ("min_p", d.min_p),
        ("repeat_penalty", d.repeat_penalty),
        ("repeat_last_n", d.repeat_last_n),
    ]


def show_model(state: ServerState, m: LocalModel) -> dict[str, Any]:
    info = read_info(m.path)
    known = _known(state, m.id)
    chat_template = info.metadata.get("tokenizer.chat_template")
    template = (known.prompt_template if known else None) or chat_template or ""
    if known and known.embedding_model:
        capabilities = ["embedding"]
    else:
        knows_tools = tooling.template_knows_tools(chat_template)
        thinks = reasoning.detect(chat_template, state.settings.reasoning_markers) is not None
        capabilities = [
            "completion",
            *(["tools"] if knows_tools else []),
            *(["thinking"] if thinks else []),
        ]
    params = _parameters(state, info, m)
    modelfile = [f"# Modelfile generated by gpt4all-api\nFROM {m.path}"]
    if template:
        modelfile.append(f'TEMPLATE """{template}"""')
    modelfile += [f"PARAMETER {k} {v}" for k, v in params]
    model_info = {k: v for k, v in info.metadata.items() if k != "tokenizer.chat_template"}
    if info.parameter_count:
        model_info["general.parameter_count"] = info.parameter_count
    return {
        "license": str(info.metadata.get("general.license", "")),
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": "\n".join(f"{k:<30} {v}" for k, v in params),
        "template": template,
        "details": details(info, known),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": timestamp(m.created),
    }


@router.post("/api/show")
async def show(body: ModelRequest, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    m = resolve(state, body.ref)
    return await asyncio.to_thread(show_model, state, m)


@router.delete("/api/delete")
async def delete(body: ModelRequest, request: Request) -> Response:
    """Delete a model file (or a partial download), as `DELETE /v1/models/{id}` does."""
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    name = local_name(body.ref)
    try:
        await library.delete_local(state, name)
    except ModelNotFound:
        raise not_found(body.ref) from None
    return Response(status_code=200)


def _entry_digest(entry: CatalogEntry) -> str:
    return "sha256:" + (entry.sha256sum or _sha256(f"{entry.url}:{entry.filesize}"))


async def _pull_frames(
    entry: CatalogEntry | None, frames: AsyncIterator[dict[str, Any]] | None
) -> AsyncIterator[dict[str, Any]]:
    """`/v1/models/pull` progress frames in Ollama's words."""
    yield {"status": "pulling manifest"}
    if entry is None or frames is None:  # already on disk
        yield {"status": "success"}
        return
    digest_ = _entry_digest(entry)
    check = "sha256" if entry.sha256sum else "md5"
    shown = -1
    async for f in frames:
        status = f["status"]
        if status == "error":
            yield {"error": f["error"]["message"]}
            return
        if f["completed"] > shown or status in ("starting", "downloading"):
            shown = f["completed"]  # the last frame of the download says it is all there
            progress = {"status": f"pulling {digest_[7:19]}", "digest": digest_}
            yield (
                progress | ({"total": f["total"]} if f.get("total") else {}) | {"completed": shown}
            )
        if status == "verifying":
            yield {"status": f"verifying {check} digest"}
        elif status == "success":
            yield {"status": "success"}


@router.post("/api/pull", response_model=None)
async def pull(body: ModelRequest, request: Request) -> Any:
    """Download a model of the GPT4All catalog with the server's download manager."""
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    name = local_name(body.ref)
    entry = frames = None
    if state.store.find(name) is None:
        try:
            entry = await library.catalog_entry(state, name)
        except ModelNotFound:
            raise not_found(body.ref) from None
        downloads = library.downloads_of(state)
        if body.stream is False:
            d = downloads.start(entry)
            while not d.done.is_set():
                await asyncio.sleep(library.PROGRESS_EVERY)
            if d.error is not None:
                downloads.forget(d)
                raise d.error
            return {"status": "success"}
        frames = library.pull_progress(downloads, entry)
    if body.stream is False:
        return {"status": "success"}
    return ndjson_response(_pull_frames(entry, frames))


def keep_alive(state: ServerState, asked: float | None) -> float:
    """As in Ollama, every request sets its model's keep-alive: one that names none sets the
    server's default (so a request after `keep_alive: -1` or a deferred `0` starts it afresh)."""
    return state.registry.keep_alive if asked is None else asked
