"""``/`` and ``/ui/...``: the live web view, a static page that reads the `/v1` API.

The page and its assets load without an API key (they hold no data); the page
asks for a key when `/v1` answers 401 and sends it as a bearer header itself.
Everything it needs ships in ``service/static`` (no CDN): the view works offline.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from ...errors import ApiError

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Same-origin only: no inline script, no third-party fetch, no framing.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["web view"], include_in_schema=False)


@cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Every servable file under the static dir, by relative path (read once)."""
    assets = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        media_type = _MEDIA_TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            assets[path.relative_to(STATIC_DIR).as_posix()] = (path.read_bytes(), media_type)
    return assets


def _serve(name: str) -> Response:
    # A lookup in the table of known files: no path from the URL ever reaches the filesystem.
    asset = _assets().get(name)
    if asset is None:
        raise ApiError(404, "no such file")
    body, media_type = asset
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/", response_class=Response)
async def index() -> Response:
    """The web view: series, live forecasts, recalled episodes and spectra."""
    return _serve("index.html")


@router.get("/ui/{name:path}", response_class=Response)
async def asset(name: str) -> Response:
    """The view's scripts, styles and the vendored chart library (with its licence)."""
    return _serve(name)
