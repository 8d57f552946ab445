"""A fake Vonage Messages API for tests, and signed Vonage webhooks.

The wire format follows Vonage's public reference:
- send: POST /v1/messages with JSON (message_type "text", channel "sms", to, from, text,
  webhook_url), authenticated with a Bearer application JWT (RS256, application_id claim)
  or basic auth (API key, secret); answered 202 `{"message_uuid": ...}`
  (https://developer.vonage.com/en/api/messages; numbers with the country code, no "+");
- errors: RFC 7807 JSON `{type: ".../messages-olympus#<code>", title, detail, instance}`
  (https://developer.vonage.com/en/api-errors, /en/api-errors/messages; the 429 body is
  the one Vonage/vonage-java-sdk's MessagesClientTest expects);
- webhooks: `Authorization: Bearer <JWT HS256 with the signature secret>` whose claims hold
  iat, jti, iss "Vonage" and payload_hash = SHA-256 of the body
  (https://developer.vonage.com/en/getting-started/concepts/webhooks#signed-webhooks).

Keys and secrets are made per test (`VonageKeys()`), never pasted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fake_rest import Answer, FakeRestApi, ReceivedRequest, Rule

API_KEY = "abcd1234"
API_SECRET = "fake-vonage-api-secret-0123"
APPLICATION_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
OLYMPUS = "https://developer.nexmo.com/api-errors/messages-olympus"

_WIRE_NUMBER = re.compile(r"[1-9][0-9]{6,14}")


def problem(code: int | str, title: str, detail: str) -> dict[str, Any]:
    """Vonage's RFC 7807 error body."""
    type_ = f"{OLYMPUS}#{code}" if isinstance(code, int) else f"https://developer.nexmo.com/api-errors/#{code}"
    return {"type": type_, "title": title, "detail": detail, "instance": uuid.uuid4().hex}


@lru_cache(maxsize=2)
def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """An RSA key made once per test session and slot: a 2048-bit key costs a CPU-heavy half second."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class VonageKeys:
    """An application key pair and a webhook signature secret, made for the tests (slot 1: another application)."""

    slot: int = 0
    private_key: rsa.RSAPrivateKey = field(init=False)
    signature_secret: str = field(default_factory=lambda: base64.b64encode(uuid.uuid4().bytes * 2).decode())

    def __post_init__(self) -> None:
        self.private_key = _rsa_key(self.slot)

    @property
    def private_pem(self) -> str:
        """The PEM the dashboard hands out (VONAGE_PRIVATE_KEY)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def webhook_headers(self, body: bytes, *, iat: float | None = None, secret: str | None = None,
                        payload_hash: str | None = None) -> dict[str, str]:
        """The headers of a signed webhook carrying `body` (lower-case names)."""
        claims = {
            "iat": int(time.time() if iat is None else iat),
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "payload_hash": payload_hash if payload_hash is not None else hashlib.sha256(body).hexdigest(),
            "api_key": API_KEY,
            "application_id": APPLICATION_ID,
        }
        token = jwt.encode(claims, secret or self.signature_secret, algorithm="HS256")
        return {"authorization": f"Bearer {token}", "content-type": "application/json"}


@dataclass(frozen=True)
class SentMessage:
    message_uuid: str
    to: str
    from_: str
    text: str
    webhook_url: str | None
    auth: str  # "jwt" or "basic"


class FakeVonage(FakeRestApi):
    """Vonage's Messages API on 127.0.0.1: JWT or basic auth, its validation, its JSON answers."""

    thread_name = "fake-vonage"

    def __init__(self, keys: VonageKeys, **kw: Any) -> None:
        super().__init__(**kw)
        self.keys = keys
        self._messages: list[SentMessage] = []

    def fail(self, code: int, title: str, detail: str, *, status: int = 422, to: str | None = None,
             times: int | None = 1) -> Rule:
        """Refuse with Messages API error `code` at `status`."""
        return self.fail_with(status, problem(code, title, detail), to=to, times=times)

    def rate_limit(self, retry_after: str | None, *, times: int | None = 1) -> Rule:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = problem(1010, "Rate Limit Hit", "Please wait, then retry your request")
        return self.fail_with(429, body, times=times, headers=headers)

    def fail_http(self, status: int, *, body: dict[str, Any] | str | None = None, times: int | None = 1) -> Rule:
        return self.fail_with(status, body if body is not None else problem(1030, "Internal error",
                                                                            "There was an error processing your request in the Platform."), times=times)

    def messages(self) -> list[SentMessage]:
        with self._cond:
            return list(self._messages)

    def fault_target(self, req: ReceivedRequest) -> str | None:
        body = req.json
        return body.get("to") if isinstance(body, dict) else None

    def _authenticated(self, header: str | None) -> str | None:
        """"jwt" or "basic" when the request is authorised, else None."""
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return "basic" if (user, password) == (API_KEY, API_SECRET) else None
        if scheme.lower() == "bearer":
            try:
                claims = jwt.decode(credentials, self.keys.public_pem, algorithms=["RS256"])
            except jwt.PyJWTError:
                return None
            return "jwt" if claims.get("application_id") == APPLICATION_ID else None
        return None

    def route(self, req: ReceivedRequest) -> Answer:
        how = self._authenticated(req.headers.get("authorization"))
        if how is None:
            return 401, problem("unathorized", "You did not provide correct credentials.",
                                "Check that you're using the correct credentials, and that your account has this feature enabled"), {}
        if req.path != "/v1/messages":
            return 404, problem("not-found", "Not Found", req.path), {}
        if req.method != "POST":
            return 405, problem("method-not-allowed", "Method Not Allowed", req.method), {}
        body = req.json
        if not isinstance(body, dict):
            return 422, problem(1020, "Invalid params", "The body is not JSON."), {}
        scripted = self.scripted(req)
        if scripted is not None:
            return scripted
        to, from_, text = body.get("to"), body.get("from"), body.get("text")
        if body.get("channel") != "sms" or body.get("message_type") != "text":
            return 422, problem(1020, "Invalid params", "Only SMS text messages are supported here."), {}
        if not to or not from_ or not text:
            return 422, problem(1010, "Missing params", "Your request is incomplete and missing some mandatory parameters."), {}
        if not isinstance(to, str) or not _WIRE_NUMBER.fullmatch(to):
            return 422, problem(1020, "Invalid params", "The value of the `to` parameter is invalid."), {}
        message = SentMessage(str(uuid.uuid4()), to, from_, text, body.get("webhook_url"), how)
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        return 202, {"message_uuid": message.message_uuid}, {}


@pytest.fixture
def vonage_keys() -> VonageKeys:
    return VonageKeys()


@pytest.fixture
def fake_vonage(vonage_keys: VonageKeys) -> Iterator[FakeVonage]:
    with FakeVonage(vonage_keys) as fake:
        yield fake


def inbound_payload(**fields: Any) -> dict[str, Any]:
    """An inbound SMS webhook body (Messages API v1); a field given None is removed."""
    payload: dict[str, Any] = {
        "channel": "sms",
        "message_uuid": str(uuid.uuid4()),
        "to": "447700900000",
        "from": "447700900001",
        "timestamp": "2025-02-03T12:14:25Z",
        "text": "JOIN",
        "sms": {"num_messages": "1"},
        "usage": {"price": "0.0057", "currency": "EUR"},
        "message_type": "text",
    }
    payload.update(fields)
    return {key: value for key, value in payload.items() if value is not None}


def status_payload(message_uuid: str, status: str, **fields: Any) -> dict[str, Any]:
    """A status webhook body for `message_uuid`."""
    payload: dict[str, Any] = {
        "message_uuid": message_uuid,
        "to": "447700900000",
        "from": "447700900001",
        "timestamp": "2025-02-03T12:14:30Z",
        "status": status,
        "channel": "sms",
    }
    payload.update(fields)
    return {key: value for key, value in payload.items() if value is not None}


def body_of(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload).encode("utf-8")
