"""Interactive API docs (Swagger UI at ``/docs``) that work without internet access.

FastAPI's own ``/docs`` page loads Swagger UI's script, stylesheet and favicon from public hosts,
so on a machine without internet (an on-premises install) it stays blank. Here the page points
at Swagger UI's files served by the service itself, under ``/docs-assets``, from the
``swagger-ui-bundle-v2`` package (the Swagger UI 5 distribution: earlier ones cannot render the
OpenAPI 3.1 documents FastAPI writes).

The assets take no token and are not in the OpenAPI document; request metrics label them all
with the mount's path, ``/docs-assets``, never with a file's path. ReDoc is off: the project has no
local copy of its script, and a page that loads it from the internet would be blank offline too.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

DOCS_URL = "/docs"
ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(swagger_ui_path))

SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
FAVICON = "favicon-32x32.png"
SERVED = frozenset({SWAGGER_JS, SWAGGER_CSS, FAVICON})


class _AssetFiles(StaticFiles):
    """Swagger UI's files, mounted at ``path``. Each request names the mount as its route:
    FastAPI names only its own routes, and CorrelationMiddleware labels request metrics with the
    route's path, so every file is counted under ``/docs-assets`` (not as "unmatched", and never
    one label per file)."""

    def __init__(self, path: str) -> None:
        super().__init__(directory=ASSETS_DIR)
        self.route = Mount(path, app=self, name="docs-assets")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        # Only the files the page loads: the package also holds a demo page (it loads the
        # Petstore example from the internet) and source maps.
        if path not in SERVED:
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def install(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` (and its OAuth2 redirect page) with local assets.

    The app must be created with ``docs_url=None`` and ``redoc_url=None`` so FastAPI adds no
    page of its own that loads from the internet."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    redirect_url = app.swagger_ui_oauth2_redirect_url

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui_html(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix every URL the browser follows carries it (as
        # FastAPI's own page does for the OpenAPI URL).
        root = request.scope.get("root_path", "").rstrip("/")
        assets = root + ASSETS_URL
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/{SWAGGER_JS}",
            swagger_css_url=f"{assets}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{assets}/{FAVICON}",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if redirect_url:

        @app.get(redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    app.router.routes.append(_AssetFiles(ASSETS_URL).route)
