"""What the fake Telnyx, Plivo and Vonage APIs share: recorded requests, scripted faults, one answer writer.

Each fake (tests/fake_<provider>.py) subclasses `FakeRestApi` and writes only `route(req)`,
which checks auth, validates the body as the real API does and answers with the provider's
JSON. Faults are scripted the same way for all of them, tried in order before routing:

    fake.fail_with(status, body, to="+1…")      # the provider's error body at an HTTP status
    fake.rate_limit(retry_after="2")            # 429 with Retry-After and the provider's body
    fake.fail_http(503)                         # a bare 5xx
    fake.delay(2.0)                             # answer late (the message is still created)
    fake.drop()                                 # close the connection without an answer

`requests` holds every request received; `connections` counts the TCP connections accepted,
so tests can prove that several sends reused one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from app.providers.base import OutboundSms, SendError, SendResult, WebhookProvider
from tests.loopback import LoopbackHandler, LoopbackHTTPServer, LoopbackServer

Answer = tuple[int, dict[str, Any] | str, dict[str, str]]


@dataclass
class Rule:
    """A scripted fault for message creation; `times=None` applies it to every match."""

    to: str | None = None  # only requests to this number; None: any
    times: int | None = 1
    delay: float = 0.0  # wait this long before answering (or dropping)
    drop: bool = False  # close the connection without an answer
    status: int | None = None  # answer this HTTP status with `body`; None: answer normally
    body: dict[str, Any] | str | None = None
    headers: Mapping[str, str] | None = None
    hits: int = 0

    def matches(self, to: str | None) -> bool:
        """True when this rule applies to the next request to `to`."""
        if self.times is not None and self.hits >= self.times:
            return False
        return self.to is None or self.to == to


@dataclass
class ReceivedRequest:
    """One HTTP request as the fake received it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names lower-cased
    raw: bytes
    received_at: float
    answered: int | None = None
    dropped: bool = False

    @property
    def json(self) -> Any:
        """The body as JSON, None when it is not JSON."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return None

    @property
    def form(self) -> dict[str, str]:
        """The body as a form (last value of a repeated key)."""
        return dict(parse_qsl(self.raw.decode("utf-8", "replace"), keep_blank_values=True))


class Dropped(Exception):
    """The scripted answer is no answer."""


class _Handler(LoopbackHandler):
    """Every method goes to the owner; TCP_NODELAY so answers do not wait on delayed ACKs."""

    disable_nagle_algorithm = True
    do_GET = do_PUT = do_DELETE = do_PATCH = LoopbackHandler.do_POST

    def setup(self) -> None:
        super().setup()
        self.server.owner._connected()  # type: ignore[attr-defined]


class _Server(LoopbackHTTPServer):
    request_queue_size = 128


class FakeRestApi(LoopbackServer):
    """A provider's REST API on 127.0.0.1: subclasses implement `route` and `fault_target`."""

    server_class = _Server
    handler_class = _Handler

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self._rules: list[Rule] = []
        self._requests: list[ReceivedRequest] = []
        self.connections = 0  # TCP connections accepted so far

    # --- scripting ----------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        """Apply `rule` to coming message creations, in the order added."""
        with self._cond:
            self._rules.append(rule)
        return rule

    def fail_with(
        self,
        status: int,
        body: dict[str, Any] | str,
        *,
        to: str | None = None,
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
    ) -> Rule:
        """Answer `status` with `body` (the provider's error JSON)."""
        return self.add_rule(Rule(to=to, times=times, status=status, body=body, headers=headers))

    def delay(self, seconds: float, *, to: str | None = None, times: int | None = 1) -> Rule:
        """Answer `seconds` late; the message is created even if the client gave up."""
        return self.add_rule(Rule(to=to, times=times, delay=seconds))

    def drop(self, *, to: str | None = None, times: int | None = 1) -> Rule:
        """Read the request, then close the connection without answering."""
        return self.add_rule(Rule(to=to, times=times, drop=True))

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(f"{type(self).__name__}: expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    # --- for subclasses -----------------------------------------------------------------------

    def route(self, req: ReceivedRequest) -> Answer:
        """The answer to `req` (status, body, headers); raise Dropped for none."""
        raise NotImplementedError

    def fault_target(self, req: ReceivedRequest) -> str | None:
        """The recipient a creation request is for, or None when `req` creates nothing."""
        raise NotImplementedError

    def scripted(self, req: ReceivedRequest) -> Answer | None:
        """Apply the first matching rule to a creation request: its answer, or None to go on."""
        with self._cond:
            rule = next((r for r in self._rules if r.matches(self.fault_target(req))), None)
            if rule is not None:
                rule.hits += 1
        if rule is None:
            return None
        if rule.delay and self._stop.wait(rule.delay):
            raise Dropped  # closing: do not hold the test up
        if rule.drop:
            raise Dropped
        if rule.status is not None:
            return rule.status, rule.body if rule.body is not None else "", dict(rule.headers or {})
        return None

    # --- serving ------------------------------------------------------------------------------

    def _connected(self) -> None:
        with self._cond:
            self.connections += 1

    def _handle(self, handler: LoopbackHandler) -> None:
        received_at = time.time()
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        record = ReceivedRequest(
            method=handler.command,
            path=parts.path,
            query=parts.query,
            headers={name.lower(): value for name, value in handler.headers.items()},
            raw=raw,
            received_at=received_at,
        )
        with self._cond:
            self._requests.append(record)
            self._cond.notify_all()
        try:
            status, body, headers = self.route(record)
            answer(handler, status, body, headers)
            record.answered = status
        except Dropped:
            record.dropped = True
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except OSError:  # the client left before the answer (its timeout fired)
            handler.close_connection = True
        with self._cond:
            self._cond.notify_all()


def answer(handler: LoopbackHandler, status: int, body: dict[str, Any] | str, headers: Mapping[str, str]) -> None:
    """Write one HTTP answer with a Content-Length, keeping the connection open."""
    if isinstance(body, str):
        data, content_type = body.encode("utf-8"), "text/html; charset=utf-8"
    else:
        data, content_type = json.dumps(body).encode("utf-8"), "application/json"
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


# --- driving an adapter in a test ------------------------------------------------------------


def outbound(to: str, *, sender: str, callback: str, **fields: Any) -> OutboundSms:
    """A text as the outbox hands one to an adapter: from `sender`, reports to `callback`, unless `fields` differ."""
    values: dict[str, Any] = {"body": "You're in! Reply STOP to opt out.", "from_number": sender, "service_id": None,
                              "status_callback": callback}
    values.update(fields)
    return OutboundSms(to=to, **values)


def send_all(provider: WebhookProvider, *messages: OutboundSms) -> list[SendResult | SendError]:
    """Send each message in turn on one event loop, then close the provider; its result or its SendError each."""

    async def scenario() -> list[SendResult | SendError]:
        results: list[SendResult | SendError] = []
        try:
            for message in messages:
                try:
                    results.append(await provider.send(message))
                except SendError as exc:
                    results.append(exc)
        finally:
            await provider.aclose()
        return results

    return asyncio.run(scenario())


def refusal(provider: WebhookProvider, message: OutboundSms) -> SendError:
    """The SendError sending `message` raises (a test failure when it is accepted)."""
    (result,) = send_all(provider, message)
    assert isinstance(result, SendError), result
    return result
