"""A fake Plivo Message API for tests, and V3-signed Plivo callbacks.

The wire format follows Plivo's public reference:
- send: POST /v1/Account/{auth_id}/Message/ with JSON (src or powerpack_uuid, dst, text,
  url, method) and HTTP basic auth (Auth ID, Auth Token), answered 202 with
  `{"api_id", "message": "message(s) queued", "message_uuid": [...]}`
  (https://www.plivo.com/docs/messaging/api/messages, https://docs.plivo.com/docs/messaging/api/response);
- errors: `{"api_id": ..., "error": ...}` at 400 / 401 / 404 / 429 / 5xx (same pages);
- callbacks: form posts carrying X-Plivo-Signature-V3 and X-Plivo-Signature-V3-Nonce
  (https://docs.plivo.com/docs/voice/xml/request/validation): base64 HMAC-SHA256, keyed by
  the Auth Token, of the URL, the sorted parameters and the nonce, in the canonical form
  that plivo/plivo-python's plivo/utils/signature_v3.py defines. `sign_plivo` rebuilds it
  here on its own, so the adapter (which checks with that SDK module) is tested against an
  independent signer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.fake_rest import Answer, FakeRestApi, ReceivedRequest, Rule

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"  # the fake's Auth ID (20 characters, like Plivo's)
AUTH_TOKEN = "ZmFrZS1wbGl2by1hdXRoLXRva2VuLTAxMjM0NQ"  # its Auth Token, also what signs callbacks
POWERPACK = "d35f2e82-d387-427f-8594-6fa07613c43a"

_E164ISH = re.compile(r"\+?[1-9][0-9]{6,14}")


def error_body(error: str) -> dict[str, Any]:
    """Plivo's error JSON."""
    return {"api_id": str(uuid.uuid1()), "error": error}


@dataclass(frozen=True)
class SentMessage:
    """A message the fake accepted."""

    uuid: str
    dst: str
    src: str | None
    powerpack_uuid: str | None
    text: str
    url: str | None
    method: str | None


class FakePlivo(FakeRestApi):
    """Plivo's Message API on 127.0.0.1: basic auth, the API's validation, its JSON answers."""

    thread_name = "fake-plivo"

    def __init__(self, auth_id: str = AUTH_ID, auth_token: str = AUTH_TOKEN, **kw: Any) -> None:
        super().__init__(**kw)
        self.auth_id = auth_id
        self.auth_token = auth_token
        self._messages: list[SentMessage] = []

    def refuse(self, status: int, error: str, *, to: str | None = None, times: int | None = 1) -> Rule:
        """Answer `status` with Plivo's error body."""
        return self.fail_with(status, error_body(error), to=to, times=times)

    def rate_limit(self, retry_after: str | None, *, times: int | None = 1) -> Rule:
        """429 with Plivo's body and, when given, Retry-After."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return self.fail_with(429, error_body("rate_limit_exceeded"), times=times, headers=headers)

    def fail_http(self, status: int, *, body: dict[str, Any] | str | None = None, times: int | None = 1) -> Rule:
        """A server error, with Plivo's body unless `body` is given."""
        return self.fail_with(status, body if body is not None else error_body("server error"), times=times)

    def messages(self, dst: str | None = None) -> list[SentMessage]:
        with self._cond:
            return [m for m in self._messages if dst is None or m.dst == dst]

    def fault_target(self, req: ReceivedRequest) -> str | None:
        body = req.json
        return body.get("dst") if isinstance(body, dict) else None

    def route(self, req: ReceivedRequest) -> Answer:
        if _basic_auth(req.headers.get("authorization")) != (self.auth_id, self.auth_token):
            return 401, error_body("authentication_failed"), {}
        if req.path != f"/v1/Account/{self.auth_id}/Message/":
            return 404, error_body("not found"), {}
        if req.method != "POST":
            return 405, error_body("method not allowed"), {}
        body = req.json
        if not isinstance(body, dict):
            return 400, error_body("invalid_parameter: the body is not JSON"), {}
        scripted = self.scripted(req)
        if scripted is not None:
            return scripted
        dst, text = body.get("dst"), body.get("text")
        if not body.get("src") and not body.get("powerpack_uuid"):
            return 400, error_body("invalid_parameter: src or powerpack_uuid is required"), {}
        if not isinstance(dst, str) or not _E164ISH.fullmatch(dst):
            return 400, error_body("invalid_parameter: dst is not a valid number"), {}
        if not text:
            return 400, error_body("invalid_parameter: text is required"), {}
        message = SentMessage(
            uuid=str(uuid.uuid1()),
            dst=dst,
            src=body.get("src"),
            powerpack_uuid=body.get("powerpack_uuid"),
            text=text,
            url=body.get("url"),
            method=body.get("method"),
        )
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        return 202, {"api_id": str(uuid.uuid1()), "message": "message(s) queued", "message_uuid": [message.uuid]}, {}


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


@pytest.fixture
def fake_plivo() -> Iterator[FakePlivo]:
    with FakePlivo() as fake:
        yield fake


# --- callbacks -------------------------------------------------------------------------------


def sign_plivo(url: str, pairs: Iterable[tuple[str, str]], nonce: str, auth_token: str = AUTH_TOKEN) -> str:
    """X-Plivo-Signature-V3 for a POST of `pairs` to `url`, as Plivo computes it.

    The URL without its query, then "?" and the query's pairs sorted (joined with "&"),
    then "." when both a query and a form are present; then the form's keys sorted, each
    key followed by its value (a repeated key once per value, values sorted); then "." and
    the nonce.
    """
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    form: dict[str, list[str]] = {}
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    query: dict[str, list[str]] = {}
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        query.setdefault(key, []).append(value)
    query_string = "&".join(
        "&".join(f"{key}={value}" for value in sorted(values)) if len(values) > 1 else f"{key}={values[0]}"
        for key, values in sorted(query.items())
    )
    signed = base
    if query_string or form:
        signed += "?" + query_string
    if query_string and form:
        signed += "."
    signed += "".join(key + value for key, values in sorted(form.items()) for value in sorted(values))
    digest = hmac.new(auth_token.encode(), f"{signed}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_headers(url: str, pairs: Iterable[tuple[str, str]], auth_token: str = AUTH_TOKEN) -> dict[str, str]:
    """The headers of a Plivo callback of `pairs` to `url` (lower-case names), with a fresh nonce."""
    nonce = secrets.token_hex(10)
    return {
        "x-plivo-signature-v3": sign_plivo(url, pairs, nonce, auth_token),
        "x-plivo-signature-v3-nonce": nonce,
        "content-type": "application/x-www-form-urlencoded",
    }


def form_body(pairs: Iterable[tuple[str, str]]) -> bytes:
    return urlencode(list(pairs)).encode("utf-8")


def inbound_pairs(**fields: str | None) -> list[tuple[str, str]]:
    """An inbound SMS callback's fields (handling-incoming attributes); None removes one."""
    params: dict[str, str | None] = {
        "From": "14155550123",
        "To": "14155550100",
        "Type": "sms",
        "Text": "JOIN",
        "Units": "1",
        "TotalRate": "0.0",
        "TotalAmount": "0.0",
        "MessageIntent": "",
        "PowerpackUUID": "",
        "MessageUUID": str(uuid.uuid1()),
    }
    params.update(fields)
    return [(key, value) for key, value in params.items() if value is not None]


def status_pairs(message_uuid: str, status: str, **fields: str | None) -> list[tuple[str, str]]:
    """A status callback's fields (message-status-callbacks attributes); None removes one."""
    params: dict[str, str | None] = {
        "MessageUUID": message_uuid,
        "To": "14155550123",
        "From": "14155550100",
        "Type": "sms",
        "Status": status,
        "Units": "1",
        "TotalRate": "0.0050",
        "TotalAmount": "0.0050",
        "ErrorCode": "",
        "ParentMessageUUID": message_uuid,
        "PartInfo": "1 of 1",
        "Sequence": "1",
    }
    params.update(fields)
    return [(key, value) for key, value in params.items() if value is not None]


def as_mapping(pairs: Iterable[tuple[str, str]]) -> Mapping[str, str]:
    return dict(pairs)
