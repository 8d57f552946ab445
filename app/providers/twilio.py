"""The Twilio adapter: webhook signatures, inbound and status payloads, and sending through the REST API.

Webhook handlers go verify signature → parse_inbound / parse_status → act. Sending uses the
official `twilio` library against `api_url`, with a timeout, and turns every failure into
`SendError` (see app.providers.base for the model). The outbox sends with `send_async`: the
library's own async client (`AsyncTwilioHttpClient`, aiohttp) awaited on the event loop, one
pooled session per loop with keep-alive connections; `send` (requests, thread-safe) is for
callers without a loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlencode

import aiohttp
import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator, get_signature_algorithm
from twilio.rest import Client

from app.errors import InvalidPayload, InvalidPhone
from app.phone import inbound_address, mask, receiving_address, whatsapp_user_id
from app.providers import rest
from app.providers.base import (
    CHANNEL_SMS,
    MAX_INTEGER,
    DeliveryStatus,
    InboundSms,
    Media,
    OutboundSms,
    SendError,
    SendResult,
    StatusUpdate,
    whole_number,
)

logger = logging.getLogger("optline.twilio")

PROVIDER = "twilio"
DEFAULT_API_URL = "https://api.twilio.com"

# REST API error codes (https://www.twilio.com/docs/api/errors).
ERROR_AUTHENTICATE = 20003  # wrong account SID or auth token
ERROR_NOT_FOUND = 20404  # no such resource (or not this account's)
ERROR_TOO_MANY_REQUESTS = 20429  # rate limited, with HTTP 429
ERROR_INTERNAL = 20500  # Twilio-side failure, with HTTP 500
ERROR_UNAVAILABLE = 20503  # Twilio-side overload, with HTTP 503
ERROR_INVALID_TO = 21211  # the To number is not a valid phone number
ERROR_REGION_NOT_ENABLED = 21408  # the account may not send to the To number's country
ERROR_BODY_REQUIRED = 21602  # no Body (and no media)
ERROR_FROM_REQUIRED = 21603  # neither From nor MessagingServiceSid
ERROR_TO_REQUIRED = 21604  # no To
ERROR_FROM_NOT_CAPABLE = 21606  # the From number is not an SMS-capable number of this account
ERROR_TO_UNREACHABLE = 21612  # Twilio cannot route to the To number
ERROR_NOT_MOBILE = 21614  # the To number is a landline or cannot receive SMS
ERROR_BODY_TOO_LONG = 21617  # Body over 1600 characters
ERROR_UNSUBSCRIBED = 21610  # the recipient texted STOP to this sender: sending is refused
# Delivery error codes, carried by status callbacks (ErrorCode) for undelivered/failed texts.
ERROR_QUEUE_OVERFLOW = 30001  # too many texts queued on the sender
ERROR_UNREACHABLE_HANDSET = 30003  # handset off or out of coverage
ERROR_MESSAGE_BLOCKED = 30004  # blocked by the recipient or the carrier
ERROR_UNKNOWN_DESTINATION = 30005  # the number does not exist
ERROR_LANDLINE = 30006  # landline or unreachable carrier
ERROR_CARRIER_FILTERED = 30007  # the carrier filtered it as spam
ERROR_UNKNOWN = 30008  # the carrier gave no reason

# Codes that are never worth retrying whatever the HTTP status says; 21610 also unsubscribes.
PERMANENT_CODES = frozenset(
    {
        ERROR_AUTHENTICATE,
        ERROR_INVALID_TO,
        ERROR_REGION_NOT_ENABLED,
        ERROR_BODY_REQUIRED,
        ERROR_FROM_REQUIRED,
        ERROR_TO_REQUIRED,
        ERROR_FROM_NOT_CAPABLE,
        ERROR_UNSUBSCRIBED,
        ERROR_TO_UNREACHABLE,
        ERROR_NOT_MOBILE,
        ERROR_BODY_TOO_LONG,
        ERROR_UNREACHABLE_HANDSET,
        ERROR_MESSAGE_BLOCKED,
        ERROR_UNKNOWN_DESTINATION,
        ERROR_LANDLINE,
        ERROR_CARRIER_FILTERED,
    }
)

# Twilio MessageStatus values (outbound lifecycle plus the inbound ones) to ours.
STATUS_MAP: dict[str, DeliveryStatus] = {
    "accepted": DeliveryStatus.QUEUED,  # a Messaging Service took it, sender not chosen yet
    "scheduled": DeliveryStatus.QUEUED,  # to be sent at SendAt
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.SENDING,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,  # a read receipt (RCS, WhatsApp) implies delivery
    "undelivered": DeliveryStatus.UNDELIVERED,
    # Part of the text reached the handset; a reply we cannot count on, so not "delivered".
    "partially_delivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "canceled": DeliveryStatus.FAILED,  # a scheduled text cancelled before it was sent
    # Inbound statuses: never reported for a text we sent, mapped so a stray one is not an error.
    "receiving": DeliveryStatus.SENDING,
    "received": DeliveryStatus.DELIVERED,
}

OPT_OUT_TYPES = frozenset({"STOP", "HELP", "START"})
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"  # key=…,algorithm=HMAC_SHA256
SIGNATURE_ALGORITHMS = frozenset({HMAC_SHA1, HMAC_SHA256})
MAX_MEDIA = 10  # Twilio delivers at most 10 attachments on one MMS

# Message SIDs: SM… for SMS, MM… for MMS, then 32 hex digits.
_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")


# --- webhook signatures ------------------------------------------------------------------


@runtime_checkable
class MultiDict(Protocol):
    """A form with repeatable keys, such as starlette's FormData or Django's QueryDict."""

    def getlist(self, key: Any) -> list[Any]:
        """Every value for `key`, in order."""
        ...

    def __iter__(self) -> Any:
        """The distinct keys."""
        ...


FormParams = MultiDict | Mapping[str, str] | Mapping[str, Sequence[str]] | Iterable[tuple[str, str]]


class FormPairs:
    """A multi-dict over (key, value) pairs, the shape RequestValidator reads repeated keys from.

    `getall` is what RequestValidator tries first; starlette's multi-dict has only `getlist`
    (a scan of every pair), so the validator paid an AttributeError and a scan per key.
    """

    __slots__ = ("_values",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            if key in self._values:
                self._values[key].append(value)
            else:
                self._values[key] = [value]

    def getall(self, key: str) -> list[str]:
        """Every value for `key`."""
        return self._values.get(key, [])

    getlist = getall

    def __iter__(self) -> Any:
        """The distinct keys."""
        return iter(self._values)

    def __bool__(self) -> bool:
        """True when any parameter was received."""
        return bool(self._values)


def _as_multidict(params: FormParams) -> MultiDict:
    """Every parameter received, with repeated keys kept, in the shape RequestValidator reads."""
    if hasattr(params, "getlist") or hasattr(params, "getall"):
        return params  # type: ignore[return-value]
    if isinstance(params, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in params.items():
            if isinstance(value, str):
                pairs.append((key, value))
            else:
                pairs.extend((key, item) for item in value)
        return FormPairs(pairs)
    return FormPairs(params)


class TwilioSignature:
    """Checks X-Twilio-Signature: HMAC of URL + sorted parameters, keyed by the auth token (SHA-1), or, when
    Twilio names a Webhook Setting in X-Twilio-Webhooks-Signature-Settings, by its shared key with the
    algorithm the header names (HMAC-SHA256). The official library computes both."""

    def __init__(self, auth_token: str | None, shared_key: str | None = None) -> None:
        if not auth_token and not shared_key:
            raise ValueError("a Twilio auth token or webhook shared key is required to check signatures")
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._shared = RequestValidator(shared_key) if shared_key else None

    def valid(self, url: str, params: FormParams, signature: str | None, settings: str | None = None) -> bool:
        """True when `signature` signs `url` and every parameter received; False when missing or unverifiable."""
        if not signature:
            return False
        # Repeated keys are all signed by Twilio, so all must count: a dict would keep one
        # value and let a forged duplicate through (or fail a genuine request).
        form = _as_multidict(params)
        if settings:
            # A Webhooks Rule matched: the shared key signed it, with the header's algorithm.
            # Fail closed without that key, and for an algorithm the library does not know.
            algorithm = get_signature_algorithm(settings)
            if self._shared is None or algorithm.upper() not in SIGNATURE_ALGORITHMS:
                return False
            return bool(self._shared.validate(url, form, signature, algorithm=algorithm))
        if self._validator is None:
            return False
        # One HMAC for the usual case (Twilio signed exactly our public URL); validate() then
        # tries the URL with and without its port, which costs two more.
        if hmac.compare_digest(self._validator.compute_signature(url, form), signature):
            return True
        return bool(self._validator.validate(url, form, signature))

    def sign(self, url: str, params: FormParams) -> str:
        """The signature Twilio would send for `url` and `params` (for tests and `optline simulate`)."""
        assert self._validator is not None
        return str(self._validator.compute_signature(url, _as_multidict(params)))


# --- webhook payloads --------------------------------------------------------------------


def _text(params: Mapping[str, Any], name: str) -> str | None:
    """The parameter `name` as text, None when absent; a non-text value is a mangled payload."""
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidPayload(f"{name} is not text", field=name)


def _message_sid(params: Mapping[str, Any]) -> str:
    """MessageSid, checked for the SM…/MM… shape."""
    sid = (_text(params, "MessageSid") or "").strip()
    if not sid:
        raise InvalidPayload("MessageSid is missing", field="MessageSid")
    if not _MESSAGE_SID.fullmatch(sid):
        raise InvalidPayload("MessageSid is not a Twilio message SID", field="MessageSid")
    return sid


def _optional(params: Mapping[str, Any], name: str) -> str | None:
    """A parameter that may be absent; blank counts as absent."""
    value = (_text(params, name) or "").strip()
    return value or None


def _integer(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    """A non-negative integer parameter up to MAX_INTEGER; blank or absent gives `default`."""
    raw = (_text(params, name) or "").strip()
    if not raw:
        return default
    value = whole_number(raw)
    if value is None:
        raise InvalidPayload(f"{name} is not a whole number from 0 to {MAX_INTEGER}", field=name)
    return value


def _without_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def parse_inbound(params: Mapping[str, str]) -> InboundSms:
    """Decode the form of an inbound SMS/MMS webhook; raises InvalidPayload naming the bad field."""
    if "\x00" in "".join(params) + "".join(value for value in params.values() if isinstance(value, str)):
        # PostgreSQL's text cannot hold NUL, in a value or in a key (the whole form is stored).
        # Refusing the form would lose the text (a STOP among them), so the character is kept
        # visible as U+FFFD instead.
        params = {_without_nul(key): _without_nul(value) if isinstance(value, str) else value
                  for key, value in params.items()}
    message_id = _message_sid(params)
    raw_from = (_text(params, "From") or "").strip()
    if not raw_from:
        raise InvalidPayload("From is missing", field="From")
    try:
        # WhatsApp, Messenger and RCS texts reach the same webhook as whatsapp:+1…, messenger:…
        sender = inbound_address(raw_from)
    except InvalidPhone as exc:
        raise InvalidPayload(f"From: {exc.message}", field="From") from exc
    to = receiving_address(_text(params, "To") or "")
    if not to:
        raise InvalidPayload("To is missing", field="To")
    from_address = None if sender.channel == CHANNEL_SMS else sender.raw
    external = _optional(params, "ExternalUserId")
    if external is not None and sender.channel == "whatsapp" and sender.phone is not None:
        # WhatsApp names the user by a business-scoped id as well as the phone: keep the id as
        # the address, so a later text that carries the id alone can be tied to this phone.
        user_id = whatsapp_user_id(external)
        if user_id is not None:
            from_address = user_id
        else:
            logger.info("ignoring an ExternalUserId that is no WhatsApp business-scoped user id on %s", message_id)
    opt_out_type = (_optional(params, "OptOutType") or "").upper() or None
    if opt_out_type is not None and opt_out_type not in OPT_OUT_TYPES:
        # A type Twilio may add later must not cost us the text; the body still decides.
        logger.warning("ignoring unknown OptOutType %r on %s", opt_out_type, message_id)
        opt_out_type = None
    num_media = _integer(params, "NumMedia", 0) or 0
    return InboundSms(
        provider=PROVIDER,
        message_id=message_id,
        account_id=_optional(params, "AccountSid"),
        from_phone=sender.phone,
        to=to,
        service_id=_optional(params, "MessagingServiceSid"),
        body=_text(params, "Body") or "",  # verbatim; absent on a media-only MMS
        num_media=num_media,
        opt_out_type=opt_out_type,
        params=dict(params),
        channel=sender.channel,
        media=_media(params, num_media),
        from_address=from_address,
    )


def _media(params: Mapping[str, Any], count: int) -> tuple[Media, ...]:
    """An MMS's attachments: MediaUrl0… with MediaContentType0…, as many as NumMedia says (at most 10)."""
    found = []
    for index in range(min(count, MAX_MEDIA)):
        url = _optional(params, f"MediaUrl{index}")
        if url is not None:
            found.append(Media(url=url, content_type=_optional(params, f"MediaContentType{index}")))
    return tuple(found)


def parse_status(params: Mapping[str, str]) -> StatusUpdate:
    """Decode a delivery status callback; raises InvalidPayload for an unknown MessageStatus."""
    message_id = _message_sid(params)
    raw_status = (_text(params, "MessageStatus") or "").strip()
    if not raw_status:
        raise InvalidPayload("MessageStatus is missing", field="MessageStatus")
    status = STATUS_MAP.get(raw_status.lower())
    if status is None:
        raise InvalidPayload(f"unknown MessageStatus {raw_status!r}", field="MessageStatus")
    return StatusUpdate(
        message_id=message_id,
        status=status,
        error_code=_integer(params, "ErrorCode", None),
    )


# --- sending -----------------------------------------------------------------------------


def _is_transient(http_status: int | None, code: int | None) -> bool:
    """Whether a refused send is worth retrying: 429 and 5xx, unless the code says otherwise."""
    if code in PERMANENT_CODES:
        return False
    return http_status is not None and (http_status == 429 or http_status >= 500)


def send_error(http_status: int | None, code: int | None, message: str) -> SendError:
    """The SendError for an error answer of the Twilio API."""
    return SendError(
        message or f"Twilio answered HTTP {http_status}",
        code=code,
        http_status=http_status,
        transient=_is_transient(http_status, code),
        opted_out=code == ERROR_UNSUBSCRIBED,
    )


_LIBRARY_PREFIX = "Unable to create record"


def _api_error(exc: TwilioRestException | TwilioServiceException, retry_after: float | None = None) -> SendError:
    """Translate the library's API error, whichever of its two shapes it came in; `retry_after` from a 429's header."""
    status = int(exc.status) if exc.status is not None else None
    code: int | None
    try:
        code = int(exc.code) if exc.code is not None else None
    except (TypeError, ValueError):
        code = None
    # Without a Twilio code in the body, the library repeats the HTTP status as the code.
    if code is not None and code == status:
        code = None
    if isinstance(exc, TwilioRestException):
        # The library prefixes Twilio's message with its own "Unable to create record: ".
        message = str(exc.msg or "").removeprefix(_LIBRARY_PREFIX).removeprefix(": ")
    else:
        message = exc.detail or exc.title
    error = send_error(status, code, message)
    if status == 429:
        error.retry_after = retry_after
    return error


class TwilioProvider:
    """Sends through Twilio's Messages API with the official library; safe to share between threads."""

    name = PROVIDER

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("TwilioProvider needs an account SID and an auth token")
        self.api_url = rest.checked_api_url(api_url, "Twilio")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.timeout = timeout
        # One client per concurrent sender, reused: a requests Session is not documented as
        # thread-safe, and the library's client keeps per-request state on itself.
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        self._closed = False
        self._async: tuple[asyncio.AbstractEventLoop, Client] | None = None

    def _new_client(self) -> Client:
        """A library client that reaches exactly `api_url`, whatever TWILIO_* says."""
        http = _SyncHttp(timeout=self.timeout)
        assert http.session is not None
        # requests re-reads the proxy and CA-bundle variables (HTTPS_PROXY, NO_PROXY,
        # REQUESTS_CA_BUNDLE, ...) from the whole environment on every request: a quarter of
        # a send's CPU. They are read once here, for this API URL, and pinned on the session.
        env = http.session.merge_environment_settings(self.api_url, {}, None, None, None)
        http.session.trust_env = False
        http.session.proxies.update(env["proxies"])
        http.session.verify = env["verify"]
        return self._configure(Client(username=self.account_sid, password=self._auth_token,
                                      account_sid=self.account_sid, http_client=http,
                                      environment=_NO_TWILIO_ENVIRONMENT))

    def _configure(self, client: Client) -> Client:
        """Point a library client at exactly `api_url`, whatever TWILIO_REGION / TWILIO_EDGE say."""
        client.region = None
        client.edge = None
        client.api.base_url = self.api_url
        return client

    def _acquire(self) -> Client:
        """An idle client, or a new one when all are in use."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise SendError("the Twilio provider is closed")
            client = self._new_client()
            self._clients.append(client)
        return client

    def _release(self, client: Client) -> None:
        """Return a client to the idle pool, or close it when the provider closed meanwhile."""
        with self._lock:
            if not self._closed:
                self._idle.put(client)
                return
        _close_client(client)

    def send(self, message: OutboundSms) -> SendResult:
        """Create the message at Twilio; raise SendError when it is refused or unreachable."""
        if self._closed:
            raise SendError("the Twilio provider is closed")
        client = self._acquire()
        try:
            created = client.api.v2010.accounts(self.account_sid).messages.create(**_fields(message))
        except (TwilioRestException, TwilioServiceException) as exc:
            # The library's exception has no headers: this client kept its answer's Retry-After.
            error = _api_error(exc, client.http_client.retry_after)
        except requests.Timeout:
            error = SendError(f"no answer from Twilio within {self.timeout:g}s", transient=True, kind="timeout")
        except requests.ConnectionError as exc:
            error = SendError(f"cannot reach Twilio: {type(exc).__name__}", transient=True, kind="connection")
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            error = SendError(f"bad Twilio API URL: {exc}")
        except requests.RequestException as exc:
            # A broken answer mid-stream (ChunkedEncodingError and the like): outcome unknown.
            error = SendError(f"broken answer from Twilio: {type(exc).__name__}", transient=True, kind="connection")
        except json.JSONDecodeError:
            error = _unreadable()
        else:
            return _accepted(created, message)
        finally:
            self._release(client)
        logger.info("send to %s refused: %r", mask(message.to), error)
        raise error

    async def send_async(self, message: OutboundSms) -> SendResult:
        """`send` on the running event loop, through the library's async client and one pooled session."""
        if self._closed:
            raise SendError("the Twilio provider is closed")
        client = self._async_client()
        try:
            created = await client.api.v2010.accounts(self.account_sid).messages.create_async(**_fields(message))
        except (TwilioRestException, TwilioServiceException) as exc:
            error = _api_error(exc, _RETRY_AFTER.get())
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            error = SendError(f"no answer from Twilio within {self.timeout:g}s", transient=True, kind="timeout")
        except aiohttp.InvalidURL as exc:
            error = SendError(f"bad Twilio API URL: {exc}")
        except aiohttp.ClientConnectionError as exc:
            # Refused, reset, or cut mid-answer: the outcome is unknown, so it is worth a retry.
            error = SendError(f"cannot reach Twilio: {type(exc).__name__}", transient=True, kind="connection")
        except aiohttp.ClientError as exc:
            error = SendError(f"broken answer from Twilio: {type(exc).__name__}", transient=True, kind="connection")
        except json.JSONDecodeError:
            error = _unreadable()
        else:
            return _accepted(created, message)
        logger.info("send to %s refused: %r", mask(message.to), error)
        raise error

    def _async_client(self) -> Client:
        """The library client on the async HTTP client of the running loop, made on its first send."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            # A session belongs to the loop it was made in (`optline simulate` runs its own).
            client = self._configure(Client(
                username=self.account_sid, password=self._auth_token, account_sid=self.account_sid,
                http_client=_AsyncHttp(self.timeout), environment=_NO_TWILIO_ENVIRONMENT))
            self._async = (loop, client)
        return self._async[1]

    async def aclose(self) -> None:
        """Close the async session (in its loop) and the thread clients; later sends raise SendError."""
        self.close()
        pair, self._async = self._async, None
        if pair is not None and pair[0] is asyncio.get_running_loop():
            await pair[1].http_client.close()

    def close(self) -> None:
        """Close every HTTP session; later sends raise SendError."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            _close_client(client)

    def __enter__(self) -> TwilioProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ClientBase reads TWILIO_EDGE / TWILIO_REGION from `environment or os.environ` and rewrites the
# API hostname with them (api.sydney.au1.twilio.com), which would bypass api_url. An empty
# mapping is falsy and means os.environ there, hence a non-empty one without TWILIO_* keys.
_NO_TWILIO_ENVIRONMENT = {"OPTLINE_TWILIO_ENVIRONMENT": "ignored"}


def _fields(message: OutboundSms) -> dict[str, Any]:
    """The library's `messages.create` arguments for `message`."""
    fields: dict[str, Any] = {"to": message.to, "body": message.body}
    if message.service_id is not None:
        fields["messaging_service_sid"] = message.service_id
    else:
        fields["from_"] = message.from_number
    if message.status_callback is not None:
        fields["status_callback"] = message.status_callback
    return fields


def _accepted(created: Any, message: OutboundSms) -> SendResult:
    """The SendResult of a created message; a 2xx without a SID is retried like a timeout."""
    sid = created.sid
    if not sid:
        raise SendError("Twilio accepted the message without a SID", transient=True)
    logger.debug("sent %s to %s: %s", sid, mask(message.to), created.status)
    return SendResult(message_id=str(sid), status=str(created.status or ""))


def _unreadable() -> SendError:
    # A 2xx that is not JSON (a proxy's page?): the text may have been created, so it is
    # treated like a timeout rather than as a final failure.
    return SendError("unreadable answer from Twilio", transient=True)


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# A 429's Retry-After, which the library's exceptions leave out; set per request, per task.
_RETRY_AFTER: ContextVar[float | None] = ContextVar("optline_twilio_retry_after", default=None)


def _retry_after(response: Any) -> float | None:
    """The seconds a 429 answer asks to wait (Retry-After), None for any other answer."""
    return rest.retry_after(response.headers) if response.status_code == 429 else None


class _SyncHttp(TwilioHttpClient):
    """The library's requests client, keeping its last answer's Retry-After (one thread uses it at a time)."""

    retry_after: float | None = None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        """The library's request; notes a 429's Retry-After."""
        self.retry_after = None
        response = super().request(*args, **kwargs)
        self.retry_after = _retry_after(response)
        return response



class _TimedSession:
    """An aiohttp session whose requests keep the session's timeouts when the library passes `timeout=None`.

    aiohttp reads an explicit None as "no timeout at all"; the library always passes one.
    """

    def __init__(self, session: aiohttp.ClientSession, timeouts: aiohttp.ClientTimeout) -> None:
        self._session = session
        self._timeouts = timeouts

    def request(self, **kwargs: Any) -> Any:
        """The session's request, with its timeouts unless the caller named others."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeouts
        return self._session.request(**kwargs)

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._session.close()


class _AsyncHttp(AsyncTwilioHttpClient):
    """The library's async HTTP client with a timeout on every request and quiet request logs.

    The library passes `timeout=None` on each request, which aiohttp reads as "no timeout":
    a hung API would hold a send slot for ever. Its request logging formats every header even
    when INFO is off; here it runs only when INFO is on for its logger.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        # Per connect and per read, as the synchronous client's requests timeout is: a busy
        # machine's slow start does not count against an answer that is flowing.
        timeouts = aiohttp.ClientTimeout(total=None, connect=min(timeout, 5.0), sock_read=timeout)
        self.session = _TimedSession(aiohttp.ClientSession(
            timeout=timeouts, connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30.0)), timeouts)
        self._auth: tuple[Any, str] | None = None

    async def request(self, method: str, url: str, params: Any = None, data: Any = None, headers: Any = None,
                      auth: Any = None, timeout: float | None = None, allow_redirects: bool = False) -> Any:
        """The library's request, with the Basic credentials as a header and the form encoded once."""
        if auth is not None:
            # aiohttp deprecates its `auth` argument (the library still passes it): the same
            # Basic credentials go as a header, encoded once.
            if self._auth is None or self._auth[0] != auth:
                self._auth = (auth, aiohttp.encode_basic_auth(auth[0], auth[1]))
            headers = {**(headers or {}), "Authorization": self._auth[1]}
        if isinstance(data, dict) and (headers or {}).get("Content-Type") == FORM_CONTENT_TYPE:
            # The form the library built, encoded here in one call: aiohttp's FormData route
            # costs several times more for the same bytes.
            data = urlencode(data, doseq=True).encode()
        _RETRY_AFTER.set(None)
        response = await super().request(method, url, params=params, data=data, headers=headers, auth=None,
                                         timeout=timeout, allow_redirects=allow_redirects)
        # Read back by send_async in the same task: concurrent sends share this client.
        _RETRY_AFTER.set(_retry_after(response))
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        """The library's request log, only when its logger would show it."""
        if self.logger.isEnabledFor(logging.INFO):
            super().log_request(kwargs)

    def log_response(self, status_code: int, response: Any) -> None:
        """The library's response log, only when its logger would show it."""
        if self.logger.isEnabledFor(logging.INFO):
            super().log_response(status_code, response)


def _close_client(client: Client) -> None:
    """Close the library client's requests Session and its pooled sockets."""
    http_client = client.http_client
    session = getattr(http_client, "session", None)
    if session is not None:
        session.close()
