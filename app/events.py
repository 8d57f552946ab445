"""Brand events: JSON webhooks to a brand's CRM, signed per Standard Webhooks, sent through the outbox.

    consent event / unmatched text ──event_row──▶ outbox row (channel "event", same transaction)
        ──OutboxSender──▶ EventPoster(row) ──POST──▶ brand's events.url
                              ├── 2xx                          delivered
                              ├── 408, 429, 5xx, timeout,      SendError(transient=True): retried with
                              │   connection error             backoff, same webhook-id every time
                              └── any other answer (4xx, 3xx)  SendError: the row fails

Three event types:

- `subscription.updated`, for every consent event (a change of status, or an API opt-in that
  restates consent): `subscription_event(...)` builds its data;
- `message.received`, for an inbound text that matched no keyword, or came on another channel
  (WhatsApp, RCS, Messenger) and changed nothing: `message_received_event(...)`;
- `message.flagged`, instead of `message.received`, for a text close to an opt-out that the
  detector did not honour (a negated or ambiguous one): the same data plus `reason`.

Each body is `{"id": "evt_…", "type": …, "timestamp": …, "data": {…}}` with camelCase keys
and RFC 3339 UTC times. Delivery is at least once and not ordered: a retried event can arrive
after a later one, so a receiver deduplicates on `webhook-id` (= the body's `id`) and orders
by `data.occurredAt` / `data.receivedAt`.

Signing secrets: a brand names an environment variable in keywords.yaml
(`events: {url: …, secret_env: ACME_EVENTS_SECRET}`); its value is a Standard Webhooks secret,
`whsec_` followed by the base64 of 24 to 64 random bytes (the prefix is optional). Make one with

    python -c "import base64, os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())"

and give the same value to the brand, whose receiver checks each delivery with any Standard
Webhooks library, e.g. `standardwebhooks.Webhook(secret).verify(body, headers)`. A brand with
`events.url` whose variable is unset, empty or not such a secret stops start-up with one line.

The queue's channel and pending status are written here as plain strings
(app.outbox.queue.CHANNEL_EVENT, OutboxStatus.PENDING); its `Claimed` is imported for types only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2 as httpx
from standardwebhooks import Webhook

from app.errors import ConfigError
from app.keywords import Brand, Rules
from app.models import new_id
from app.providers.base import SendError
from app.providers.rest import transport_error

if TYPE_CHECKING:
    from app.outbox.queue import Claimed

SUBSCRIPTION_UPDATED = "subscription.updated"  # a consent event was written
MESSAGE_RECEIVED = "message.received"  # an inbound text matched no keyword
MESSAGE_FLAGGED = "message.flagged"  # one close to an opt-out that was not honoured: a person should decide

CHANNEL = "event"  # app.outbox.queue.CHANNEL_EVENT (see the module docstring)
_PENDING = "pending"  # app.outbox.queue.OutboxStatus.PENDING

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # Standard Webhooks: secrets SHOULD be 24 to 64 random bytes
USER_AGENT = "optline-events/1"
# A receiver that is overloaded or briefly down answers these; anything else but 2xx is a
# configuration or payload problem that a retry will not fix.
RETRY_STATUSES = frozenset({408, 429})
MAX_READ_BYTES = 64 * 1024  # read at most this much of an answer (enough to reuse the connection)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the API writes times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.value) if isinstance(value, Enum) else str(value)


def subscription_event(
    *,
    brand: str,
    program: str,
    phone: str,
    subscription_id: str,
    event: Any,
    from_status: Any,
    to_status: Any,
    source: Any,
    occurred_at: datetime,
    keyword: str | None = None,
    provider_message_id: str | None = None,
) -> dict[str, Any]:
    """The data of a `subscription.updated` event for one consent event (enums or their strings)."""
    return {
        "brand": brand,
        "program": program,
        "phoneNumber": phone,
        "subscriptionId": subscription_id,
        "event": _text(event),
        "fromStatus": _text(from_status),
        "toStatus": _text(to_status),
        "source": _text(source),
        "keyword": keyword,
        "providerMessageId": provider_message_id,
        "occurredAt": iso(occurred_at),
    }


def message_received_event(
    *,
    brand: str,
    phone: str | None,
    to: str,
    body: str,
    provider_message_id: str,
    received_at: datetime,
    program: str | None = None,
    channel: str = "sms",
    address: str | None = None,
    media: list[dict[str, str | None]] | None = None,
) -> dict[str, Any]:
    """The data of a `message.received` event: an inbound text that matched no keyword, or came on another channel.

    `phoneNumber` is null for a channel address that is no phone number (`address` holds it).
    """
    return {
        "brand": brand,
        "program": program,
        "channel": channel,
        "phoneNumber": phone,
        "address": address if address is not None else phone,
        "to": to,
        "body": body,
        "media": media or [],
        "providerMessageId": provider_message_id,
        "receivedAt": iso(received_at),
    }


def event_row(now: datetime, *, brand: Brand, type: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The outbox row of one event to `brand` (columns EVENT_COLUMNS), or None when the brand has no events.url."""
    if brand.events_url is None:
        return None
    return {
        "channel": CHANNEL, "brand": brand.key, "purpose": type, "url": brand.events_url,
        "payload": {"id": new_id("evt_"), "type": type, "timestamp": iso(now), "data": data}, "body": "",
        "status": _PENDING, "attempts": 0, "next_attempt_at": now, "priority": 2, "created_at": now,
        "updated_at": now,
    }


EVENT_COLUMNS = ("channel", "brand", "purpose", "url", "payload", "body", "status", "attempts", "next_attempt_at",
                 "priority", "created_at", "updated_at")


# --- secrets -------------------------------------------------------------------------------


def parse_secret(value: str) -> bytes:
    """The key bytes of a Standard Webhooks secret (`whsec_` + base64); ValueError when it is not one."""
    raw = value.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"holds {len(key)} bytes, fewer than {MIN_SECRET_BYTES}")
    return key


def event_environ(env_file: str | os.PathLike[str] = ".env") -> Mapping[str, str]:
    """The process environment over the `.env` file, as the settings read it (secrets may live in either)."""
    values: dict[str, str] = {}
    if Path(env_file).is_file():
        from dotenv import dotenv_values  # pydantic-settings' own reader of .env

        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def load_event_secrets(rules: Rules, environ: Mapping[str, str] | None = None) -> dict[str, Webhook]:
    """A signer for every brand with events.url; ConfigError (one line) when its secret is missing or malformed."""
    env = event_environ() if environ is None else environ
    signers: dict[str, Webhook] = {}
    for brand in rules.brands.values():
        if brand.events_url is None:
            continue
        where = f"{rules.path}: brand '{brand.key}' sends events to {brand.events_url}"
        name = brand.events_secret_env
        if not name:
            raise ConfigError(f"{where} but names no events.secret_env")
        value = env.get(name, "").strip()
        hint = "set it to whsec_ + the base64 of 32 random bytes (see app/events.py)"
        if not value:
            raise ConfigError(f"{where} but the environment variable {name} is unset or empty: {hint}")
        try:
            key = parse_secret(value)
        except ValueError as exc:
            raise ConfigError(f"{where} but {name} is not a Standard Webhooks secret (its value {exc}): {hint}") from None
        signers[brand.key] = Webhook(key)
    return signers


def check_event_secrets(rules: Rules, environ: Mapping[str, str] | None = None) -> None:
    """Fail start-up with one ConfigError line when a brand with events.url lacks a usable secret."""
    load_event_secrets(rules, environ)


# --- delivery ------------------------------------------------------------------------------


class EventPoster:
    """Posts claimed event rows to brands, signed per Standard Webhooks; called from sender threads.

    Secrets are read once, here: a missing one raises ConfigError at start-up, not at the
    first event. One HTTP client (thread-safe, pooled) is opened at the first post.
    """

    def __init__(self, rules: Rules, *, timeout: float = 10.0, environ: Mapping[str, str] = os.environ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._signers = load_event_secrets(rules, environ)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise SendError("event delivery is shutting down", transient=True)
            if self._client is None:
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0)),
                    follow_redirects=False,  # a webhook URL that redirects is misconfigured
                    headers={"user-agent": USER_AGENT},
                )
            return self._client

    def reload(self, rules: Rules, environ: Mapping[str, str]) -> None:
        """Use the events secrets of reloaded rules; ConfigError (and nothing changed) when one is missing."""
        self._signers = load_event_secrets(rules, environ)  # one assignment: a send sees old or new

    def close(self) -> None:
        """Close the HTTP client; idempotent."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __call__(self, row: Claimed) -> None:
        """POST the row's payload to its URL; raise SendError (transient for 408/429/5xx and network failures)."""
        signer = self._signers.get(row.brand or "")
        if signer is None:
            raise SendError(f"brand {row.brand!r} has no events secret configured")
        payload = row.payload
        if not row.url or not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise SendError("event row without a URL or a payload id")
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        # The signature time is the send time (receivers refuse stale ones); a retry re-signs
        # with the same webhook-id so the receiver can deduplicate.
        sent_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": payload["id"],
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signer.sign(payload["id"], sent_at, body),
        }
        host = urlsplit(row.url).netloc or row.url
        try:
            with self._http().stream("POST", row.url, content=body.encode("utf-8"), headers=headers) as response:
                status = response.status_code
                answer = _read_some(response)
        except httpx.TransportError as exc:
            raise transport_error(exc, who=host, timeout=self.timeout, bad_url=f"cannot post to {row.url}") from None
        if 200 <= status < 300:
            return
        reason = f"{host} answered {status}" + (f": {answer}" if answer else "")
        raise SendError(reason[:300], http_status=status, transient=status in RETRY_STATUSES or status >= 500)


def _read_some(response: httpx.Response) -> str:
    """Up to MAX_READ_BYTES of the answer, decoded for the outbox row's error reason."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= MAX_READ_BYTES:
            break
    return data[:200].decode("utf-8", "replace").strip()
