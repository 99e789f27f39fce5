"""The dashboard's files as the API serves them (api/dashboard.py), asked of the real ASGI
application: the shell at ``/``, every module it imports, the security and cache headers,
nothing from another origin, and the vendored libraries as VENDOR.md pins them."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

from api.app import Services, Settings, create_app
from api.auth import Authority
from api.dashboard import PREFIX, WEB
from api.limits import RateLimiter
from api.view import FleetView

SECRET = "w" * 40
IMPORT = re.compile(
    r"""^\s*(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]""",
    re.M,
)
"""Static ``import ... from '...'`` and ``export ... from '...'`` at the start of a line,
and dynamic ``import('...')``."""


def app() -> Any:
    view = FleetView([], "nats://unused")
    return create_app(
        Services(Settings("nats://unused", SECRET), view, Authority(SECRET), RateLimiter(1, 1))
    )


def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app: status, headers (lower-case names), body."""
    answer: dict[str, Any] = {"body": b""}

    async def run() -> None:
        requested = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if requested.is_set():  # then the client waits for the answer
                await asyncio.Event().wait()
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app()(scope, receive, send)

    asyncio.run(run())
    return answer["status"], answer["headers"], answer["body"]


def test_the_shell_is_served_at_the_root_with_a_strict_policy() -> None:
    status, headers, body = get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy and headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    assert b'<script type="module" src="/ui/js/app.js">' in body


def test_every_module_the_pages_import_is_served_as_javascript() -> None:
    seen: set[str] = set()
    todo = ["/ui/js/app.js"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        status, headers, body = get(path)
        assert status == 200, path
        assert headers["content-type"].startswith("text/javascript"), (path, headers)
        for target in (a or b for a, b in IMPORT.findall(body.decode())):
            assert target.startswith("."), f"{path} imports {target} from elsewhere"
            base = path.rsplit("/", 1)[0]
            parts: list[str] = []
            for part in f"{base}/{target}".split("/"):
                if part == "..":
                    parts.pop()
                elif part not in ("", "."):
                    parts.append(part)
            todo.append("/" + "/".join(parts))
    pages = {f"/ui/js/pages/{p.name}" for p in (WEB / "js" / "pages").glob("*.js")}
    assert pages <= seen  # every page is reachable from the router
    assert "/ui/vendor/uplot-1.6.32/uPlot.esm.js" in seen


def test_nothing_is_loaded_from_another_origin() -> None:
    for path in WEB.rglob("*"):
        if path.suffix not in (".js", ".html", ".css") or "vendor" in path.parts:
            continue
        text = path.read_text()
        for url in re.findall(r"""(?:src|href)=["']([^"']+)""", text):
            assert url.startswith(("/", "#", "data:")), (path, url)
        assert "http://" not in text and "https://" not in text, path


def test_files_are_revalidated_and_libraries_cached() -> None:
    status, headers, _ = get(f"{PREFIX}/js/api.js")
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert "content-security-policy" in headers
    again = get(f"{PREFIX}/js/api.js", {"If-None-Match": headers["etag"]})
    assert again[0] == 304
    status, headers, _ = get(f"{PREFIX}/vendor/graphql-ws-6.4.2/client.js")
    assert status == 200 and headers["cache-control"] == "public, max-age=86400"
    assert get(f"{PREFIX}/nope.js")[0] == 404


def test_the_vendored_files_are_the_ones_pinned_with_their_licences() -> None:
    vendor = WEB / "vendor"
    listed = re.findall(r"^([0-9a-f]{64})  (\S+)$", (vendor / "VENDOR.md").read_text(), re.M)
    files = {str(p.relative_to(vendor)) for p in vendor.rglob("*") if p.is_file()}
    assert {name for _, name in listed} == files - {"VENDOR.md"}
    for digest, name in listed:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    for package in (p for p in vendor.iterdir() if p.is_dir()):
        assert any(f.name.startswith("LICENSE") for f in package.iterdir()), package
        assert re.search(r"-\d+\.\d+\.\d+$", package.name), f"{package} is not pinned"
    assert Path(WEB / "index.html").exists()
