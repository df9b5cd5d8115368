"""GET /openapi.json and the /docs page (Swagger UI from the swagger-ui-bundle package: offline, no CDN)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import orjson
from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from ..core.errors import NotFound
from .jsonio import raw_json_response
from .keys import OPENAPI
from .openapi import build_document

routes = web.RouteTableDef()
_STATIC = resources.files("service").joinpath("static")
PAGE = _STATIC.joinpath("docs.html").read_bytes()
# the only files /docs/{asset} serves: a name cannot reach anything else
ASSETS: dict[str, Path] = {
    "swagger-ui.css": Path(str(swagger_ui_path)) / "swagger-ui.css",
    "swagger-ui-bundle.js": Path(str(swagger_ui_path)) / "swagger-ui-bundle.js",
    "docs.js": Path(str(_STATIC.joinpath("docs.js"))),
    "docs.css": Path(str(_STATIC.joinpath("docs.css"))),
}
# Swagger UI sets inline styles; everything else is this origin's
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
ASSET_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


async def build_openapi(app: web.Application) -> None:
    """Build the document once, at startup, when every route is known."""
    app[OPENAPI] = orjson.dumps(build_document(app))


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document."""
    return raw_json_response(request.app[OPENAPI])


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    """The documentation page."""
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


@routes.get("/docs/{asset}")
async def docs_asset(request: web.Request) -> web.FileResponse:
    """A script or stylesheet of the documentation page."""
    path = ASSETS.get(request.match_info["asset"])
    if path is None:
        raise NotFound("asset", field="asset")
    return web.FileResponse(path, headers=ASSET_HEADERS)
