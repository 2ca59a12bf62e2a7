"""``/docs`` served offline: Swagger UI's files ship in the ``swagger-ui-bundle`` package
and the page's start-up script is a file of ours, so the page needs no CDN and its CSP
(see :mod:`imagegate.api.security_headers`) can forbid inline and foreign scripts."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

_INIT_JS = Path(__file__).parents[1] / "static" / "docs-init.js"
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>imagegate API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""


async def docs(request: Request) -> Response:
    return HTMLResponse(_PAGE)


async def docs_init(request: Request) -> Response:
    return FileResponse(_INIT_JS, media_type="text/javascript")


def add_docs(app: FastAPI) -> None:
    """Mount /docs, its start-up script and Swagger UI's packaged assets."""
    app.add_route("/docs", docs, include_in_schema=False)
    app.add_route("/docs/init.js", docs_init, include_in_schema=False)
    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
