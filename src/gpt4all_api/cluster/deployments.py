"""The Ray Serve application: an `Ingress` that every HTTP request enters, and `Engine`
replicas, each running the app `create_app` builds (its own engine, its models folder).

The ingress reads the body, derives the routing key (`keys`), and forwards the raw request
(method, path, headers, body) through a DeploymentHandle whose router is
`PrefixAffinityRouter`; the replica runs it through the app in-process (`asgi.run_http`) and
streams the response's start and body back. So every route of every dialect, streaming
included, is the app's own; nothing here knows a route but the routing key's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import cli_threads
from ..errors import APIError, PayloadTooLarge, ServiceUnavailable, dialect_of, error_body
from ..settings import Settings
from .asgi import run_http
from .keys import RESPONSES_PATH, SEP, RoutingKey, previous_response_id, routing_text
from .router import PrefixAffinityRouter

log = logging.getLogger(__name__)

REPLICA_HEADER = "x-gpt4all-api-replica"
APP_NAME = "gpt4all-api"
_SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path",
               "query_string", "headers", "client", "server")  # fmt: skip
_RESPONSE_ID = re.compile(rb'"id"\s*:\s*"(resp_[A-Za-z0-9_-]+)"')
#: Response ids remembered for `previous_response_id` chains, per ingress.
CHAINS_KEPT = 100_000


class Engine:
    """One replica: the whole app, run in-process for each forwarded request."""

    async def __init__(self, values: dict[str, Any]):
        from ..app import create_app

        settings = Settings(**values)
        logging.getLogger("gpt4all_api").setLevel(settings.log_level.upper())
        self.app = create_app(settings)
        self.state = self.app.state.server
        self._life = self.app.router.lifespan_context(self.app)
        await self._life.__aenter__()
        while not self.state.ready.is_set():  # healthy once the default model is loaded
            if self.state.load_error:
                raise RuntimeError(f"the default model did not load: {self.state.load_error}")
            await asyncio.sleep(0.1)
        self.name = serve.get_replica_context().replica_id.to_full_id_str()
        log.info("engine replica %s ready", self.name)

    async def forward(
        self, key: RoutingKey, scope: dict[str, Any], body: bytes
    ) -> AsyncIterator[dict[str, Any] | bytes]:
        """The response's start (status, headers), then its body in pieces."""
        async for message in run_http(self.app, scope, body):
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", ()),
                    (REPLICA_HEADER.encode(), self.name.encode()),
                ]
                yield {"status": message["status"], "headers": headers}
            elif message["type"] == "http.response.body" and message.get("body"):
                yield message["body"]

    def record_routing_stats(self) -> dict[str, Any]:
        """The engine gauges the router reads (also in this replica's /metrics)."""
        out = {"waiting": 0, "running": 0, "kv_tokens": 0, "kv_capacity": 0}
        for entry in self.state.registry.loaded.values():
            s = entry.engine.stats()
            out["waiting"] += s.waiting
            out["running"] += s.busy_slots
            out["kv_tokens"] += s.kv_tokens
            out["kv_capacity"] += s.slots * s.context_per_slot
        out["kv_usage"] = out["kv_tokens"] / out["kv_capacity"] if out["kv_capacity"] else 0.0
        return out

    def check_health(self) -> None:
        if self.state.load_error:
            raise RuntimeError(self.state.load_error)

    async def __del__(self) -> None:
        await self._life.__aexit__(None, None, None)


class Ingress:
    """Every HTTP request enters here; it never parses more than the routing key needs."""

    def __init__(self, engine: DeploymentHandle, values: dict[str, Any]):
        self.engine = engine.options(stream=True)
        self.max_body = Settings(**values).max_body_size
        self.chains: OrderedDict[str, str] = OrderedDict()  # response id -> its routing text

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        dialect = dialect_of(path)
        try:
            body = await self._body(request)
        except APIError as exc:
            return JSONResponse(error_body(exc, dialect), exc.status_code)
        text = routing_text(request.method, path, body)
        prev = previous_response_id(path, body)
        if text is not None and prev in self.chains:
            text = self.chains[prev] + SEP + text
        scope = {k: request.scope[k] for k in _SCOPE_KEYS if k in request.scope}
        scope["path"] = path
        scope["raw_path"] = path.encode()
        scope["root_path"] = ""
        scope["type"] = "http"
        key = RoutingKey(text, request.headers.get(REPLICA_HEADER))
        gen = self.engine.forward.remote(key, scope, body)
        try:
            start = await gen.__anext__()
        except Exception as exc:
            log.warning("no engine replica answered %s %s: %r", request.method, path, exc)
            err = ServiceUnavailable("no engine replica could serve this request", retry_after=1)
            return JSONResponse(error_body(err, dialect), 503, headers=err.headers())
        learn = text if (path == RESPONSES_PATH and start["status"] == 200 and text) else None
        response = StreamingResponse(self._rest(gen, dialect, path, start, learn))
        response.status_code = start["status"]
        # Ray's proxy adds X-Request-ID itself (the same id: it passed it to the app)
        response.raw_headers = [
            (bytes(k), bytes(v)) for k, v in start["headers"] if bytes(k).lower() != b"x-request-id"
        ]
        return response

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body:
            raise PayloadTooLarge(f"the request body is larger than {self.max_body} bytes")
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > self.max_body:
                raise PayloadTooLarge(f"the request body is larger than {self.max_body} bytes")
        return bytes(data)

    async def _rest(
        self, gen: Any, dialect: str, path: str, start: dict[str, Any], learn: str | None
    ) -> AsyncIterator[bytes]:
        content_type = dict(start["headers"]).get(b"content-type", b"").decode()
        try:
            async for piece in gen:
                if learn is not None and (found := _RESPONSE_ID.search(piece)):
                    self._remember(found.group(1).decode(), learn)
                    learn = None
                yield piece
        except Exception as exc:
            log.warning("engine replica failed mid-response on %s: %r", path, exc)
            yield _stream_error(dialect, path, content_type)

    def _remember(self, response_id: str, text: str) -> None:
        self.chains[response_id] = text
        while len(self.chains) > CHAINS_KEPT:
            self.chains.popitem(last=False)


def _stream_error(dialect: str, path: str, content_type: str) -> bytes:
    """The closing error of a stream whose replica died, in its dialect's shape."""
    import json

    err = ServiceUnavailable("the engine replica serving this stream stopped; retry the request")
    if content_type.startswith("application/x-ndjson"):
        return (json.dumps(error_body(err, "ollama")) + "\n").encode()
    if not content_type.startswith("text/event-stream"):
        return b""
    if dialect == "anthropic":
        data = json.dumps(error_body(err, "anthropic"))
        return f"event: error\ndata: {data}\n\n".encode()
    if path == RESPONSES_PATH:
        data = json.dumps({"type": "error", "code": err.code, "message": err.message,
                           "param": None, "sequence_number": 0})  # fmt: skip
        return f"event: error\ndata: {data}\n\n".encode()
    return f"data: {json.dumps(error_body(err, 'openai'))}\n\ndata: [DONE]\n\n".encode()


def engine_options(settings: Settings) -> dict[str, Any]:
    """The engine deployment's Serve options: replicas or autoscaling bounds, CPUs, router."""
    queue = settings.max_queue or 1000
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.parallel + queue,
        "ray_actor_options": {"num_cpus": settings.replica_cpus},
        "health_check_period_s": 2,
    }
    # llama.cpp's decode threads wait as the CLI's do (docs/performance.md), on every node
    omp = {k: v for k, v in os.environ.items() if k in cli_threads.OMP_VARS}
    if omp:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": omp}
    if settings.min_replicas == settings.max_replicas:
        options["num_replicas"] = settings.min_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests,
            "upscale_delay_s": settings.upscale_delay,
            "downscale_delay_s": settings.downscale_delay,
        }
    if settings.routing == "prefix":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=PrefixAffinityRouter,
            request_router_kwargs={"imbalance": settings.imbalance_threshold},
            request_routing_stats_period_s=1,
            request_routing_stats_timeout_s=5,
        )
    return options


def build_app(settings: Settings) -> serve.Application:
    """The Serve application for these settings (`serve.run(build_app(s))`)."""
    values = settings.model_dump()
    engine = serve.deployment(Engine, name="Engine").options(**engine_options(settings))
    ingress = serve.deployment(Ingress, name="Ingress").options(
        num_replicas=1, max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0}
    )
    return ingress.bind(engine.bind(values), values)
