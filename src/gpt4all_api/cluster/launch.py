"""Start (or join) a Ray cluster and run the Serve application on it.

Ray stays on this machine's loopback unless `ray_address` names a cluster: no dashboard, no
usage reporting, the node address 127.0.0.1. The Serve HTTP endpoint binds `host`:`port`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from ..settings import Settings

log = logging.getLogger(__name__)


def connect(settings: Settings, **init: object) -> None:
    """`ray.init` for these settings: join `ray_address`, else start a local Ray on loopback."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, **init)  # type: ignore[arg-type]
    else:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **init)  # type: ignore[arg-type]


def deploy(settings: Settings) -> None:
    """Run the application on the connected cluster; returns once its replicas are up."""
    from ray import serve

    from .deployments import APP_NAME, build_app

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)


def serve_forever(settings: Settings, stop: threading.Event) -> None:
    """`gpt4all-api serve --ray`: deploy, then wait for `stop` (set by SIGTERM or SIGINT);
    shut Serve (and a Ray this process started) down at the end."""
    import ray
    from ray import serve

    started_here = not settings.ray_address
    connect(settings)
    # after ray.init, which installs a SIGTERM handler of its own that exits at once
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        deploy(settings)
        log.info("gpt4all-api on Ray Serve: http://%s:%s/v1", settings.host, settings.port)
        stop.wait()
    finally:
        serve.shutdown()
        if started_here:
            ray.shutdown()
