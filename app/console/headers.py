"""Security headers on every console response: pages, forms, CSV, static files, 404s and errors.

An ASGI middleware around the whole app (outside Starlette's error handling), so that a
response under /console gets them however it was made: by a page, by StaticFiles, by the
router's 404 or 405, or by the server-error handler. Headers a response already set win.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/console"
STATIC = "/console/static/"
SECURITY_HEADERS = {
    # Everything the console loads is its own: no CDN, no inline script or style, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Reset links carry their token in the path: never hand a console URL to another site.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cache-Control": "no-store",
}
# The stylesheet may be cached, but checked again each time (it changes with optline's version).
STATIC_CACHE = "no-cache"


def is_console(path: str) -> bool:
    """True for /console and everything under it."""
    return path == PREFIX or path.startswith(PREFIX + "/")


class ConsoleHeaders:
    """Adds SECURITY_HEADERS to every HTTP response whose path is under /console."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_console(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = STATIC_CACHE if static and name == "Cache-Control" else value
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["SECURITY_HEADERS", "ConsoleHeaders", "is_console"]
