"""The Vonage adapter (Messages API v1): signed JWT webhooks, inbound and status JSON, sending to /v1/messages.

Webhooks go verify → parse → act. Vonage signs each webhook with a JWT in
`Authorization: Bearer …`, HS256 with the account's signature secret; its `payload_hash`
claim is the SHA-256 of the body and `iat` when it was made
(https://developer.vonage.com/en/getting-started/concepts/webhooks#signed-webhooks). The
signature is checked with the official `vonage-jwt` package's `verify_signature`, then the
claims here: the body must hash to payload_hash and iat must be within five minutes, so a
token lifted from one webhook cannot sign another body or be replayed later.

Inbound texts and status reports arrive as JSON with different fields; a body with
`status` is a report.

Sending posts JSON to `{api_url}/v1/messages` over one pooled httpx2 AsyncClient (the
`vonage` SDK's client is synchronous), authenticated as an application (a short-lived RS256
JWT from `vonage-jwt`'s JwtClient, reused until shortly before it expires) or with the API
key and secret (basic auth).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2 as httpx
import jwt
from vonage_jwt.jwt import JwtClient
from vonage_jwt.verify_jwt import verify_signature

from app.errors import InvalidInput, InvalidPayload
from app.phone import mask, our_number, to_e164
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

logger = logging.getLogger("optline.vonage")

PROVIDER = "vonage"
DEFAULT_API_URL = "https://api.nexmo.com"
MESSAGES_PATH = "/v1/messages"

ENV = {
    "application_id": "VONAGE_APPLICATION_ID",  # application auth (with the private key) ...
    "private_key": "VONAGE_PRIVATE_KEY",  # PEM text or a path to the .key file
    "api_key": "VONAGE_API_KEY",  # ... or basic auth with the account's key and secret
    "api_secret": "VONAGE_API_SECRET",
    "signature_secret": "VONAGE_SIGNATURE_SECRET",  # HS256 key of signed webhooks (dashboard → settings)
}

# A webhook's token older (or newer) than this is refused: a replay.
IAT_TOLERANCE = 300.0
# Application JWTs from JwtClient live 15 minutes; one is reused for 10, not minted per send
# (an RS256 signature per request would cost more CPU than the request itself).
APP_JWT_REUSE = 600.0

# Messages API error codes, the number after "#" in an error's `type`
# (https://developer.vonage.com/en/api-errors/messages).
ERROR_THROTTLED = 1000  # over the account's submission capacity: wait and retry
ERROR_MISSING_PARAMS = 1010
ERROR_INVALID_PARAMS = 1020
ERROR_INTERNAL = 1030  # platform error, worth a retry
ERROR_INVALID_MESSAGE = 1040  # e.g. an unrecognised number prefix
ERROR_NUMBER_BARRED = 1050  # the recipient is blacklisted and may not receive messages
ERROR_QUOTA_EXCEEDED = 1070  # no credit left
ERROR_COMMUNICATION_FAILED = 1100  # not submitted: communication failure, worth a retry
ERROR_ILLEGAL_SENDER = 1120  # the from is not allowed here
TRANSIENT_CODES = frozenset({ERROR_THROTTLED, ERROR_INTERNAL, ERROR_COMMUNICATION_FAILED})

# A send to a number that opted out of the sender is accepted (202) and then reported in the
# status webhook as refused (https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers).
# That page gives the SMS API's delivery-receipt code, err-code 9 ("the user has requested
# not to receive messages from the sending number"), but no number for the Messages API's
# error object, so a rejected report is read as an opt-out by that code or by its words.
ERROR_SMS_API_OPTED_OUT = 9
OPT_OUT_CODES = frozenset({ERROR_SMS_API_OPTED_OUT})
OPT_OUT_WORDS = ("opted out", "opted-out", "opt-out", "opt out", "unsubscribed")

# Status webhook `status` values (https://developer.vonage.com/en/messages/concepts/messages-status-callbacks).
STATUS_MAP: dict[str, DeliveryStatus] = {
    "submitted": DeliveryStatus.SENT,  # handed to the carrier (the SMS's billable event)
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,  # OTT/RCS read receipt
    "rejected": DeliveryStatus.FAILED,  # refused by the platform or the provider, or TTL expired
    "undeliverable": DeliveryStatus.FAILED,  # Vonage could not reach the messaging provider
}

# Inbound `channel` to ours.
CHANNELS = {"sms": CHANNEL_SMS, "mms": CHANNEL_SMS, "whatsapp": "whatsapp", "messenger": "messenger",
            "viber_service": "viber", "rcs": "rcs"}
# Inbound `message_type`s that carry a file at `<message_type>.url`.
MEDIA_TYPES = ("image", "audio", "video", "file", "vcard")


# The SMS API (Vonage's older API) posts inbound texts and delivery receipts with `msisdn` and
# `messageId`, by GET (its default), a form or JSON, signed (if at all) with an md5/sha `sig`
# parameter, never the Messages API's JWT (https://developer.vonage.com/en/messaging/sms/guides/inbound-sms).
# An account whose default SMS API is still the SMS API sends only those: optline cannot read or
# verify them, and says so.
SMS_API_FIELDS = ("msisdn", "messageId")
SMS_API_REFUSAL = (
    "a Vonage SMS API webhook (msisdn, messageId): optline reads the Messages API only. In the Vonage dashboard, "
    "API Settings > SMS settings, choose \"Messages API\", link the number to a Messages application whose "
    "inbound URL is {inbound} (status URL {status}), and turn on signed webhooks"
)


def sms_api_webhook(request: WebhookRequest) -> bool:
    """True when the request has the SMS API's shape (query string, form or JSON with msisdn and messageId)."""
    fields: set[str] = {key for key, _value in parse_qsl(urlsplit(request.url).query, keep_blank_values=True)}
    if request.form is not None:
        fields.update(key for key, _value in request.form)
    elif request.body[:1] == b"{":
        try:
            document = json.loads(request.body)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            fields.update(str(key) for key in document)
    return all(field in fields for field in SMS_API_FIELDS)


# --- webhook signatures ----------------------------------------------------------------------


def signature_valid(secret: str, headers: Mapping[str, str], body: bytes, *, now: float) -> bool:
    """True when the bearer JWT is signed with `secret`, hashes exactly `body` and is fresh."""
    auth = (headers.get("authorization") or "").strip()
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    token = token.strip()
    try:
        if not verify_signature(token, secret):
            return False
        # Verified just above; decoded again only to read the claims.
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_iat": False})
    except Exception:  # the SDK wraps PyJWT's errors (bad format, expired exp ...) in its own
        return False
    payload_hash = claims.get("payload_hash")
    issued = claims.get("iat")
    if not isinstance(payload_hash, str) or not isinstance(issued, (int, float)):
        return False
    if abs(now - float(issued)) > IAT_TOLERANCE:
        return False
    return hmac.compare_digest(payload_hash.lower(), hashlib.sha256(body).hexdigest())


# --- webhook payloads ------------------------------------------------------------------------


def _text(payload: Mapping[str, Any], name: str) -> str | None:
    """A text field, stripped; blank or null count as absent; anything else is a mangled payload."""
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{name} is not text", field=name)
    return value.strip() or None


def _required(payload: Mapping[str, Any], name: str) -> str:
    value = _text(payload, name)
    if value is None:
        raise InvalidPayload(f"{name} is missing", field=name)
    return value


def _phone(payload: Mapping[str, Any], name: str) -> str:
    """A number Vonage posted (country code, no "+"), as E.164."""
    raw = _required(payload, name)
    try:
        # A possible number is enough: dropping a STOP over a numbering-plan detail is worse.
        return to_e164(raw)
    except InvalidInput as exc:
        raise InvalidPayload(f"{name}: {exc.message}", field=name) from exc


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPayload("the body is not JSON", field="body") from None
    except RecursionError:  # nested deeper than the decoder's stack: no provider sends that
        raise InvalidPayload("the body is JSON nested too deep", field="body") from None
    if not isinstance(document, dict):
        raise InvalidPayload("the body is not a JSON object", field="body")
    return document


def parse_inbound(payload: Mapping[str, Any]) -> InboundSms:
    """An inbound message webhook as InboundSms; raises InvalidPayload naming the bad field."""
    message_id = _required(payload, "message_uuid")
    raw_channel = (_text(payload, "channel") or "sms").lower()
    channel = CHANNELS.get(raw_channel)
    if channel is None:
        raise InvalidPayload(f"unknown channel {raw_channel!r}", field="channel")
    to = our_number(_required(payload, "to")) or ""
    from_phone = _phone(payload, "from")
    message_type = (_text(payload, "message_type") or "text").lower()
    text = payload.get("text")
    if text is not None and not isinstance(text, str):
        raise InvalidPayload("text is not text", field="text")
    media: list[Media] = []
    if message_type in MEDIA_TYPES:
        item = payload.get(message_type)
        url = _text(item, "url") if isinstance(item, dict) else None
        if url is None:
            raise InvalidPayload(f"{message_type}.url is missing", field=f"{message_type}.url")
        media.append(Media(url=url, content_type=None))
        if text is None and isinstance(item, dict) and isinstance(item.get("caption"), str):
            text = item["caption"]
    return InboundSms(
        provider=PROVIDER,
        message_id=message_id,
        account_id=None,
        from_phone=from_phone,
        to=to,
        service_id=None,
        body=(text or "").replace("\x00", "\ufffd"),
        num_media=len(media),
        opt_out_type=None,  # Vonage does not classify keywords on the Messages API
        params=rest.flatten(payload),
        channel=channel,
        media=tuple(media),
    )


def _error(payload: Mapping[str, Any]) -> tuple[int | None, str]:
    """(code, words) of a report's error object: the code from `type`'s #fragment or a numeric title."""
    error = payload.get("error")
    if error is None:
        return None, ""
    if not isinstance(error, dict):
        raise InvalidPayload("error is not an object", field="error")
    code: int | None = None
    fragment = str(error.get("type") or "").rpartition("#")[2]
    title = str(error.get("title") if error.get("title") is not None else "")
    for candidate in (fragment, title):
        if (found := whole_number(candidate)) is not None:
            code = found
            break
    words = " ".join(str(error.get(key) or "") for key in ("title", "detail")).lower()
    return code, words


def parse_status(payload: Mapping[str, Any]) -> list[StatusUpdate | OptOutSignal]:
    """A status webhook as a StatusUpdate, plus an OptOutSignal when it reports an opted-out recipient."""
    message_id = _required(payload, "message_uuid")
    raw_status = (_text(payload, "status") or "").lower()
    status = STATUS_MAP.get(raw_status)
    if status is None:
        raise InvalidPayload(f"unknown status {raw_status!r}", field="status")
    code, words = _error(payload)
    events: list[StatusUpdate | OptOutSignal] = [StatusUpdate(message_id=message_id, status=status, error_code=code)]
    refused = status in (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED)
    if refused and (code in OPT_OUT_CODES or any(word in words for word in OPT_OUT_WORDS)):
        events.append(
            OptOutSignal(
                provider=PROVIDER,
                phone=_phone(payload, "to"),  # on a report, `to` is the recipient who opted out
                sender=our_number(_text(payload, "from")),
                kind="STOP",
                message_id=message_id,
                error_code=code,
                params=rest.flatten(payload),
            )
        )
    return events


# --- sending ---------------------------------------------------------------------------------


def send_error(http_status: int, body: Any, headers: Mapping[str, str]) -> SendError:
    """The SendError for an error answer (RFC 7807: type, title, detail, instance)."""
    code: int | None = None
    reason = ""
    if isinstance(body, dict):
        fragment = str(body.get("type") or "").rpartition("#")[2]
        code = whole_number(fragment)
        reason = str(body.get("detail") or body.get("title") or "")
    transient = rest.is_transient_status(http_status) or code in TRANSIENT_CODES
    return SendError(
        reason or f"Vonage answered HTTP {http_status}",
        code=code,
        http_status=http_status,
        transient=transient,
        retry_after=rest.retry_after(headers) if http_status == 429 else None,
    )


def _wire_number(e164: str) -> str:
    """Vonage wants numbers with the country code and no "+" (or 00)."""
    return e164[1:] if e164.startswith("+") else e164


class VonageProvider(rest.PooledClient):
    """Verifies, parses and sends for one Vonage application or account; one pooled async client."""

    name = PROVIDER

    def __init__(
        self,
        *,
        signature_secret: str | None,
        application_id: str | None = None,
        private_key: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if application_id and private_key:
            self._jwt: JwtClient | None = JwtClient(application_id, private_key)
            auth: tuple[str, str] | None = None
        elif api_key and api_secret:
            self._jwt = None
            auth = (api_key, api_secret)
        else:
            raise ValueError("VonageProvider needs an application ID and private key, or an API key and secret")
        self.api_url = rest.checked_api_url(api_url, "Vonage")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._secret = signature_secret or None  # none: every webhook is refused (fail closed)
        self._clock = clock
        self._token: tuple[str, float] | None = None  # (application JWT, minted at)
        # Built on the first send, inside the event loop that sends; verify/parse never need it.
        self._new_client = partial(
            rest.new_client, base_url=self.api_url, timeout=timeout, headers={"Accept": "application/json"}, auth=auth
        )
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def verify(self, request: WebhookRequest) -> bool:
        """True when the webhook's JWT is signed with the signature secret, fresh, and hashes its body."""
        if self._secret is None:
            return False
        return signature_valid(self._secret, request.headers, request.body, now=self._clock())

    def refusal(self, request: WebhookRequest) -> str | None:
        """Why a request that failed verification cannot be taken, when it says more than a bad signature."""
        if not sms_api_webhook(request):
            return None
        base = request.url.split("/webhooks/", 1)[0]
        return SMS_API_REFUSAL.format(inbound=f"{base}/webhooks/vonage", status=f"{base}/webhooks/vonage/status")

    def parse(self, request: WebhookRequest) -> list[InboundSms | StatusUpdate | OptOutSignal]:
        """The inbound message or status report in a verified webhook."""
        payload = _document(request.body)
        if "status" in payload:
            return list(parse_status(payload))
        return [parse_inbound(payload)]

    def _auth_headers(self) -> dict[str, str] | None:
        """A Bearer application JWT, minted again only when the last is near its end."""
        if self._jwt is None:
            return None
        now = time.monotonic()
        if self._token is None or now - self._token[1] > APP_JWT_REUSE:
            self._token = (self._jwt.generate_application_jwt().decode("ascii"), now)
        return {"Authorization": f"Bearer {self._token[0]}"}

    async def send(self, message: OutboundSms) -> SendResult:
        """Submit the SMS to the Messages API; raise SendError when it is refused or unreachable.

        An opted-out recipient is not refused here: Vonage answers 202 and reports the
        refusal in the status webhook (see parse_status).
        """
        if self._closed:
            raise SendError("the Vonage provider is closed")
        if message.from_number is None:
            raise SendError("Vonage has no messaging services: a sender number is required")
        body: dict[str, Any] = {
            "message_type": "text",
            "channel": "sms",
            "to": _wire_number(message.to),
            "from": _wire_number(message.from_number),
            "text": message.body,
        }
        if message.status_callback is not None:
            body["webhook_url"] = message.status_callback  # per-message status URL, over the application's
        response = await rest.post(
            self._http(), MESSAGES_PATH, provider="Vonage", timeout=self.timeout, json_body=body,
            headers=self._auth_headers(),
        )
        answer = rest.json_of(response)
        if response.status_code >= 300:
            error = send_error(response.status_code, answer, response.headers)
            logger.info("send to %s refused: %r", mask(message.to), error)
            raise error
        uuid = answer.get("message_uuid") if isinstance(answer, dict) else None
        if not isinstance(uuid, str) or not uuid:
            raise SendError("Vonage accepted the message without a message_uuid", transient=True, http_status=response.status_code)
        logger.debug("sent %s to %s", uuid, mask(message.to))
        return SendResult(message_id=uuid, status="accepted")  # 202: Vonage took it; no status in the answer
