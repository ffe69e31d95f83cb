"""``/ui``: the web console, plain HTML/JS/CSS shipped in the package (``rerankd/api/ui/``).

The pages themselves hold no data and need no key; the script asks for an API key once, keeps
it in the browser's ``localStorage`` and sends it with every API call, so a tenant sees only
its own jobs and batches.  Nothing is loaded from outside the server (no CDN).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from rerankd.api.errors import ApiError

router = APIRouter(include_in_schema=False)
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


def asset(name: str) -> bytes:
    return resources.files("rerankd.api").joinpath("ui", name).read_bytes()


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
async def ui_index() -> Response:
    return Response(asset("index.html"), media_type=ASSETS["index.html"], headers=_HEADERS)


@router.get("/ui/{name}")
async def ui_asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"no console asset {name!r}", code="not_found")
    return Response(asset(name), media_type=ASSETS[name], headers=_HEADERS)
