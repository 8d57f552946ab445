"""The Plivo adapter: signed webhooks (V3, V2), inbound and status forms, sending through the Message API.

Webhooks go verify → parse → act. Plivo signs callbacks with HMAC-SHA256 keyed by the auth
token: V3 over the URL, the sorted form parameters and a per-request nonce
(`X-Plivo-Signature-V3`, `X-Plivo-Signature-V3-Nonce`), V2 over the URL and the nonce alone
(`X-Plivo-Signature-V2`, `X-Plivo-Signature-V2-Nonce`, what its messaging docs describe). Either
is accepted, checked with the official `plivo` package (`validate_v3_signature`, which owns
the canonical string's quirks, and `validate_signature`). V3 carries no
timestamp, so a captured callback could be replayed: harmless here, because a message
UUID already stored changes nothing. V2 signs no parameter, so a V2 nonce is remembered with its
body's hash and refused with any other body (Plivo's own retries repeat the body, and pass).

Plivo posts inbound texts (to the application's message_url) and delivery reports (to the
`url` given at send) as forms with different fields; a form with `Status` is a report.

Sending posts JSON to `{api_url}/v1/Account/{auth_id}/Message/` with basic auth over one
pooled httpx2 AsyncClient; the `plivo` package's own client is synchronous (requests).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any

from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature

import httpx2 as httpx

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

logger = logging.getLogger("optline.plivo")

PROVIDER = "plivo"
DEFAULT_API_URL = "https://api.plivo.com"

ENV = {
    "auth_id": "PLIVO_AUTH_ID",  # account (or subaccount) Auth ID: basic-auth user and URL segment
    "auth_token": "PLIVO_AUTH_TOKEN",  # its Auth Token: basic-auth password and the webhook HMAC key
}

SIGNATURE_HEADER = "x-plivo-signature-v3"
NONCE_HEADER = "x-plivo-signature-v3-nonce"
SIGNATURE_V2_HEADER = "x-plivo-signature-v2"
V2_NONCES_KEPT = 100_000  # V2 nonces remembered with their body's hash (about 10 MB)
NONCE_V2_HEADER = "x-plivo-signature-v2-nonce"

# Delivery error codes, in status callbacks' ErrorCode
# (https://plivo.com/docs/messaging/troubleshooting/error-codes).
ERROR_NONE = 0  # "000": delivered
ERROR_INVALID_MESSAGE = 10  # rejected downstream as an invalid message
ERROR_NETWORK = 20  # carrier network trouble, temporary
ERROR_SPAM = 30  # carrier spam filter
ERROR_INVALID_SOURCE = 40  # src not SMS-enabled or not ours
ERROR_INVALID_DESTINATION = 50  # dst not a valid number
# The recipient texted STOP (END, QUIT, ...) to this number: Plivo's DND feature blocks every
# later message from it to them, "marked failed with error code 200", until they text START
# (https://docs.plivo.com/docs/messaging/concepts/dnd-service/,
# https://support.plivo.com/hc/en-us/articles/360041786171). Twilio's 21610.
ERROR_BLOCKED_BY_STOP = 200

OPT_OUT_CODES = frozenset({ERROR_BLOCKED_BY_STOP})

# Status values of the status callback (https://plivo.com/docs/messaging/api/message/message-status-callbacks).
STATUS_MAP: dict[str, DeliveryStatus] = {
    "queued": DeliveryStatus.QUEUED,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,  # WhatsApp read receipt
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    # Older accounts report a carrier rejection as "rejected" (nyaruka/courier handlers/plivo).
    "rejected": DeliveryStatus.FAILED,
}

# `Type` of an inbound message to our channel.
CHANNELS = {"sms": CHANNEL_SMS, "mms": CHANNEL_SMS, "whatsapp": "whatsapp"}

# `MessageIntent` on inbound SMS: which standard keyword list Plivo matched
# (https://plivo.com/docs/messaging/api/message/handling-incoming); blank otherwise.
MESSAGE_INTENTS = {"optout": "STOP", "optin": "START", "help": "HELP"}

MAX_MEDIA = 10  # Plivo MMS carry at most ten files


# --- webhook signatures ----------------------------------------------------------------------


def _signed_params(form: tuple[tuple[str, str], ...]) -> dict[str, str | list[str]]:
    """The form as the SDK's validator reads it: a repeated key's values as a list (Plivo signs them all)."""
    params: dict[str, str | list[str]] = {}
    for key, value in form:
        if key not in params:
            params[key] = value
        else:
            previous = params[key]
            params[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return params


def signature_valid(auth_token: str, request: WebhookRequest) -> bool:
    """True when the request carries a V3 signature of its URL, form and nonce, or a V2 one of its URL and
    nonce, made with `auth_token`."""
    return _v3_valid(auth_token, request) or _v2_valid(auth_token, request)


def _v3_valid(auth_token: str, request: WebhookRequest) -> bool:
    signature = (request.headers.get(SIGNATURE_HEADER) or "").strip()
    nonce = (request.headers.get(NONCE_HEADER) or "").strip()
    if not signature or not nonce or request.form is None:
        return False
    try:
        return bool(
            validate_v3_signature("POST", request.url, nonce, auth_token, signature, _signed_params(request.form))
        )
    except Exception:  # the SDK raises its own ValidationError (and others) on odd input: refuse it
        logger.info("unreadable Plivo signature on %s", request.url)
        return False


def _v2_valid(auth_token: str, request: WebhookRequest) -> bool:
    """X-Plivo-Signature-V2: base64 HMAC-SHA256 of the URL without its query, then the nonce (the SDK's check).

    What Plivo's messaging callbacks carry (https://docs.plivo.com/docs/messaging/concepts/signature-validation).
    It signs no parameter: a body is trusted because its (URL, nonce, signature) came from Plivo,
    which a captured request could replay with another body; V3 signs the form too.
    """
    signature = (request.headers.get(SIGNATURE_V2_HEADER) or "").strip()
    nonce = (request.headers.get(NONCE_V2_HEADER) or "").strip()
    if not signature or not nonce or not signature.isascii() or not nonce.isascii():
        return False
    try:
        return bool(validate_signature(request.url, nonce, signature, auth_token))
    except Exception:  # odd input the SDK cannot read: refuse it
        logger.info("unreadable Plivo V2 signature on %s", request.url)
        return False


# --- webhook payloads ------------------------------------------------------------------------


def _text(params: Mapping[str, str], name: str) -> str | None:
    """A parameter, stripped; blank counts as absent."""
    return (params.get(name) or "").strip() or None


def _phone(params: Mapping[str, str], name: str) -> str:
    """A number Plivo posted (digits with the country code, no "+"), as E.164."""
    raw = _text(params, name)
    if raw is None:
        raise InvalidPayload(f"{name} is missing", field=name)
    try:
        # A possible number is enough: the carrier delivered the text, and dropping a STOP
        # over a numbering-plan detail is worse than storing an unusual number.
        return to_e164(raw)
    except InvalidInput as exc:
        raise InvalidPayload(f"{name}: {exc.message}", field=name) from exc


def _message_uuid(params: Mapping[str, str]) -> str:
    uuid = _text(params, "MessageUUID")
    if uuid is None:
        raise InvalidPayload("MessageUUID is missing", field="MessageUUID")
    return uuid


def _error_code(params: Mapping[str, str]) -> int | None:
    """ErrorCode as a number; blank, absent and "000" (success) give None."""
    raw = _text(params, "ErrorCode")
    if raw is None:
        return None
    code = whole_number(raw)
    if code is None:
        raise InvalidPayload("ErrorCode is not a number", field="ErrorCode")
    return code or None


def parse_inbound(params: Mapping[str, str]) -> InboundSms:
    """An inbound SMS/MMS/WhatsApp form as InboundSms; raises InvalidPayload naming the bad field."""
    message_id = _message_uuid(params)
    from_phone = _phone(params, "From")
    to = our_number(_text(params, "To"))
    if to is None:
        raise InvalidPayload("To is missing", field="To")
    raw_type = (_text(params, "Type") or "sms").lower()
    channel = CHANNELS.get(raw_type)
    if channel is None:
        raise InvalidPayload(f"unknown Type {raw_type!r}", field="Type")
    # SMS carries its text in Text, MMS and WhatsApp in Body; verbatim, "" for media only.
    body = params.get("Text") if raw_type == "sms" else params.get("Body")
    if body is None:
        body = params.get("Text") or params.get("Body") or ""
    media = _media(params)
    raw_intent = (_text(params, "MessageIntent") or "").lower()
    opt_out_type = MESSAGE_INTENTS.get(raw_intent) if raw_intent else None
    if raw_intent and opt_out_type is None:
        logger.warning("ignoring unknown MessageIntent %r on %s", raw_intent, message_id)
    return InboundSms(
        provider=PROVIDER,
        message_id=message_id,
        account_id=None,
        from_phone=from_phone,
        to=to,
        service_id=_text(params, "PowerpackUUID"),
        body=body.replace("\x00", "\ufffd"),
        num_media=len(media),
        opt_out_type=opt_out_type,
        params=dict(params),
        channel=channel,
        media=media,
    )


def _media(params: Mapping[str, str]) -> tuple[Media, ...]:
    """Media1…MediaN (numbered from 1), as many as MediaCount says."""
    raw_count = _text(params, "MediaCount")
    if raw_count is None:
        count = sum(1 for key in params if key.startswith("Media") and whole_number(key[5:]) is not None)
    elif (given := whole_number(raw_count)) is not None and given <= MAX_MEDIA:
        count = given
    else:
        raise InvalidPayload("MediaCount is not a number up to 10", field="MediaCount")
    # WhatsApp media name their type in MimeType; MMS media come without one.
    mime = _text(params, "MimeType") if count == 1 else None
    media = []
    for index in range(1, count + 1):
        url = _text(params, f"Media{index}")
        if url is None:
            raise InvalidPayload(f"Media{index} is missing", field=f"Media{index}")
        media.append(Media(url=url, content_type=mime))
    return tuple(media)


# PartInfo on the report of one part of a long text: "2 of 3".
_PART_INFO = re.compile(r"([0-9]{1,3}) of ([0-9]{1,3})")
MAX_PARTS = 255  # far above any text Plivo sends (1,600 characters of UCS-2 is 25 parts)
MAX_PARENT_ID = 60  # the whole text's id and "#<part>" fit the 64 characters of a delivery report's id


def _part(params: Mapping[str, str], message_id: str) -> tuple[str, int | None, int | None]:
    """(the whole text's id, part, parts) of a report; part and parts are None for a text in one part.

    A long text goes out in parts, each reported on its own: MessageUUID is the part's,
    ParentMessageUUID the first part's, which is the id the send was answered with, and
    PartInfo says "2 of 3" (https://support.plivo.com/support/solutions/articles/17000012022).
    A report without them, or with a PartInfo that does not read "k of n", is the whole text's.
    """
    info = _PART_INFO.fullmatch(_text(params, "PartInfo") or "")
    parent = _text(params, "ParentMessageUUID")
    if info is None or parent is None:
        if _text(params, "PartInfo") is not None and info is None:
            logger.warning("unreadable PartInfo %r on %s: taken as the whole text's report", params["PartInfo"], message_id)
        return message_id, None, None
    part, parts = int(info[1]), int(info[2])
    if parts == 1 and part == 1:
        return message_id, None, None
    if not 1 <= part <= parts <= MAX_PARTS:
        raise InvalidPayload(f"PartInfo {params['PartInfo']!r} names no part of a text", field="PartInfo")
    if len(parent) > MAX_PARENT_ID:
        raise InvalidPayload(f"ParentMessageUUID is over {MAX_PARENT_ID} characters", field="ParentMessageUUID")
    return parent, part, parts


def parse_status(params: Mapping[str, str]) -> list[StatusUpdate | OptOutSignal]:
    """A status callback as a StatusUpdate (on the whole text, for a part of a long one), plus an
    OptOutSignal for a DND block (error 200)."""
    message_id, part, parts = _part(params, _message_uuid(params))
    raw_status = (_text(params, "Status") or "").lower()
    status = STATUS_MAP.get(raw_status)
    if status is None:
        raise InvalidPayload(f"unknown Status {raw_status!r}", field="Status")
    error_code = _error_code(params)
    events: list[StatusUpdate | OptOutSignal] = [
        StatusUpdate(message_id=message_id, status=status, error_code=error_code, part=part, parts=parts)]
    if error_code in OPT_OUT_CODES:
        events.append(
            OptOutSignal(
                provider=PROVIDER,
                phone=_phone(params, "To"),  # on a report, To is the recipient who blocked us
                sender=our_number(_text(params, "From")),
                kind="STOP",
                message_id=message_id,
                error_code=error_code,
                params=dict(params),
            )
        )
    return events


# --- sending ---------------------------------------------------------------------------------


def send_error(http_status: int, body: Any, headers: Mapping[str, str]) -> SendError:
    """The SendError for an error answer of the Plivo API (`{"api_id": ..., "error": ...}`)."""
    reason = ""
    if isinstance(body, dict):
        error = body.get("error")
        reason = error if isinstance(error, str) else (str(error) if error else "")
    return SendError(
        reason or f"Plivo answered HTTP {http_status}",
        http_status=http_status,
        transient=rest.is_transient_status(http_status),
        retry_after=rest.retry_after(headers) if http_status == 429 else None,
    )


class PlivoProvider(rest.PooledClient):
    """Verifies, parses and sends for one Plivo account; one pooled async client, reused across sends."""

    name = PROVIDER

    def __init__(
        self,
        *,
        auth_id: str,
        auth_token: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
    ) -> None:
        if not auth_id or not auth_token:
            raise ValueError("PlivoProvider needs an Auth ID and an Auth Token")
        self.auth_id = auth_id
        self._auth_token = auth_token
        self.api_url = rest.checked_api_url(api_url, "Plivo")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._path = f"/v1/Account/{auth_id}/Message/"
        # Built on the first send, inside the event loop that sends; verify/parse never need it.
        self._new_client = partial(
            rest.new_client,
            base_url=self.api_url, timeout=timeout, headers={"Accept": "application/json"}, auth=(auth_id, auth_token)
        )
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._v2_nonces: OrderedDict[str, bytes] = OrderedDict()  # nonce -> sha256 of the body it came with
        self._nonce_lock = threading.Lock()

    def verify(self, request: WebhookRequest) -> bool:
        """True when the request carries a valid V3 signature of its URL and form, or a V2 one whose nonce has not
        come with another body."""
        if _v3_valid(self._auth_token, request):
            return True
        if not _v2_valid(self._auth_token, request):
            return False
        # V2 signs the URL and nonce only: a captured request's headers could carry another body (a
        # forged JOIN or YES). Plivo's retries of one callback repeat its body, so a nonce seen before
        # is taken only with the same body. Per process: several processes each keep their own.
        nonce = (request.headers.get(NONCE_V2_HEADER) or "").strip()
        digest = hashlib.sha256(request.body).digest()
        with self._nonce_lock:
            seen = self._v2_nonces.get(nonce)
            if seen is not None and seen != digest:
                logger.warning("Plivo V2 nonce reused with another body on %s: refused", request.url)
                return False
            self._v2_nonces[nonce] = digest
            self._v2_nonces.move_to_end(nonce)
            while len(self._v2_nonces) > V2_NONCES_KEPT:
                self._v2_nonces.popitem(last=False)
        return True

    def parse(self, request: WebhookRequest) -> list[InboundSms | StatusUpdate | OptOutSignal]:
        """The inbound text or delivery report in a verified callback."""
        if request.form is None:
            raise InvalidPayload("the body is not a form", field="body")
        params = dict(request.form)
        if "\x00" in "".join(params.values()):
            params = {key: value.replace("\x00", "\ufffd") for key, value in params.items()}
        if "Status" in params:
            return list(parse_status(params))
        return [parse_inbound(params)]

    async def send(self, message: OutboundSms) -> SendResult:
        """Queue the message at Plivo; raise SendError when it is refused or unreachable.

        An opted-out recipient is not refused here: Plivo accepts the send and reports it
        failed with error 200 in the status callback (see parse_status).
        """
        if self._closed:
            raise SendError("the Plivo provider is closed")
        body: dict[str, Any] = {"dst": message.to, "text": message.body}
        if message.service_id is not None:
            body["powerpack_uuid"] = message.service_id
        else:
            body["src"] = message.from_number
        if message.status_callback is not None:
            body["url"] = message.status_callback
            body["method"] = "POST"
        response = await rest.post(self._http(), self._path, provider="Plivo", timeout=self.timeout, json_body=body)
        answer = rest.json_of(response)
        if response.status_code >= 300:
            error = send_error(response.status_code, answer, response.headers)
            logger.info("send to %s refused: %r", mask(message.to), error)
            raise error
        uuids = answer.get("message_uuid") if isinstance(answer, dict) else None
        if not isinstance(uuids, list) or not uuids or not isinstance(uuids[0], str):
            raise SendError("Plivo accepted the message without a message_uuid", transient=True, http_status=response.status_code)
        logger.debug("sent %s to %s", uuids[0], mask(message.to))
        return SendResult(message_id=uuids[0], status="queued")
