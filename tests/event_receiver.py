"""A brand's event receiver for tests: a real HTTP server on 127.0.0.1 that checks Standard Webhooks signatures.

Each POST is verified with `standardwebhooks.Webhook(secret).verify(body, headers)`, the
library a brand's own receiver would use, so the test proves interoperability rather than
agreement with our own signing code. A bad or missing signature is answered 400 and never
counts as a delivery. Faults are scripted per test:

    receiver.fail(503, times=2)       # answer 503 to the next two (verified) requests
    receiver.fail_every(3, 500)       # answer 500 to every third request
    receiver.delay(1.0)               # answer the next request one second late

Every request is recorded (`requests`), verified and answered 2xx ones also as
`deliveries` (a delivery is recorded just before its answer is written, so once a
client has an answer the request is already here); `wait_for(n)` blocks until n deliveries arrived. Use it as a context manager
or through the `event_receiver` fixture; `close()` joins every thread and closes every socket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.loopback import LoopbackHandler, LoopbackServer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example secret (24 bytes)
PATH = "/hooks/optline"


@dataclass
class Script:
    """A scripted answer: `status` (None: answer normally) after `delay` seconds, for `times` requests or every `every`-th."""

    status: int | None = None
    delay: float = 0.0
    times: int | None = 1  # None: no limit
    every: int | None = None  # apply to request numbers every, 2*every, ... (1-based, all requests)
    hits: int = 0

    def applies(self, number: int) -> bool:
        """True when this script answers request `number`."""
        if self.times is not None and self.hits >= self.times:
            return False
        return self.every is None or number % self.every == 0


@dataclass
class Received:
    """One request as the receiver saw it."""

    number: int  # 1-based arrival order
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    verified: bool
    error: str | None  # why verification failed
    received_at: float  # time.time()
    answered: int | None = None  # the status answered; None while pending
    lost: bool = False  # the client was gone when the answer was written

    @property
    def webhook_id(self) -> str | None:
        """The webhook-id header."""
        return self.headers.get("webhook-id")

    @property
    def payload(self) -> Any:
        """The JSON body."""
        return json.loads(self.body)


class _Handler(LoopbackHandler):
    """Takes POSTs only, like a brand's endpoint (other methods get the standard 501)."""

    server_version = "EventReceiver/1.0"


class EventReceiver(LoopbackServer):
    """A brand's webhook endpoint on 127.0.0.1 for one test."""

    handler_class = _Handler
    thread_name = "event-receiver"

    def __init__(self, secret: str = SECRET, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.secret = secret
        self._webhook = Webhook(secret)
        self._scripts: list[Script] = []
        self._requests: list[Received] = []

    # --- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The events.url to configure."""
        return super().url + PATH

    # --- scripting --------------------------------------------------------------------------

    def fail(self, status: int, *, times: int | None = 1) -> Script:
        """Answer `status` (500, 503, 429, 410 …) to the next `times` verified requests."""
        return self._add(Script(status=status, times=times))

    def fail_every(self, k: int, status: int = 503) -> Script:
        """Answer `status` to every k-th request (counting every request received)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        return self._add(Script(status=status, times=None, every=k))

    def delay(self, seconds: float, *, times: int | None = 1) -> Script:
        """Answer the next `times` verified requests `seconds` late (the delivery still counts if the client waits)."""
        return self._add(Script(delay=seconds, times=times))

    def _add(self, script: Script) -> Script:
        with self._cond:
            self._scripts.append(script)
        return script

    # --- inspection -------------------------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        """Every request so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def deliveries(self) -> list[Received]:
        """Verified requests answered 2xx."""
        with self._cond:
            return [r for r in self._requests
                    if r.verified and not r.lost and r.answered is not None and 200 <= r.answered < 300]

    def wait_for(self, count: int, timeout: float = 3.0) -> list[Received]:
        """Block until `count` deliveries arrived; AssertionError on timeout."""
        return self._wait(lambda: self.deliveries, count, timeout, "deliveries")

    def wait_for_requests(self, count: int, timeout: float = 3.0) -> list[Received]:
        """Block until `count` requests were answered (whatever the answer); AssertionError on timeout."""
        return self._wait(lambda: [r for r in self.requests if r.answered is not None], count, timeout, "answered requests")

    def _wait(self, select: Any, count: int, timeout: float, what: str) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found: list[Received] = select()
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    statuses = [(r.number, r.verified, r.answered) for r in self._requests]
                    raise AssertionError(f"EventReceiver: expected {count} {what} within {timeout}s, got {statuses}")
                self._cond.wait(left)

    # --- serving ----------------------------------------------------------------------------

    def _handle(self, handler: LoopbackHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in handler.headers.items()}
        try:
            self._webhook.verify(body, headers)
            verified, error = True, None
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: a malformed signature header
            verified, error = False, str(exc) or type(exc).__name__
        with self._cond:
            record = Received(number=len(self._requests) + 1, path=handler.path, headers=headers, body=body,
                              verified=verified, error=error, received_at=time.time())
            self._requests.append(record)
            script = None
            if verified:
                script = next((s for s in self._scripts if s.applies(record.number)), None)
                if script is not None:
                    script.hits += 1
        status = 204
        if not verified:
            status = 400
        elif handler.path != PATH:
            status = 404
        elif script is not None:
            if script.delay:
                self._stop.wait(script.delay)
            status = script.status or status
        answer = json.dumps({"error": error}).encode() if error else b""
        # Recorded before the answer is written, so a client that has its answer always finds it here.
        with self._cond:
            record.answered = status
            self._cond.notify_all()
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", str(len(answer)))
            if answer:
                handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(answer)
            handler.wfile.flush()
        except OSError:  # the client left (its timeout fired)
            handler.close_connection = True
            with self._cond:
                record.lost = True
                self._cond.notify_all()


@pytest.fixture
def event_receiver() -> Iterator[EventReceiver]:
    """A started EventReceiver with SECRET, closed after the test."""
    with EventReceiver(SECRET) as receiver:
        yield receiver
