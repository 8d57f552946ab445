"""The Telnyx adapter (API v2): Ed25519 webhook signatures, message events, sending through /v2/messages.

Webhooks go verify → parse → act. Telnyx signs `"{telnyx-timestamp}|{raw body}"` with its
Ed25519 key; we check it with the account's public key (PyNaCl, the library Telnyx's own
Python SDK verifies with) and refuse a timestamp more than five minutes off, as the SDK does
(https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks). Telnyx posts one
JSON event per request: `message.received` (inbound), `message.sent` / `message.finalized` /
`message.read` (delivery reports); anything else is acknowledged and ignored.

Sending posts JSON to `{api_url}/v2/messages` (or `/v2/messages/number_pool` through a
messaging profile) with a Bearer API key, over one pooled httpx2 AsyncClient. The official
`telnyx` package is not used to send: version 4.189.0 is 24 MB and 3,340 modules, takes
over three seconds to import and build a client, brings a second HTTP stack (httpx +
httpcore) and retries on its own behind the outbox's back.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from functools import partial
import time
from collections.abc import Callable, Mapping
from typing import Any

import nacl.exceptions
import nacl.signing

import httpx2 as httpx

from app.errors import InvalidInput, InvalidPayload
from app.phone import mask, to_e164
from app.providers import rest
from app.providers.base import (
    CHANNEL_SMS,
    DeliveryStatus,
    InboundSms,
    Media,
    OptOutSignal,
    OutboundSms,
    SendError,
    SendResult,
    StatusUpdate,
    WebhookRequest,
    whole_number,
)

logger = logging.getLogger("optline.telnyx")

PROVIDER = "telnyx"
DEFAULT_API_URL = "https://api.telnyx.com"
MESSAGES_PATH = "/v2/messages"
NUMBER_POOL_PATH = "/v2/messages/number_pool"  # send through a messaging profile's number pool

# Where the credentials come from (read by settings, never by this module).
ENV = {
    "api_key": "TELNYX_API_KEY",  # Bearer key for the REST API (portal → API Keys)
    "public_key": "TELNYX_PUBLIC_KEY",  # base64 Ed25519 public key that checks webhooks
}

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
# Telnyx's SDKs refuse a webhook whose timestamp is more than 5 minutes from now: a replay.
TIMESTAMP_TOLERANCE = 300.0

# API request errors (https://support.telnyx.com/en/articles/6505121-telnyx-messaging-error-codes).
ERROR_INACTIVE_NUMBER = 10001  # the phone number in the request is inactive
ERROR_INVALID_NUMBER = 10002  # the phone number in the request is invalid
ERROR_MISSING_PARAMETER = 10004  # a required parameter is missing
ERROR_NOT_FOUND = 10005  # no such resource
ERROR_UNEXPECTED = 10007  # Telnyx-side failure, worth a retry
ERROR_AUTHENTICATION = 10009  # bad or missing API key
ERROR_RATE_LIMITED = 10011  # too many requests (HTTP 429)
# Delivery errors, in message.finalized `errors` (https://developers.telnyx.com/docs/messaging/messages/error-codes).
ERROR_NOT_ROUTABLE = 40001  # landline or non-routable number
ERROR_SPAM_TEMPORARY = 40002  # carrier spam filter, temporary
ERROR_SPAM_PERMANENT = 40003  # sender permanently blocked by the carrier
ERROR_REJECTED = 40004  # destination carrier rejected it, reason unknown
ERROR_EXPIRED = 40005  # message TTL expired before delivery
ERROR_RECIPIENT_UNAVAILABLE = 40006  # recipient's carrier down
ERROR_UNDELIVERABLE = 40008  # carrier did not accept it
# The recipient texted STOP (or END, QUIT, ...) to this number or its messaging profile:
# Telnyx keeps a block rule and refuses every send to them until they text START.
# "40300 – Blocked due to STOP message" (https://developers.telnyx.com/api/errors/40300,
# https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out). Twilio's 21610.
ERROR_BLOCKED_BY_STOP = 40300

OPT_OUT_CODES = frozenset({ERROR_BLOCKED_BY_STOP})
# Codes that are final whatever the HTTP status says.
PERMANENT_CODES = frozenset(
    {
        ERROR_INACTIVE_NUMBER,
        ERROR_INVALID_NUMBER,
        ERROR_MISSING_PARAMETER,
        ERROR_NOT_FOUND,
        ERROR_AUTHENTICATION,
        ERROR_NOT_ROUTABLE,
        ERROR_SPAM_PERMANENT,
        ERROR_BLOCKED_BY_STOP,
    }
)
TRANSIENT_CODES = frozenset({ERROR_UNEXPECTED, ERROR_RATE_LIMITED})

# `to[].status` of an outbound message (Telnyx OpenAPI, OutboundMessagePayload.to.status).
STATUS_MAP: dict[str, DeliveryStatus] = {
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.SENDING,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,  # an RCS/WhatsApp read receipt implies delivery
    # Final at Telnyx, but the carrier never confirmed: all we know is that it was sent.
    "delivery_unconfirmed": DeliveryStatus.SENT,
    "delivery_failed": DeliveryStatus.UNDELIVERED,
    "expired": DeliveryStatus.UNDELIVERED,  # validity period ran out before delivery
    "sending_failed": DeliveryStatus.FAILED,  # Telnyx never handed it to a carrier
}

INBOUND_EVENT = "message.received"
STATUS_EVENTS = frozenset({"message.sent", "message.finalized", "message.read"})

# `payload.type` to our channel; SMS and MMS are both "sms" consent.
CHANNELS = {"SMS": CHANNEL_SMS, "MMS": CHANNEL_SMS, "RCS": "rcs", "WHATSAPP": "whatsapp"}

# `payload.autoresponse_type`: the keyword class Telnyx's opt-in/out handling matched
# (https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out, "Track opt-out
# behavior via webhooks"); Telnyx has already set or lifted its block rule.
AUTORESPONSE_TYPES = {"stop": "STOP", "start": "START", "help": "HELP"}


# --- webhook signatures ----------------------------------------------------------------------


def _public_key(public_key: str) -> nacl.signing.VerifyKey:
    """The base64 Ed25519 public key from the portal; ValueError when it is not one."""
    try:
        raw = base64.b64decode(public_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Telnyx public key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"the Telnyx public key must be 32 bytes, got {len(raw)}")
    return nacl.signing.VerifyKey(raw)


def signature_valid(
    key: nacl.signing.VerifyKey,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = TIMESTAMP_TOLERANCE,
) -> bool:
    """True when `headers` carry Telnyx's Ed25519 signature of timestamp|body, made within `tolerance`."""
    signature = (headers.get(SIGNATURE_HEADER) or "").strip()
    timestamp = (headers.get(TIMESTAMP_HEADER) or "").strip()
    if not signature or not timestamp or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw_signature) != 64:
        return False
    try:
        key.verify(timestamp.encode("ascii") + b"|" + body, raw_signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


# --- webhook payloads ------------------------------------------------------------------------


def _field(container: Mapping[str, Any], name: str, path: str, kind: type | tuple[type, ...]) -> Any:
    """container[name] checked for `kind`; missing or mistyped raises InvalidPayload naming `path`."""
    value = container.get(name)
    if not isinstance(value, kind):
        raise InvalidPayload(f"{path} is missing or not {_kind_name(kind)}", field=path)
    return value


def _optional_text(container: Mapping[str, Any], name: str, path: str) -> str | None:
    """A text field that may be absent or null; blank counts as absent."""
    value = container.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{path} is not text", field=path)
    return value.strip() or None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "text"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _event(body: bytes) -> tuple[str, str | None, Mapping[str, Any], Mapping[str, Any]]:
    """(event_type, data.id, data.payload, the whole document) of a Telnyx event; InvalidPayload when it is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPayload("the body is not JSON", field="body") from None
    except RecursionError:  # nested deeper than the decoder's stack: no provider sends that
        raise InvalidPayload("the body is JSON nested too deep", field="body") from None
    if not isinstance(document, dict):
        raise InvalidPayload("the body is not a JSON object", field="body")
    data = _field(document, "data", "data", dict)
    event_type = _field(data, "event_type", "data.event_type", str).strip()
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidPayload("data.payload is not an object", field="data.payload")
    return event_type, _optional_text(data, "id", "data.id"), payload or {}, document


def _error_codes(payload: Mapping[str, Any]) -> list[int]:
    """The numeric codes of payload.errors (Telnyx sends them as strings: "40300")."""
    errors = payload.get("errors") or []
    if not isinstance(errors, list):
        raise InvalidPayload("data.payload.errors is not a list", field="data.payload.errors")
    codes = []
    for error in errors:
        raw = error.get("code") if isinstance(error, dict) else None
        text = str(raw).strip() if raw is not None else ""
        if (code := whole_number(text)) is not None:
            codes.append(code)
        else:
            # Refusing the report would lose its status; an error without a code cannot be
            # the 40300 that matters here, so it is only logged.
            logger.info("ignoring a Telnyx error without a numeric code: %r", error)
    return codes


def _first_to(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """payload.to[0], the recipient (our number on an inbound text, theirs on a report)."""
    recipients = _field(payload, "to", "data.payload.to", list)
    if not recipients or not isinstance(recipients[0], dict):
        raise InvalidPayload("data.payload.to is empty", field="data.payload.to")
    return recipients[0]


def parse_inbound(payload: Mapping[str, Any], params: Mapping[str, str], event_id: str | None = None) -> InboundSms:
    """A message.received payload as InboundSms; raises InvalidPayload naming the bad field."""
    # payload.id is the message; Telnyx's own code examples show payloads without it, where
    # the event's data.id (kept across Telnyx's retries of the event) is the best key left.
    message_id = _optional_text(payload, "id", "data.payload.id") or event_id
    if message_id is None:
        raise InvalidPayload("data.payload.id is missing", field="data.payload.id")
    sender = _field(payload, "from", "data.payload.from", dict)
    raw_from = _optional_text(sender, "phone_number", "data.payload.from.phone_number")
    if raw_from is None:
        raise InvalidPayload("data.payload.from.phone_number is missing", field="data.payload.from.phone_number")
    try:
        # A possible number is enough: the carrier delivered the text, and dropping a STOP
        # over a numbering-plan detail is worse than storing an unusual number.
        from_phone = to_e164(raw_from)
    except InvalidInput as exc:
        raise InvalidPayload(f"data.payload.from.phone_number: {exc.message}", field="data.payload.from.phone_number") from exc
    to = _optional_text(_first_to(payload), "phone_number", "data.payload.to.0.phone_number")
    if to is None:
        raise InvalidPayload("data.payload.to.0.phone_number is missing", field="data.payload.to.0.phone_number")
    text = payload.get("text")
    if text is None and isinstance(payload.get("body"), dict):
        text = payload["body"].get("text")  # RCS and WhatsApp carry their text in body.text
    if text is not None and not isinstance(text, str):
        raise InvalidPayload("data.payload.text is not text", field="data.payload.text")
    raw_type = (_optional_text(payload, "type", "data.payload.type") or "SMS").upper()
    channel = CHANNELS.get(raw_type)
    if channel is None:
        raise InvalidPayload(f"unknown message type {raw_type!r}", field="data.payload.type")
    media = _media(payload)
    raw_opt_out = (_optional_text(payload, "autoresponse_type", "data.payload.autoresponse_type") or "").lower()
    opt_out_type = AUTORESPONSE_TYPES.get(raw_opt_out) if raw_opt_out else None
    if raw_opt_out and opt_out_type is None:
        # A custom keyword group: the body still decides what optline does.
        logger.info("ignoring autoresponse_type %r on %s", raw_opt_out, message_id)
    return InboundSms(
        provider=PROVIDER,
        message_id=message_id,
        account_id=_optional_text(payload, "organization_id", "data.payload.organization_id"),
        from_phone=from_phone,
        to=to,
        service_id=_optional_text(payload, "messaging_profile_id", "data.payload.messaging_profile_id"),
        body=(text or "").replace("\x00", "\ufffd"),  # verbatim; absent on a media-only MMS
        num_media=len(media),
        opt_out_type=opt_out_type,
        params=params,
        channel=channel,
        media=media,
    )


def _media(payload: Mapping[str, Any]) -> tuple[Media, ...]:
    """payload.media as Media, in Telnyx's order."""
    items = payload.get("media") or []
    if not isinstance(items, list):
        raise InvalidPayload("data.payload.media is not a list", field="data.payload.media")
    media = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidPayload("a media item is not an object", field=f"data.payload.media.{index}")
        url = _optional_text(item, "url", f"data.payload.media.{index}.url")
        if url is None:
            raise InvalidPayload("a media item has no url", field=f"data.payload.media.{index}.url")
        # The schema says content_type; Telnyx's code examples show the MIME type as `type`.
        content_type = _optional_text(item, "content_type", f"data.payload.media.{index}.content_type")
        if content_type is None:
            content_type = _optional_text(item, "type", f"data.payload.media.{index}.type")
        media.append(Media(url=url, content_type=content_type))
    return tuple(media)


def parse_status(payload: Mapping[str, Any], params: Mapping[str, str]) -> list[StatusUpdate | OptOutSignal]:
    """A message.sent/finalized/read payload as a StatusUpdate, plus an OptOutSignal for a STOP block."""
    message_id = _optional_text(payload, "id", "data.payload.id")
    if message_id is None:
        raise InvalidPayload("data.payload.id is missing", field="data.payload.id")
    recipient = _first_to(payload)
    raw_status = (_optional_text(recipient, "status", "data.payload.to.0.status") or "").lower()
    if not raw_status:
        raise InvalidPayload("data.payload.to.0.status is missing", field="data.payload.to.0.status")
    status = STATUS_MAP.get(raw_status)
    if status is None:
        raise InvalidPayload(f"unknown status {raw_status!r}", field="data.payload.to.0.status")
    codes = _error_codes(payload)
    events: list[StatusUpdate | OptOutSignal] = [
        StatusUpdate(message_id=message_id, status=status, error_code=codes[0] if codes else None)
    ]
    blocked = next((code for code in codes if code in OPT_OUT_CODES), None)
    if blocked is not None:
        raw_to = _optional_text(recipient, "phone_number", "data.payload.to.0.phone_number")
        if raw_to is None:
            raise InvalidPayload("data.payload.to.0.phone_number is missing", field="data.payload.to.0.phone_number")
        sender = payload.get("from") if isinstance(payload.get("from"), dict) else {}
        events.append(
            OptOutSignal(
                provider=PROVIDER,
                phone=_e164(raw_to, "data.payload.to.0.phone_number"),
                sender=_optional_text(sender, "phone_number", "data.payload.from.phone_number"),
                kind="STOP",
                message_id=message_id,
                error_code=blocked,
                params=params,
            )
        )
    return events


def _e164(raw: str, path: str) -> str:
    try:
        return to_e164(raw)
    except InvalidInput as exc:
        raise InvalidPayload(f"{path}: {exc.message}", field=path) from exc


# --- sending ---------------------------------------------------------------------------------


def send_error(http_status: int, body: Any, headers: Mapping[str, str]) -> SendError:
    """The SendError for an error answer of the Telnyx API (`{"errors": [{code, title, detail}]}`)."""
    code: int | None = None
    reason = ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        raw_code = str(first.get("code") or "").strip()
        code = whole_number(raw_code)
        reason = str(first.get("detail") or first.get("title") or "")
    if code in PERMANENT_CODES:
        transient = False
    else:
        transient = rest.is_transient_status(http_status) or code in TRANSIENT_CODES
    return SendError(
        reason or f"Telnyx answered HTTP {http_status}",
        code=code,
        http_status=http_status,
        transient=transient,
        opted_out=code in OPT_OUT_CODES,
        retry_after=rest.retry_after(headers) if http_status == 429 or code == ERROR_RATE_LIMITED else None,
    )


class TelnyxProvider(rest.PooledClient):
    """Verifies, parses and sends for one Telnyx account; one pooled async client, reused across sends."""

    name = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        public_key: str | None,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise ValueError("TelnyxProvider needs an API key")
        self.api_url = rest.checked_api_url(api_url, "Telnyx")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        # Without a public key every webhook is refused (fail closed); sending still works.
        self._key = _public_key(public_key) if public_key else None
        self._clock = clock
        # Built on the first send, inside the event loop that sends; verify/parse never need it.
        self._new_client = partial(
            rest.new_client,
            base_url=self.api_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def verify(self, request: WebhookRequest) -> bool:
        """True when the request carries a fresh, valid Telnyx signature of its exact body."""
        if self._key is None:
            return False
        return signature_valid(self._key, request.headers, request.body, now=self._clock())

    def parse(self, request: WebhookRequest) -> list[InboundSms | StatusUpdate | OptOutSignal]:
        """The events in a verified webhook; [] for an event type optline does not act on."""
        event_type, event_id, payload, document = _event(request.body)
        if event_type == INBOUND_EVENT:
            return [parse_inbound(payload, rest.flatten(document), event_id)]
        if event_type in STATUS_EVENTS:
            return list(parse_status(payload, rest.flatten(document)))
        return []

    async def send(self, message: OutboundSms) -> SendResult:
        """Create the message at Telnyx; raise SendError when it is refused or unreachable."""
        if self._closed:
            raise SendError("the Telnyx provider is closed")
        body: dict[str, Any] = {"to": message.to, "text": message.body}
        if message.service_id is not None:
            path = NUMBER_POOL_PATH
            body["messaging_profile_id"] = message.service_id
        else:
            path = MESSAGES_PATH
            body["from"] = message.from_number
        if message.status_callback is not None:
            body["webhook_url"] = message.status_callback
        response = await rest.post(self._http(), path, provider="Telnyx", timeout=self.timeout, json_body=body)
        answer = rest.json_of(response)
        if response.status_code >= 300:
            error = send_error(response.status_code, answer, response.headers)
            logger.info("send to %s refused: %r", mask(message.to), error)
            raise error
        data = answer.get("data") if isinstance(answer, dict) else None
        message_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(message_id, str) or not message_id:
            # Accepted, maybe created, but we cannot tell which message it is: retry like a timeout.
            raise SendError("Telnyx accepted the message without an id", transient=True, http_status=response.status_code)
        recipients = data.get("to") if isinstance(data.get("to"), list) else []
        status = recipients[0].get("status") if recipients and isinstance(recipients[0], dict) else None
        logger.debug("sent %s to %s", message_id, mask(message.to))
        return SendResult(message_id=message_id, status=str(status or "queued"))
