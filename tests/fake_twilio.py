"""A fake Twilio REST API for tests: a real HTTP server on 127.0.0.1 that speaks the wire format.

Not a mock of the library: the code under test uses the real `twilio` package (and its
requests session) pointed at `FakeTwilio.url`. The fake serves

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json        create a message (201)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json  fetch one (200)

checks HTTP basic auth (401, Twilio error 20003), validates like the API (To, Body, From or
MessagingServiceSid) and answers with the API's JSON. Faults are scripted per test with
rules matched in order, by `To` or for the next requests:

    fake.fail(21610, to="+14155550100")     # Twilio error body, HTTP status from the code
    fake.fail_http(503, times=2)            # 429 / 500 / 503 with Twilio's generic body
    fake.delay(2.0)                         # answer late (the message is still created)
    fake.drop()                             # close the connection without an answer

Every request is recorded (`requests`), every created message too (`messages()`,
`wait_for()`). Also here: `sign_twilio` and the payload builders `twilio_inbound_params` /
`twilio_status_params` for webhook tests, and the `fake_twilio` pytest fixture
(`from tests.fake_twilio import FakeTwilio, fake_twilio`). `python -m tests.fake_twilio`
serves one until interrupted, for manual runs and benchmarks.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import re
import secrets
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from app.phone import country_of
from tests.loopback import LoopbackHandler, LoopbackHTTPServer, LoopbackServer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2  # the fake's default account
AUTH_TOKEN = "5c1f0d2e9a7b4c3d8e6f1a2b3c4d5e6f"  # its auth token, also what signs webhooks
SERVICE_SID = "MG" + "fedcba9876543210" * 2  # a Messaging Service SID for tests
API_VERSION = "2010-04-01"

# Twilio error codes the fake answers with: HTTP status and the API's message.
ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (400, "The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (400, "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from} via SMS."),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}
# The code Twilio puts in the body of a bare HTTP error.
HTTP_ERROR_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}

_MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")
_MESSAGE_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")

# GSM 03.38: the basic set costs one septet, the extension set two; anything else is UCS-2.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def num_segments(body: str) -> int:
    """How many SMS segments Twilio bills for `body` (GSM-7 160/153, else UCS-2 70/67)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _rfc2822_now() -> str:
    """The API's date format: Thu, 24 Aug 2023 05:01:45 +0000."""
    return format_datetime(datetime.now(timezone.utc).replace(microsecond=0))


def _sid(prefix: str) -> str:
    """A fresh Twilio SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def error_body(code: int, status: int | None = None, message: str | None = None, **context: str) -> dict[str, Any]:
    """The API's error JSON for `code`, as the library parses it into TwilioRestException."""
    known_status, template = ERRORS.get(code, (400, "Error {code}"))
    text = message if message is not None else template
    for key, value in {"code": str(code), **context}.items():
        text = text.replace("{" + key + "}", value)
    return {
        "code": code,
        "message": text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status if status is not None else known_status,
    }


@dataclass
class Rule:
    """A scripted fault for message creation; `times=None` applies it to every match."""

    to: str | None = None  # only requests to this number; None: any
    times: int | None = 1  # how many matching requests it applies to
    delay: float = 0.0  # wait this long before answering (or dropping)
    drop: bool = False  # close the connection without an answer
    status: int | None = None  # answer this HTTP status with `body`; None: answer normally
    body: dict[str, Any] | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # extra answer headers (Retry-After)
    hits: int = 0  # how many requests it applied to so far

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
    pairs: tuple[tuple[str, str], ...]  # the form, repeated keys kept, in order
    auth: tuple[str, str] | None  # (user, password) from basic auth
    received_at: float  # time.time() when the request line arrived
    answered: int | None = None  # the HTTP status sent; None while pending or when dropped
    dropped: bool = False

    @property
    def form(self) -> dict[str, str]:
        """The form as a dict (the last value of a repeated key)."""
        return dict(self.pairs)


@dataclass(frozen=True)
class SentMessage:
    """A message the fake accepted (answered 201)."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    service_id: str | None
    body: str
    status_callback: str | None
    status: str
    num_segments: int
    date_created: str
    received_at: float
    form: Mapping[str, str]

    def resource(self) -> dict[str, Any]:
        """The API's JSON for this message."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": self.date_created,
            "date_sent": None,
            "date_updated": self.date_created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.service_id,
            "num_media": "1" if self.sid.startswith("MM") else "0",
            "num_segments": str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


class _Dropped(Exception):
    """The scripted answer is no answer."""


class _Handler(LoopbackHandler):
    """Hands every request, whatever its method, to the FakeTwilio that owns the server."""

    server_version = "FakeTwilio/1.0"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle and the
    # client's delayed ACK add 40 ms to every answer.
    disable_nagle_algorithm = True

    do_GET = do_PUT = do_DELETE = do_PATCH = LoopbackHandler.do_POST


class _Server(LoopbackHTTPServer):
    """A deeper listen backlog than the default five."""

    request_queue_size = 128  # bursts of concurrent senders must not wait on SYN retries


class FakeTwilio(LoopbackServer):
    """A Twilio REST API on 127.0.0.1 for one test: scriptable faults, recorded requests."""

    server_class = _Server
    handler_class = _Handler
    thread_name = "fake-twilio"

    def __init__(
        self,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)  # url (OPTLINE_TWILIO_API_URL), start(), close()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._rules: list[Rule] = []
        self._requests: list[ReceivedRequest] = []
        self._messages: list[SentMessage] = []
        self._by_sid: dict[str, SentMessage] = {}

    # --- scripting ----------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        """Apply `rule` to coming message creations (rules are tried in the order added)."""
        with self._cond:
            self._rules.append(rule)
        return rule

    def fail(
        self,
        code: int,
        *,
        status: int | None = None,
        message: str | None = None,
        to: str | None = None,
        times: int | None = 1,
    ) -> Rule:
        """Refuse with Twilio error `code` (21610, 21211, …); HTTP status from ERRORS unless given."""
        body = error_body(code, status, message, to=to or "")
        return self.add_rule(Rule(to=to, times=times, status=int(body["status"]), body=body))

    def fail_http(
        self, status: int, *, body: dict[str, Any] | str | None = None, to: str | None = None, times: int | None = 1,
        headers: Mapping[str, str] | None = None,
    ) -> Rule:
        """Answer HTTP `status` (429, 500, 503 …) with Twilio's generic error body, or `body`, and `headers`."""
        if body is None:
            code = HTTP_ERROR_CODES.get(status, status)
            body = error_body(code, status, None if code in ERRORS else f"HTTP {status}")
        return self.add_rule(Rule(to=to, times=times, status=status, body=body, headers=dict(headers or {})))

    def delay(self, seconds: float, *, to: str | None = None, times: int | None = 1) -> Rule:
        """Answer `seconds` late; like the real API, the message is created even if the client gave up."""
        return self.add_rule(Rule(to=to, times=times, delay=seconds))

    def drop(self, *, to: str | None = None, times: int | None = 1) -> Rule:
        """Read the request, then close the connection without answering."""
        return self.add_rule(Rule(to=to, times=times, drop=True))

    def clear_rules(self) -> None:
        """Forget every scripted fault."""
        with self._cond:
            self._rules.clear()

    def reset(self) -> None:
        """Forget rules, requests and messages."""
        with self._cond:
            self._rules.clear()
            self._requests.clear()
            self._messages.clear()
            self._by_sid.clear()

    # --- inspection ---------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def messages(self, to: str | None = None) -> list[SentMessage]:
        """The messages created so far (answered 201), optionally only those to `to`."""
        with self._cond:
            return [m for m in self._messages if to is None or m.to == to]

    def message(self, sid: str) -> SentMessage:
        """The created message with this SID."""
        with self._cond:
            return self._by_sid[sid]

    def wait_for(self, count: int, timeout: float = 5.0, *, to: str | None = None) -> list[SentMessage]:
        """Block until at least `count` messages (to `to`) were created; AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._select(to)) >= count, timeout):
                got = [(m.to, m.body) for m in self._select(to)]
                raise AssertionError(f"FakeTwilio: expected {count} messages{f' to {to}' if to else ''} within {timeout}s, got {got}")
            return self._select(to)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived (whatever the answer); AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(f"FakeTwilio: expected {count} requests within {timeout}s, got {len(self._requests)}")
            return list(self._requests)

    def _select(self, to: str | None) -> list[SentMessage]:
        return [m for m in self._messages if to is None or m.to == to]

    # --- serving ------------------------------------------------------------------------

    def _handle(self, handler: LoopbackHandler) -> None:
        """Read, record, route and answer one request."""
        received_at = time.time()
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        pairs: list[tuple[str, str]] = []
        if "application/x-www-form-urlencoded" in (handler.headers.get("Content-Type") or ""):
            pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        record = ReceivedRequest(
            method=handler.command,
            path=parts.path,
            query=parts.query,
            headers={name.lower(): value for name, value in handler.headers.items()},
            pairs=tuple(pairs),
            auth=_basic_auth(handler.headers.get("Authorization")),
            received_at=received_at,
        )
        with self._cond:
            self._requests.append(record)
            self._cond.notify_all()
        try:
            status, body, headers = self._route(record)
            _answer(handler, status, body, headers)
            record.answered = status
        except _Dropped:
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

    def _route(self, req: ReceivedRequest) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        """The answer to `req`: status, body and extra headers; raises _Dropped for none."""
        if req.auth != (self.account_sid, self.auth_token):
            return 401, error_body(20003), {"WWW-Authenticate": 'Basic realm="Twilio API"'}
        create = _MESSAGES_PATH.fullmatch(req.path)
        fetch = _MESSAGE_PATH.fullmatch(req.path)
        match = create or fetch
        if match is None or match.group(1) != self.account_sid:
            return 404, error_body(20404, path=req.path), {}
        if fetch is not None:
            if req.method != "GET":
                return 405, error_body(20004, 405, "Method not allowed"), {}
            with self._cond:
                found = self._by_sid.get(fetch.group(2))
            if found is None:
                return 404, error_body(20404, path=req.path), {}
            return 200, found.resource(), {}
        if req.method != "POST":
            return 405, error_body(20004, 405, "Method not allowed"), {}
        return self._create(req)

    def _create(self, req: ReceivedRequest) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        """Create a message as the API does, after any scripted fault."""
        form = req.form
        to = form.get("To")
        with self._cond:
            rule = next((r for r in self._rules if r.matches(to)), None)
            if rule is not None:
                rule.hits += 1
        if rule is not None:
            if rule.delay and self._stop.wait(rule.delay):
                raise _Dropped  # closing: do not hold the test up
            if rule.drop:
                raise _Dropped
            if rule.status is not None:
                return rule.status, rule.body if rule.body is not None else "", rule.headers
        from_ = form.get("From") or None
        service_id = form.get("MessagingServiceSid") or None
        body = form.get("Body", "")
        media = [value for key, value in req.pairs if key == "MediaUrl"]
        context = {"to": to or "", "from": from_ or ""}
        if not to:
            return 400, error_body(21604), {}
        if not _E164.fullmatch(to):
            return 400, error_body(21211, **context), {}
        if not from_ and not service_id:
            return 400, error_body(21603), {}
        if not body and not media and not form.get("ContentSid"):
            return 400, error_body(21602), {}
        if len(body) > 1600:
            return 400, error_body(21617), {}
        message = SentMessage(
            sid=_sid("MM" if media else "SM"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            service_id=service_id,
            body=body,
            status_callback=form.get("StatusCallback") or None,
            # Through a Messaging Service without From the API answers "accepted": the
            # sender is picked later; with a From it is "queued".
            status="queued" if from_ else "accepted",
            num_segments=num_segments(body),
            date_created=_rfc2822_now(),
            received_at=req.received_at,
            form=form,
        )
        with self._cond:
            self._messages.append(message)
            self._by_sid[message.sid] = message
            self._cond.notify_all()
        return 201, message.resource(), {}


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an Authorization: Basic header, None when absent or malformed."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _answer(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | str, headers: Mapping[str, str]) -> None:
    """Write one HTTP answer with a Content-Length, keeping the connection open."""
    if isinstance(body, str):
        data, content_type = body.encode("utf-8"), "text/html; charset=utf-8"
    else:
        data, content_type = json.dumps(body).encode("utf-8"), "application/json; charset=utf-8"
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Twilio-Request-Id", _sid("RQ"))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A started FakeTwilio (ACCOUNT_SID / AUTH_TOKEN), closed after the test."""
    with FakeTwilio() as fake:
        yield fake


# --- webhook helpers -------------------------------------------------------------------


class _Form:
    """Pairs as a multi-dict, so repeated keys are signed the way Twilio signs them."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            self._values.setdefault(key, []).append(value)

    def getlist(self, key: str) -> list[str]:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)


def sign_twilio(url: str, params: Mapping[str, str] | Iterable[tuple[str, str]], auth_token: str = AUTH_TOKEN) -> str:
    """X-Twilio-Signature for a POST of `params` to `url`, as Twilio computes it."""
    pairs = params.items() if isinstance(params, Mapping) else params
    return str(RequestValidator(auth_token).compute_signature(url, _Form(pairs)))


def twilio_inbound_params(**overrides: str | None) -> dict[str, str]:
    """Every field of Twilio's inbound SMS webhook, in Twilio's order; an override of None removes a field.

    MessageSid is fresh each call (MM… when NumMedia > 0) and SmsSid/SmsMessageSid follow it;
    MessagingServiceSid and OptOutType appear only when given; FromCountry, ToCountry and
    NumSegments follow From, To and Body.
    """
    given = dict(overrides)
    raw_media = given.get("NumMedia") or "0"
    num_media = int(raw_media) if raw_media.isdigit() else 0  # a mangled value is passed on as given
    sid = given.get("MessageSid") or _sid("MM" if num_media else "SM")
    from_ = given.get("From", "+14155550123") or ""
    to = given.get("To", "+15005550006") or ""
    body = given.get("Body", "Hello")
    from_country, to_country = country_of(from_), country_of(to)
    us_from, us_to = from_country == "US", to_country == "US"
    params: dict[str, str | None] = {
        "ToCountry": to_country or "US",
        "ToState": "CA" if us_to else "",
        "SmsMessageSid": sid,
        "NumMedia": str(num_media),
        "ToCity": "SAN FRANCISCO" if us_to else "",
        "FromZip": "94105" if us_from else "",
        "SmsSid": sid,
        "FromState": "CA" if us_from else "",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO" if us_from else "",
        "Body": body,
        "FromCountry": from_country or "US",
        "To": to,
        "MessagingServiceSid": None,
        "ToZip": "94105" if us_to else "",
        "NumSegments": str(num_segments(body or "")),
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    for index in range(num_media):
        params[f"MediaContentType{index}"] = "image/jpeg"
        params[f"MediaUrl{index}"] = (
            f"https://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media/{_sid('ME')}"
        )
    params.update(given)
    return {key: value for key, value in params.items() if value is not None}


def twilio_status_params(message_sid: str, status: str, **overrides: str | None) -> dict[str, str]:
    """Every field of Twilio's delivery status callback for `message_sid`; None removes a field.

    ErrorCode appears only when given (Twilio sends it with undelivered/failed).
    """
    params: dict[str, str | None] = {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": "+14155550123",
        "MessagingServiceSid": None,
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": "+15005550006",
        "ApiVersion": API_VERSION,
    }
    if status in ("delivered", "undelivered"):
        params["RawDlrDoneDate"] = datetime.now(timezone.utc).strftime("%y%m%d%H%M")
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


def main() -> None:
    """Serve a FakeTwilio until interrupted and print how to point optline at it."""
    parser = argparse.ArgumentParser(description="A fake Twilio REST API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    args = parser.parse_args()
    with FakeTwilio(args.account_sid, args.auth_token, port=args.port) as fake:
        print(f"OPTLINE_TWILIO_API_URL={fake.url}", flush=True)
        print(f"TWILIO_ACCOUNT_SID={fake.account_sid} TWILIO_AUTH_TOKEN={fake.auth_token}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
