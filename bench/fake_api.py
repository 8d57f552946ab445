"""A cheap stand-in for Twilio's message-create endpoint, for the send benchmark (`bench.send`).

`tests.fake_twilio.FakeTwilio` answers about 3,000 creates/s from its thread-per-connection
`http.server`: a bare client posting at it measures the fake as much as itself. This is a
plain ASGI app served by uvicorn (uvloop, httptools) in its own process, which answers the
same wire format for what a send does:

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json

HTTP basic auth checked (401 with Twilio's 20003 body), To / From or MessagingServiceSid /
Body validated with the same error bodies, and a 201 whose JSON is `SentMessage.resource()`
of the test fake, with Twilio's headers. No scripted faults and nothing stored but counts:
two side paths outside the API report and reset them for the benchmark,

    GET  /_bench/stats   {"created": n, "first": t, "last": t, "requests": n}  (time.time of arrival)
    POST /_bench/reset

Run: `uvicorn bench.fake_api:app --loop uvloop --http httptools` (see `bench.send.FastFake`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from tests.fake_twilio import (
    _E164,
    _MESSAGES_PATH,
    ACCOUNT_SID,
    AUTH_TOKEN,
    SentMessage,
    _basic_auth,
    _rfc2822_now,
    _sid,
    error_body,
    num_segments,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON_TYPE = b"application/json; charset=utf-8"


class Counts:
    """What the benchmark reads: requests and creates, and when the first and last create arrived."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.created = 0
        self.first: float | None = None
        self.last: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "created": self.created, "first": self.first, "last": self.last}


counts = Counts()


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(data)).encode()),
               (b"twilio-request-id", _sid("RQ").encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _create(form: dict[str, str], received_at: float) -> tuple[int, dict[str, Any]]:
    """The API's answer to a create, as `FakeTwilio._create` gives it without scripted faults."""
    to = form.get("To")
    from_ = form.get("From") or None
    service_id = form.get("MessagingServiceSid") or None
    body = form.get("Body", "")
    context = {"to": to or "", "from": from_ or ""}
    if not to:
        return 400, error_body(21604)
    if not _E164.fullmatch(to):
        return 400, error_body(21211, **context)
    if not from_ and not service_id:
        return 400, error_body(21603)
    if not body and not form.get("ContentSid"):
        return 400, error_body(21602)
    if len(body) > 1600:
        return 400, error_body(21617)
    message = SentMessage(
        sid=_sid("SM"), account_sid=ACCOUNT_SID, to=to, from_=from_, service_id=service_id, body=body,
        status_callback=form.get("StatusCallback") or None, status="queued" if from_ else "accepted",
        num_segments=num_segments(body), date_created=_rfc2822_now(), received_at=received_at, form=form)
    return 201, message.resource()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app."""
    if scope["type"] != "http":
        return
    received_at = time.time()
    path, method = scope["path"], scope["method"]
    raw = await _body(receive)
    if path == "/_bench/stats":
        await _answer(send, 200, counts.as_json())
        return
    if path == "/_bench/reset" and method == "POST":
        counts.reset()
        await _answer(send, 200, counts.as_json())
        return
    counts.requests += 1
    headers = dict(scope["headers"])
    if _basic_auth((headers.get(b"authorization") or b"").decode("latin-1")) != (ACCOUNT_SID, AUTH_TOKEN):
        await _answer(send, 401, error_body(20003), ((b"www-authenticate", b'Basic realm="Twilio API"'),))
        return
    match = _MESSAGES_PATH.fullmatch(path)
    if match is None or match.group(1) != ACCOUNT_SID:
        await _answer(send, 404, error_body(20404, path=path))
        return
    if method != "POST":
        await _answer(send, 405, error_body(20004, 405, "Method not allowed"))
        return
    form: dict[str, str] = {}
    if b"application/x-www-form-urlencoded" in (headers.get(b"content-type") or b""):
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    status, body = _create(form, received_at)
    if status == 201:
        counts.created += 1
        counts.first = counts.first or received_at
        counts.last = received_at
    await _answer(send, status, body)
