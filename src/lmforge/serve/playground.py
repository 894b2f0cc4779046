"""``GET /``: the web playground, a page served from the package's ``static/`` folder.

Chat with streaming and the sampling settings, and a classify tab with calibrated vs raw
probabilities as bars. The page, its script and its stylesheet ship inside the package (no CDN)
and a Content-Security-Policy keeps it to this server. The page itself needs no API key, as
``/health``; the calls it makes send the key the user types when the server has one.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.responses import HTMLResponse, Response

from lmforge.errors import ConfigError
from lmforge.serve.errors import APIError

__all__ = ["install_playground"]

#: The files next to ``index.html`` and their media types.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# Nothing but this origin: no inline script, no third-party fetch, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def install_playground(app: FastAPI, needs_key: bool) -> None:
    """Add ``GET /`` and ``GET /static/{name}`` to ``app``; ``needs_key`` shows the page's key field."""
    folder = resources.files("lmforge.serve") / "static"
    try:
        page = (folder / "index.html").read_text(encoding="utf-8")
        assets = {name: (folder / name).read_bytes() for name in ASSETS}
    except OSError as error:
        raise ConfigError(
            f"the playground's files are missing from this install of lmforge ({error}); "
            "reinstall it (they are package data under lmforge/serve/static/)"
        ) from None
    page = page.replace("{{auth}}", "true" if needs_key else "false")

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers=HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in assets:
            raise APIError(404, f"no static file {name!r}; there are {', '.join(sorted(assets))}")
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)
