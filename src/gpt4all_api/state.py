"""What the running server holds, built once by the app factory and shared by the routers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .library.download import DownloadManager
from .library.registry import ModelRegistry
from .library.store import ModelStore
from .settings import Settings

if TYPE_CHECKING:
    from .dialects.responses.store import ResponseStore
    from .dialects.responses.store_pg import PostgresResponseStore
    from .localdocs.service import LocalDocs


@dataclass
class ServerState:
    settings: Settings
    store: ModelStore
    registry: ModelRegistry
    default_model: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None
    downloads: DownloadManager | None = None
    responses: ResponseStore | PostgresResponseStore | None = None  # opened on first use
    localdocs: LocalDocs | None = None  # files and vector stores (database opened on first use)
