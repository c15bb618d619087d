"""``/docs`` (Swagger UI), ``/redoc`` and ``/openapi.json``, served without any CDN.

FastAPI's own documentation pages load their scripts, styles, fonts and favicon
from CDNs, so they are blank on a machine without internet. These pages load the
same assets from this server: the files ship in the ``fastapi-offline`` package
(Swagger UI under Apache-2.0, ReDoc under MIT), of which only the static folder is
used. The routes are FastAPI routes, so request metrics label them by path.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from starlette.responses import HTMLResponse

from ...errors import ApiError

router = APIRouter(include_in_schema=False)

ASSET_PREFIX = "/docs/assets"
#: The files the pages use, and their media types (no other file is served).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


@cache
def asset_dir() -> Path:
    """The static folder of ``fastapi-offline``, found without importing the package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the API docs need fastapi-offline: pip install 'episodic-koopman[service]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _title(request: Request) -> str:
    return request.app.title


@router.get("/openapi.json")
async def openapi(request: Request) -> Any:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{_title(request)}: API reference",
        swagger_js_url=f"{ASSET_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSET_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{ASSET_PREFIX}/favicon.png",
        # Swagger UI would otherwise ask an online validator for a badge about the spec.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{_title(request)}: API reference",
        redoc_js_url=f"{ASSET_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSET_PREFIX}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSET_PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"no such asset: {name!r}")
    return FileResponse(
        asset_dir() / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
