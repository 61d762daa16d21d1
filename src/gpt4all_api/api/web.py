"""The playground page: `GET /` and its two static files, shipped inside the package.

The page is plain HTML, JavaScript and CSS (no build step, nothing fetched from elsewhere), so it
works offline. It talks to the same `/v1` API as any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# Only these files are served: no path from the URL ever reaches the file system.
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads nothing but its own files and talks only to this server.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> FileResponse:
    """The playground page."""
    return FileResponse(
        WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


def _static_route(name: str, media_type: str) -> None:
    async def serve() -> FileResponse:
        return FileResponse(WEB_DIR / name, media_type=media_type, headers=_HEADERS)

    router.add_api_route(f"/static/{name}", serve, methods=["GET", "HEAD"], name=f"static:{name}")


for _name, _type in _STATIC.items():
    _static_route(_name, _type)
