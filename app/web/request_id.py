"""X-Request-Id: taken from the request (a proxy's or the caller's) or made here, logged, echoed.

Pure ASGI and cheap on purpose: it runs on every webhook. The id lives in
`app.logs.request_id` for the request's task (and the threads it hands work to), so every
log line of the request carries it.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_id

HEADER = b"x-request-id"
# A caller's id is kept only when it is short and plain: it goes into every log line.
_ACCEPTABLE = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def new_request_id() -> str:
    """16 random hex digits."""
    return os.urandom(8).hex()


class RequestIdMiddleware:
    """Set the request id for the request and answer it in `X-Request-Id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap one HTTP request; other scopes pass through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == HEADER:
                if _ACCEPTABLE.fullmatch(value):
                    rid = value.decode("ascii")
                break
        if rid is None:
            rid = new_request_id()
        raw = rid.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                headers.append((HEADER, raw))
                message["headers"] = headers
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
