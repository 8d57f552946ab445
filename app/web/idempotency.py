"""`Idempotency-Key` on every /v1 POST, PUT, PATCH and DELETE (SPEC §7), as ASGI middleware.

    first request with a key  → runs; its answer is stored for 24 h (5xx answers are not:
                                 the client should be able to retry those)
    same key, same request    → the stored answer again, with `Idempotent-Replayed: true`
    same key, other request   → 422
    same key, first in flight → 409

Keys are per brand (two brands may use the same key). "Same request" means the same method,
path, query and body bytes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Unauthorized
from app.models import idempotency_keys
from app.web.problems import problem
from app.web.state import AppState

KEEP = timedelta(hours=24)
MAX_KEY = 255
MAX_BODY = 5 * 1024 * 1024 + 1  # the largest body a route accepts (batch), plus one to let it answer 413
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NEW, REPLAY, MISMATCH, IN_FLIGHT = "new", "replay", "mismatch", "in_flight"


def claim_key(conn: Connection, now: datetime, *, brand: str, key: str, request_hash: str) -> tuple[str, Any]:
    """Reserve `key` for this request, or say why not (replay with the stored answer, mismatch, in flight)."""
    row = conn.execute(sa.select(idempotency_keys).where(idempotency_keys.c.brand == brand,
                                                         idempotency_keys.c.key == key)).first()
    if row is not None and row.expires_at <= now:
        conn.execute(idempotency_keys.delete().where(idempotency_keys.c.id == row.id))
        row = None
    if row is None:
        conn.execute(idempotency_keys.insert().values(brand=brand, key=key, request_hash=request_hash,
                                                      status="in_flight", created_at=now, expires_at=now + KEEP))
        return NEW, None
    if row.request_hash != request_hash:
        return MISMATCH, None
    if row.status != "done":
        return IN_FLIGHT, None
    return REPLAY, (row.response_status, row.response_body, row.response_headers)


def finish_key(conn: Connection, _now: datetime, *, brand: str, key: str, status: int, body: bytes,
               headers: list[tuple[str, str]]) -> None:
    """Store the answer (or forget the key after a 5xx, so the client can retry)."""
    where = sa.and_(idempotency_keys.c.brand == brand, idempotency_keys.c.key == key)
    if status >= 500:
        conn.execute(idempotency_keys.delete().where(where))
        return
    conn.execute(idempotency_keys.update().where(where).values(
        status="done", response_status=status, response_body=body.decode("utf-8", "replace"),
        response_headers={"items": headers}))


class IdempotencyMiddleware:
    """Wraps the app; only /v1 writes carrying an Idempotency-Key are touched."""

    def __init__(self, app: ASGIApp, state: AppState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES or not scope["path"].startswith("/v1/"):
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
        body = await _read_all(receive)
        digest = hashlib.sha256(b"\n".join([scope["method"].encode(), scope["path"].encode(),
                                            scope.get("query_string", b""), body])).hexdigest()
        outcome, stored = await self.state.writer.run(
            lambda conn, now: claim_key(conn, now, brand=brand, key=key, request_hash=digest))
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
        await self._run_and_store(scope, body, send, brand=brand, key=key)

    async def _run_and_store(self, scope: Scope, body: bytes, send: Send, *, brand: str, key: str) -> None:
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
            await self.state.writer.run(lambda conn, now: finish_key(conn, now, brand=brand, key=key, status=status,
                                                                     body=answer, headers=out_headers))


def _api_key(headers: dict[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key is None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


async def _read_all(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > MAX_BODY or not message.get("more_body", False):
            break
    return bytes(body)


__all__ = ["IdempotencyMiddleware", "claim_key", "finish_key"]
