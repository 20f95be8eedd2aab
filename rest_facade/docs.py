"""Interactive docs that work offline: /docs (Swagger UI) and /redoc (ReDoc) are small pages
of ours that load every script, style and image from /docs/assets/, never from a CDN, and run
no inline script, so their CSP (edge.py) names no host and allows scripts from 'self' only.
Swagger UI's and ReDoc's files come from the fastapi-offline wheel (only its files are used),
ours from docs_assets/ beside this module. GET / sends a browser to /docs."""
from __future__ import annotations

import hashlib
from functools import cache
from html import escape
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from starlette.responses import RedirectResponse, Response

PAGES = frozenset({"/docs", "/redoc"})
ASSETS = "/docs/assets/"
# With every path under ASSETS, what a browser needs for the docs: the guard (callers.py)
# lets these through without credentials.
OPEN = PAGES | {"/"}

JS, CSS, PNG = "text/javascript; charset=utf-8", "text/css; charset=utf-8", "image/png"
VENDOR_FILES = {"swagger-ui-bundle.js": JS, "swagger-ui.css": CSS, "redoc.standalone.js": JS,
                "favicon.png": PNG}
OWN_FILES = {"swagger-init.js": JS, "redoc.css": CSS}

# ReDoc's side menu always shows Redocly's logo from cdn.redoc.ly (no option turns it off):
# the CSP would refuse it, with an error in the console. A transparent pixel takes its place.
REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
PIXEL = b'"data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"'

SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec_url}"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-init.js"></script>
</body>
</html>
"""
# <redoc spec-url> starts ReDoc by itself: no setup script.
REDOC_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/redoc.css">
</head>
<body>
<redoc spec-url="{spec_url}"></redoc>
<script src="/docs/assets/redoc.standalone.js"></script>
</body>
</html>
"""


def is_docs(path: str) -> bool:
    return path in PAGES or path.startswith(ASSETS)


@cache
def assets() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, content type, ETag), read once from the installed packages."""
    vendor = resources.files("fastapi_offline") / "static"
    own = resources.files(__package__) / "docs_assets"
    found = {}
    for folder, files in ((vendor, VENDOR_FILES), (own, OWN_FILES)):
        for name, content_type in files.items():
            content = (folder / name).read_bytes()
            if name == "redoc.standalone.js":
                content = content.replace(REDOC_LOGO, PIXEL)
            etag = '"' + hashlib.blake2b(content, digest_size=12).hexdigest() + '"'
            found[name] = (content, content_type, etag)
    return found


def install(app: FastAPI) -> None:
    spec_url = escape(app.openapi_url or "", quote=True)
    title = escape(app.title)
    swagger = SWAGGER_PAGE.format(title=title, spec_url=spec_url).encode()
    redoc = REDOC_PAGE.format(title=title, spec_url=spec_url).encode()
    html = "text/html; charset=utf-8"

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/docs", status_code=307)

    @app.get("/docs", include_in_schema=False)
    async def swagger_page():
        return Response(swagger, media_type=html)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page():
        return Response(redoc, media_type=html)

    @app.get(ASSETS + "{name}", include_in_schema=False)
    async def asset(name: str, request: Request):
        found = assets().get(name)
        if found is None:
            raise HTTPException(404)  # answered like any unknown route
        content, content_type, etag = found
        # Revalidated on every use (304 when unchanged): an upgrade shows at once.
        headers = {"etag": etag, "cache-control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(content, media_type=content_type, headers=headers)
