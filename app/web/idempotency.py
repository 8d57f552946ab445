"""`Idempotency-Key` on every /v1 (and Noticia dialect) POST, PUT, PATCH and DELETE, as ASGI middleware.

    first request with a key  → runs; a 2xx, 409 or 422 answer is stored for 24 h
    same key, same request    → the stored answer again, with `Idempotent-Replayed: true`
    same key, other request   → 422
    same key, first in flight → 409, until the first one ends or its lease lapses

A key is scoped to brand + method + path: the same key on another route is another key.
"Same request" means the same query and body bytes. A key cannot be poisoned: a request
refused before it ran (401, 405, 413, 415, a body that was cut off or is not JSON — any 4xx
but 409 and 422, and any 5xx) is never stored under its key, so the full retry runs; and a
key whose request died in flight (a crash, a killed process) is free again once its short
lease lapses, instead of answering 409 for 24 h.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Unauthorized
from app.models import idempotency_keys
from app.web.problems import problem
from app.web.state import AppState

KEEP = timedelta(hours=24)
# How long a first request holds its key: longer than any write takes (a 1000-profile batch
# takes about a second), short enough that a retry after a crash is not refused for long.
LEASE = timedelta(seconds=30)
MAX_KEY = 255
MAX_BODY = 5 * 1024 * 1024 + 1  # the largest body a route accepts (batch), plus one to let it answer 413
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The native API, and Noticia's dialect, whose seed asks for an Idempotency-Key on every write (000:60).
PREFIXES = ("/v1/", "/compat/noticia/v1/")
NEW, REPLAY, MISMATCH, IN_FLIGHT = "new", "replay", "mismatch", "in_flight"
# Answers worth replaying: the request ran and this is what it did (or why it could not).
STORED_4XX = frozenset({409, 422})


def _scope(brand: str, method: str, path: str, key: str) -> Any:
    c = idempotency_keys.c
    return sa.and_(c.brand == brand, c.method == method, c.path == path, c.key == key)


def claim_key(conn: Connection, now: datetime, *, brand: str, method: str, path: str, key: str,
              request_hash: str) -> tuple[str, Any]:
    """Reserve `key` for this request, or say why not (replay with the stored answer, mismatch, in flight)."""
    where = _scope(brand, method, path, key)
    row = conn.execute(sa.select(idempotency_keys).where(where)).first()
    lapsed = row is not None and row.status != "done" and row.lease_until is not None and row.lease_until <= now
    if row is not None and (row.expires_at <= now or lapsed):
        # Expired, or the first request died in flight: the key is free again.
        conn.execute(idempotency_keys.delete().where(idempotency_keys.c.id == row.id))
        row = None
    if row is None:
        conn.execute(idempotency_keys.insert().values(
            brand=brand, method=method, path=path, key=key, request_hash=request_hash, status="in_flight",
            lease_until=now + LEASE, created_at=now, expires_at=now + KEEP))
        return NEW, None
    if row.request_hash != request_hash:
        return MISMATCH, None
    if row.status != "done":
        return IN_FLIGHT, None
    return REPLAY, (row.response_status, row.response_body, row.response_headers)


def finish_key(conn: Connection, _now: datetime, *, brand: str, method: str, path: str, key: str, status: int,
               body: bytes, headers: list[tuple[str, str]]) -> None:
    """Store the answer, or release the key when the request was refused before it ran (or failed)."""
    where = _scope(brand, method, path, key)
    if status >= 400 and status not in STORED_4XX:
        conn.execute(idempotency_keys.delete().where(where))
        return
    conn.execute(idempotency_keys.update().where(where).values(
        status="done", lease_until=None, response_status=status, response_body=body.decode("utf-8", "replace"),
        response_headers={"items": headers}))


class IdempotencyMiddleware:
    """Wraps the app; only /v1 writes carrying an Idempotency-Key are touched."""

    def __init__(self, app: ASGIApp, state: AppState, routes: list[Any] | None = None):
        self.app = app
        self.state = state
        self.routes = routes or []

    def _routed(self, scope: Scope) -> bool:
        """True when a route takes this method on this path (a 404 or 405 never touches a key)."""
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in WRITES or not scope["path"].startswith(PREFIXES)
                or not self._routed(scope)):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > MAX_KEY:
            await problem(400, f"Idempotency-Key must be 1 to {MAX_KEY} characters",
                          errors=[("Idempotency-Key", "bad length")])(scope, receive, send)
            return
        try:
            brand = self.state.keys.authenticate(_api_key(headers)).brand
        except Unauthorized:
            await self.app(scope, receive, send)  # the route answers 401
            return
        body, complete = await _read_all(receive)
        if not complete:
            # The client went away mid-upload: nothing ran, nothing is stored, nobody is listening.
            return
        method, path = scope["method"], scope["path"]
        digest = hashlib.sha256(b"\n".join([scope.get("query_string", b""), body])).hexdigest()
        outcome, stored = await self.state.writer.run(
            lambda conn, now: claim_key(conn, now, brand=brand, method=method, path=path, key=key,
                                        request_hash=digest))
        if outcome == MISMATCH:
            response = problem(422, "this Idempotency-Key was used with a different request",
                               errors=[("Idempotency-Key", "reused with another request")])
            await response(scope, receive, send)
            return
        if outcome == IN_FLIGHT:
            await problem(409, "a request with this Idempotency-Key is still in flight",
                          errors=[("Idempotency-Key", "in flight")])(scope, receive, send)
            return
        if outcome == REPLAY:
            status, text, saved = stored
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (saved or {}).get("items", [])]
            await send({"type": "http.response.start", "status": status,
                        "headers": [*raw, (b"idempotent-replayed", b"true")]})
            await send({"type": "http.response.body", "body": (text or "").encode()})
            return
        await self._run_and_store(scope, body, send, brand=brand, method=method, path=path, key=key)

    async def _run_and_store(self, scope: Scope, body: bytes, send: Send, *, brand: str, method: str, path: str,
                             key: str) -> None:
        sent_body = False

        async def replay_body() -> Message:
            nonlocal sent_body
            if sent_body:
                return {"type": "http.disconnect"}
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 500
        out_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
                               if k.lower() != b"content-length"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            answer = b"".join(chunks)
            await self.state.writer.run(lambda conn, now: finish_key(
                conn, now, brand=brand, method=method, path=path, key=key, status=status, body=answer,
                headers=out_headers))


def _api_key(headers: dict[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key is None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


async def _read_all(receive: Receive) -> tuple[bytes, bool]:
    """The body (at most MAX_BODY bytes, so an oversized one still reaches its route's 413), and whether it arrived whole."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body), False
        body += message.get("body", b"")
        if len(body) > MAX_BODY or not message.get("more_body", False):
            return bytes(body), True


__all__ = ["IdempotencyMiddleware", "claim_key", "finish_key"]
