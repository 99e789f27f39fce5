"""The operations dashboard: a web application served by the API itself, same origin.

``/`` is the application shell (``api/web/index.html``); ``/ui/...`` its ES modules, CSS
and the front-end libraries it ships with (``api/web/vendor/``, pinned by version, with
their licences and hashes in ``VENDOR.md``). Nothing is fetched from elsewhere and nothing
is built: the files are served as they are in the repository.

The pages talk to the API as any client does: GraphQL over HTTP for queries and
mutations, graphql-transport-ws on ``/graphql`` for the live updates, REST for a sensor's
time series and the CSV export, and the session routes (``/api/v1/session``) to log in.

Every answer carries a content security policy that allows scripts, styles, images and
connections from this origin only (plus ``data:`` images, and inline styles, which the
Gantt library, vis-timeline, sets on its elements: without them the browser refuses its
layout), and is never framed. The application's
own files are revalidated on every load (``no-cache``: a changed file is seen at once,
an unchanged one is a 304); the libraries' files, whose path names their version, are
cached for a day.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

WEB = Path(__file__).with_name("web")
SHELL = WEB / "index.html"
PREFIX = "/ui"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class WebFiles(StaticFiles):
    """Static files with the dashboard's security and cache headers."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        vendored = scope["path"].startswith(f"{PREFIX}/vendor/")
        response.headers["Cache-Control"] = "public, max-age=86400" if vendored else "no-cache"
        return response


def mount(app: FastAPI) -> None:
    """Serve the dashboard on ``app``: the shell at ``/``, its files under ``/ui``."""

    @app.get("/", include_in_schema=False)
    async def shell() -> FileResponse:
        """The dashboard's single page; the pages are routed in the browser (``#/fleet``)."""
        return FileResponse(
            SHELL, media_type="text/html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        )

    app.mount(PREFIX, WebFiles(directory=WEB), name="dashboard")
