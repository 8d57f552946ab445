"""A fake Telnyx API v2 for tests, and Telnyx-signed webhooks.

The wire format follows Telnyx's public reference:
- send: POST /v2/messages (from, to, text, webhook_url) and POST /v2/messages/number_pool
  (messaging_profile_id instead of from), `Authorization: Bearer <API key>`, answered 200
  with `{"data": <message>}` (https://developers.telnyx.com/api/messaging/send-message;
  the message shape is the OpenAPI `OutboundMessagePayload`);
- errors: `{"errors": [{"code": "40300", "title": ..., "detail": ..., "meta": {"url": ...}}]}`
  (https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out shows the 40300
  body; codes and titles from https://support.telnyx.com/en/articles/6505121 and
  https://developers.telnyx.com/docs/messaging/messages/error-codes);
- webhooks: Ed25519 over `"{timestamp}|{body}"` in `telnyx-signature-ed25519`, with
  `telnyx-timestamp` (https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks).

The signing key pair is generated per test (`TelnyxKeys()`), never pasted.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import nacl.signing
import pytest

from tests.fake_rest import Answer, FakeRestApi, ReceivedRequest, Rule

API_KEY = "KEY0123456789ABCDEF_fake"  # the fake's API key
ORGANIZATION_ID = "b448f9cc-a842-4784-98e9-03c1a5872950"
PROFILE_ID = "4000eba1-a0c0-4563-9925-b25e842a7cb6"  # a messaging profile for number-pool sends

# Telnyx error codes the fake answers with: HTTP status, title, detail.
ERRORS: dict[int, tuple[int, str, str]] = {
    10002: (400, "Invalid phone number", "The 'to' address is not a valid phone number."),
    10004: (400, "Missing required parameter", "The '{field}' parameter is required."),
    10007: (500, "Unexpected error", "An unexpected error occurred."),
    10009: (401, "Authentication failed", "The required authentication headers were either invalid or not included in the request."),
    10011: (429, "Too many requests", "Too many requests."),
    40001: (400, "Not routable", "The destination number is either a landline or a non-routable wireless number."),
    # HTTP status as given on https://developers.telnyx.com/api/errors/40300.
    40300: (409, "Blocked due to STOP message", "Messages cannot be sent from '{from}' to '{to}' due to an existing block rule."),
}

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def error_body(code: int, **context: str) -> dict[str, Any]:
    """Telnyx's error JSON for `code`."""
    _, title, detail = ERRORS.get(code, (400, f"Error {code}", ""))
    for key, value in context.items():
        detail = detail.replace("{" + key + "}", value)
    return {
        "errors": [
            {"code": str(code), "title": title, "detail": detail, "meta": {"url": f"https://developers.telnyx.com/api/errors/{code}"}}
        ]
    }


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SentMessage:
    """A message the fake accepted."""

    id: str
    to: str
    from_: str | None
    profile_id: str | None
    text: str
    webhook_url: str | None
    body: Mapping[str, Any]

    def resource(self) -> dict[str, Any]:
        """The API's JSON for this message, as answered to a send."""
        return {
            "record_type": "message",
            "direction": "outbound",
            "id": self.id,
            "type": "SMS",
            "messaging_profile_id": self.profile_id or PROFILE_ID,
            "organization_id": ORGANIZATION_ID,
            "from": {"phone_number": self.from_ or "+18445550001", "carrier": "TELNYX LLC", "line_type": "VoIP"},
            "to": [{"phone_number": self.to, "status": "queued", "carrier": "T-MOBILE USA, INC.", "line_type": "Wireless"}],
            "cc": [],
            "text": self.text,
            "media": [],
            "webhook_url": self.webhook_url,
            "webhook_failover_url": None,
            "encoding": "GSM-7",
            "parts": 1,
            "tags": [],
            "cost": None,
            "received_at": _now_iso(),
            "sent_at": None,
            "completed_at": None,
            "valid_until": None,
            "errors": [],
        }


class FakeTelnyx(FakeRestApi):
    """Telnyx's messaging API on 127.0.0.1: Bearer auth, the API's validation, its JSON answers."""

    thread_name = "fake-telnyx"

    def __init__(self, api_key: str = API_KEY, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self._messages: list[SentMessage] = []

    def fail(self, code: int, *, to: str | None = None, times: int | None = 1, headers: Mapping[str, str] | None = None) -> Rule:
        """Refuse with Telnyx error `code` at its HTTP status."""
        status = ERRORS.get(code, (400, "", ""))[0]
        return self.fail_with(status, error_body(code, to=to or "", **{"from": "+18445550001"}), to=to, times=times, headers=headers)

    def rate_limit(self, retry_after: str | None, *, times: int | None = 1) -> Rule:
        """429 with Telnyx's 10011 body and, when given, a Retry-After header."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return self.fail_with(429, error_body(10011), times=times, headers=headers)

    def fail_http(self, status: int, *, body: dict[str, Any] | str | None = None, times: int | None = 1) -> Rule:
        """A bare HTTP error (500, 502, 503 …), with Telnyx's 10007 body unless `body` is given."""
        return self.fail_with(status, body if body is not None else error_body(10007), times=times)

    def messages(self, to: str | None = None) -> list[SentMessage]:
        """The messages accepted so far."""
        with self._cond:
            return [m for m in self._messages if to is None or m.to == to]

    def fault_target(self, req: ReceivedRequest) -> str | None:
        body = req.json
        return body.get("to") if isinstance(body, dict) else None

    def route(self, req: ReceivedRequest) -> Answer:
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, error_body(10009), {}
        if req.path not in ("/v2/messages", "/v2/messages/number_pool"):
            return 404, {"errors": [{"code": "10005", "title": "Resource not found", "detail": req.path}]}, {}
        if req.method != "POST":
            return 405, {"errors": [{"code": "10015", "title": "Method not allowed"}]}, {}
        body = req.json
        if not isinstance(body, dict):
            return 400, {"errors": [{"code": "10015", "title": "Bad request", "detail": "The body is not JSON."}]}, {}
        scripted = self.scripted(req)
        if scripted is not None:
            return scripted
        pool = req.path.endswith("/number_pool")
        to, text = body.get("to"), body.get("text")
        sender_field = "messaging_profile_id" if pool else "from"
        if not to:
            return 400, error_body(10004, field="to"), {}
        if not isinstance(to, str) or not _E164.fullmatch(to):
            return 400, error_body(10002), {}
        if not body.get(sender_field):
            return 400, error_body(10004, field=sender_field), {}
        if not text and not body.get("media_urls"):
            return 400, error_body(10004, field="text"), {}
        message = SentMessage(
            id=str(uuid.uuid4()),
            to=to,
            from_=None if pool else body["from"],
            profile_id=body.get("messaging_profile_id"),
            text=text or "",
            webhook_url=body.get("webhook_url"),
            body=body,
        )
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        return 200, {"data": message.resource()}, {}


@pytest.fixture
def fake_telnyx() -> Iterator[FakeTelnyx]:
    """A started FakeTelnyx (API_KEY), closed after the test."""
    with FakeTelnyx() as fake:
        yield fake


# --- webhooks --------------------------------------------------------------------------------


@dataclass
class TelnyxKeys:
    """An Ed25519 key pair made for one test: Telnyx's signing key and the public key we configure."""

    signing_key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)

    @property
    def public_key(self) -> str:
        """The base64 public key, as the portal shows it (TELNYX_PUBLIC_KEY)."""
        return base64.b64encode(bytes(self.signing_key.verify_key)).decode("ascii")

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The signature headers Telnyx sends with `body` (lower-case names)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signed = self.signing_key.sign(stamp.encode("ascii") + b"|" + body).signature
        return {
            "telnyx-signature-ed25519": base64.b64encode(signed).decode("ascii"),
            "telnyx-timestamp": stamp,
            "content-type": "application/json",
        }


def event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """A Telnyx webhook body: the event envelope around `payload`."""
    document = {
        "data": {
            "record_type": "event",
            "id": str(uuid.uuid4()),
            "event_type": event_type,
            "occurred_at": _now_iso(),
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": "https://optline.example/webhooks/telnyx"},
    }
    return json.dumps(document).encode("utf-8")


def inbound_payload(*, text: str = "JOIN", from_: str = "+18665550001", to: str = "+18445550001", **extra: Any) -> dict[str, Any]:
    """A message.received payload (shape of the reference's inboundMessage example)."""
    payload: dict[str, Any] = {
        "record_type": "message",
        "direction": "inbound",
        "id": str(uuid.uuid4()),
        "type": "SMS",
        "messaging_profile_id": PROFILE_ID,
        "organization_id": ORGANIZATION_ID,
        "from": {"phone_number": from_, "carrier": "T-MOBILE USA, INC.", "line_type": "Wireless"},
        "to": [{"phone_number": to, "status": "webhook_delivered", "carrier": "TELNYX LLC", "line_type": "VoIP"}],
        "cc": [],
        "text": text,
        "media": [],
        "encoding": "GSM-7",
        "parts": 1,
        "received_at": _now_iso(),
    }
    payload.update(extra)
    return payload


def status_payload(message_id: str, status: str, *, to: str = "+18665550001", errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A message.sent / message.finalized payload for `message_id` at `status`."""
    return {
        "record_type": "message",
        "direction": "outbound",
        "id": message_id,
        "type": "SMS",
        "messaging_profile_id": PROFILE_ID,
        "organization_id": ORGANIZATION_ID,
        "from": {"phone_number": "+18445550001", "carrier": "TELNYX LLC", "line_type": "VoIP"},
        "to": [{"phone_number": to, "status": status, "carrier": "T-MOBILE USA, INC.", "line_type": "Wireless"}],
        "cc": [],
        "text": "You're in!",
        "media": [],
        "errors": errors or [],
    }
