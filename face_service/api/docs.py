"""What the service serves to people: Swagger UI at /docs and ReDoc at /redoc with their
assets from the fastapi-offline package (no CDN: they work with no network), and the web page
at / with its static files (face_service/web). None of it holds biometric data."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
WEB_PAGE = Path(__file__).resolve().parent.parent / "web"
DOCS_PREFIX = "/static/docs"
WEB_PREFIX = "/web"
# ReDoc's footer shows Redocly's logo from their CDN: offline that is a request that fails.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_JS = "/static/redoc/redoc.standalone.js"


@cache
def redoc_script() -> bytes:
    """ReDoc's bundle with its one outside URL (the footer logo) pointed at the local favicon."""
    script = (DOCS_ASSETS / "redoc.standalone.js").read_text(encoding="utf-8")
    return script.replace(REDOC_LOGO, f"{DOCS_PREFIX}/favicon.png").encode()


def add_docs_and_page(app: FastAPI) -> None:
    """/docs, /redoc, / and their assets (the app is made with docs_url=redoc_url=None)."""
    app.mount(DOCS_PREFIX, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount(WEB_PREFIX, StaticFiles(directory=WEB_PAGE), name="web")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_PREFIX}/favicon.png",
            # The key typed into Authorize survives a reload; no call home for validation.
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=REDOC_JS,
            redoc_favicon_url=f"{DOCS_PREFIX}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(REDOC_JS, include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_script(), media_type="text/javascript")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(WEB_PAGE / "index.html", media_type="text/html")
