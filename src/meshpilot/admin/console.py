"""The web console (`/ui`): one page, its script and its style, served from package data.

The page holds no mesh data: it fetches the admin API's JSON (`/graph`, `/proxies`, `/mesh`)
like any client, sending the admin token as a bearer header when one is needed. So the assets
stay public even with `serve --admin-token-file`, and the token (typed once, or given in the
URL's fragment, which never reaches the server) lives only in the browser tab's session."""

from __future__ import annotations

from importlib import resources

from meshpilot.admin.http import Handler, Reply

ASSETS = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/": ("index.html", "text/html; charset=utf-8"),
    "/ui/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/ui/console.css": ("console.css", "text/css; charset=utf-8"),
}
CONSOLE_PATHS = frozenset(ASSETS)
_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-cache"),
)


def _asset(name: str, content_type: str) -> Handler:
    body = (resources.files(__package__) / "ui" / name).read_bytes()
    reply = Reply(200, body, content_type, _HEADERS)
    return lambda _: reply


def console_routes() -> dict[str, Handler]:
    return {path: _asset(name, content_type) for path, (name, content_type) in ASSETS.items()}
