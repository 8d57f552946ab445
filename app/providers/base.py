"""What every SMS provider adapter speaks: the shapes that cross the edge and the send errors.

An adapter converts its provider's payloads into these dataclasses at the edge, so the rest
of optline never sees a provider's field names:

    webhook form ──parse──▶ InboundSms        (one inbound text)
    webhook form ──parse──▶ StatusUpdate      (a delivery report for a text we sent)
    webhook      ──parse──▶ OptOutSignal      (the provider's own report that a phone opted out)
    OutboundSms ──Provider.send──▶ SendResult (the provider accepted the text)
                               └──▶ raises SendError
                                     ├── transient=True   429, 5xx, timeout, connection error:
                                     │                    retry with backoff (the outcome may be
                                     │                    unknown: the provider may have sent it);
                                     │                    kind "timeout" / "connection" when no
                                     │                    answer came back
                                     ├── opted_out=True   the recipient unsubscribed at the
                                     │                    carrier (Twilio 21610): fail the row and
                                     │                    unsubscribe the phone (source `carrier`)
                                     └── otherwise        permanent: fail the row, do not retry

`Provider.send` is synchronous and is called from worker threads; it never raises anything
but `SendError` for a failure of the provider or of the network. `WebhookProvider` is the
shape of the adapters that own their webhooks (Telnyx, Plivo, Vonage): verify and parse a
`WebhookRequest`, and send asynchronously over one pooled connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable
from urllib.parse import unquote_plus

from app.errors import InvalidPayload

# The longest value each identifier's column stores (app.models); a longer one is refused at the
# edge (400) rather than accepted and then failing to store (PostgreSQL refuses what SQLite keeps).
ID_LIMITS = {"message_id": 64, "account_id": 64, "service_id": 64, "to": 40, "from_address": 128, "sender": 40}


def check_lengths(event: object) -> None:
    """Raise InvalidPayload when one of `event`'s identifiers is longer than the database keeps."""
    for name, limit in ID_LIMITS.items():
        value = getattr(event, name, None)
        if isinstance(value, str) and len(value) > limit:
            raise InvalidPayload(f"{name} is longer than {limit} characters", field=name)


@dataclass(frozen=True)
class Media:
    """One attachment of an MMS (or another channel's message), as the provider hosts it."""

    url: str
    content_type: str | None


# Channels a provider may deliver through the same webhook. Consent is per channel (only
# "sms" creates or confirms SMS consent); an opt-out on any of them revokes SMS consent.
CHANNEL_SMS = "sms"


@dataclass(frozen=True)
class InboundSms:
    """One inbound text, decoded from a provider webhook."""

    provider: str  # "twilio"
    message_id: str  # the provider's id for this text (Twilio MessageSid)
    account_id: str | None  # the provider account it arrived on (Twilio AccountSid)
    from_phone: str  # the sender, E.164
    to: str  # the receiving number as the provider sent it (Twilio To)
    service_id: str | None  # Twilio MessagingServiceSid, when the number is in a service
    body: str  # verbatim, "" for a media-only message
    num_media: int  # attachments on an MMS
    opt_out_type: str | None  # "STOP" | "HELP" | "START" when the provider classified it
    params: Mapping[str, str] = field(hash=False)  # every parameter received, for the raw record
    channel: str = CHANNEL_SMS  # "sms", or the channel prefix of the address: "whatsapp", "messenger", "rcs", ...
    media: tuple[Media, ...] = ()  # MMS attachments, in the provider's order
    # The sender's address on its channel as received (messenger:…, whatsapp:+1…); for WhatsApp,
    # the business-scoped user id (whatsapp:US.1234) when Twilio names one, with or without a phone.
    from_address: str | None = None

    def __post_init__(self) -> None:
        """Refuse identifiers too long to store."""
        check_lengths(self)


@dataclass(frozen=True)
class OutboundSms:
    """One text to send: from a number or through a messaging service, never both."""

    to: str  # E.164
    body: str
    from_number: str | None  # send from this number ...
    service_id: str | None  # ... or through this Messaging Service (MG…); exactly one is set
    status_callback: str | None  # where the provider posts delivery reports

    def __post_init__(self) -> None:
        """Refuse a message with both or neither of from_number and service_id."""
        if (self.from_number is None) == (self.service_id is None):
            raise ValueError("OutboundSms needs exactly one of from_number and service_id")


@dataclass(frozen=True)
class SendResult:
    """The provider's answer to an accepted send."""

    message_id: str  # the provider's id (Twilio SM…/MM… sid)
    status: str  # the provider status as answered, e.g. "queued" or "accepted"


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery report for a text we sent."""

    message_id: str  # the id the send was answered with (for one part of a long text: the whole text's)
    status: DeliveryStatus
    error_code: int | None  # the provider's error code on undelivered/failed, else None
    # One part of a long text the provider reports part by part (Plivo's PartInfo "2 of 3"):
    # the part's number and how many there are; None for a report on the whole text.
    part: int | None = None
    parts: int | None = None

    def __post_init__(self) -> None:
        """Refuse identifiers too long to store."""
        check_lengths(self)


class DeliveryStatus(StrEnum):
    """Where a sent text is, in provider-neutral terms."""

    QUEUED = "queued"  # accepted by the provider, not yet handed to a carrier
    SENDING = "sending"  # the provider is handing it to the carrier
    SENT = "sent"  # the carrier accepted it
    DELIVERED = "delivered"  # the carrier confirmed delivery to the handset (final)
    UNDELIVERED = "undelivered"  # the carrier could not deliver it (final)
    FAILED = "failed"  # the provider never sent it (final)

    @property
    def rank(self) -> int:
        """Progress order; a report with a rank not above the current one changes nothing."""
        return STATUS_RANK[self]

    @property
    def final(self) -> bool:
        """True for delivered, undelivered and failed: no later report may replace it."""
        return self.rank == FINAL_RANK

    def advances(self, current: DeliveryStatus | None) -> bool:
        """True when moving from `current` to this status goes forward (reports arrive in any order)."""
        return current is None or self.rank > STATUS_RANK[current]


# Reports arrive in any order (sent after delivered is common), so a row only ever moves up.
STATUS_RANK: Mapping[DeliveryStatus, int] = {
    DeliveryStatus.QUEUED: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.SENT: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.UNDELIVERED: 3,
    DeliveryStatus.FAILED: 3,
}
FINAL_RANK = 3


class SendError(Exception):
    """A send the provider did not accept; the flags tell the outbox what to do next."""

    def __init__(
        self,
        reason: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        transient: bool = False,
        opted_out: bool = False,
        kind: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason  # short text for the outbox row and the logs
        self.code = code  # the provider's error code, when it gave one
        self.http_status = http_status  # the HTTP status, None when there was no answer
        self.transient = transient  # retry with backoff
        self.opted_out = opted_out  # the recipient unsubscribed at the carrier
        self.kind = kind  # "timeout" | "connection" when no answer came back, else None
        self.retry_after = retry_after  # seconds the provider asked us to wait (429 Retry-After), else None

    def __str__(self) -> str:
        """The reason with the code and HTTP status when known."""
        extra = [f"code {self.code}"] if self.code is not None else []
        if self.http_status is not None:
            extra.append(f"HTTP {self.http_status}")
        return f"{self.reason} ({', '.join(extra)})" if extra else self.reason

    def __repr__(self) -> str:
        """Every attribute, for logs and test failures."""
        return (
            f"SendError({self.reason!r}, code={self.code!r}, http_status={self.http_status!r}, "
            f"transient={self.transient!r}, opted_out={self.opted_out!r}, kind={self.kind!r})"
        )


@dataclass(frozen=True)
class OptOutSignal:
    """A provider's own report that a phone opted out of (or back in to) a sender.

    Not a text: the provider classified a keyword itself, or refused a delivery because the
    recipient is blocked. A STOP becomes a carrier opt-out of `phone` on `sender` (source `carrier`).
    """

    provider: str  # "telnyx"
    phone: str  # the subscriber, E.164
    sender: str | None  # our number or short code it concerns, None when the provider did not say
    kind: str  # "STOP" (opted out) or "START" (opted back in)
    message_id: str | None  # the provider's id of the text or report that carried it
    error_code: int | None  # the provider's error code when it came as a refused delivery
    params: Mapping[str, str] = field(hash=False)  # the payload flattened, for the raw record

    def __post_init__(self) -> None:
        """Refuse identifiers too long to store."""
        check_lengths(self)


@dataclass(frozen=True)
class WebhookRequest:
    """One provider webhook as received, before anything is trusted.

    `url` is OPTLINE_PUBLIC_URL + path + query (never the Host header): what the provider
    signed. `headers` has lower-case names. `form` holds the (key, value) pairs, repeated keys
    kept, when the body is application/x-www-form-urlencoded, else None.
    """

    url: str
    headers: Mapping[str, str]
    body: bytes
    form: tuple[tuple[str, str], ...] | None = None


FORM = "application/x-www-form-urlencoded"


def parse_form(text: str) -> list[tuple[str, str]]:
    """`application/x-www-form-urlencoded` → (key, value) pairs, as `parse_qsl(text, keep_blank_values=True)`.

    Most of Twilio's fields need no decoding; unquoting only those with `%` or `+` makes
    this five times cheaper than parse_qsl on a webhook.
    """
    pairs = []
    for item in text.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        pairs.append((key, value))
    return pairs


@runtime_checkable
class Provider(Protocol):
    """An SMS provider adapter: sends one text synchronously, from a worker thread."""

    name: str

    def send(self, message: OutboundSms) -> SendResult:
        """Send `message`; raise SendError when the provider does not accept it."""
        ...


@runtime_checkable
class ExplainsRefusals(Protocol):
    """An adapter that can tell why a webhook it refused will never pass (a provider set up for another API)."""

    def refusal(self, request: WebhookRequest) -> str | None:
        """What to fix, for a request that failed verification; None when it is just unsigned or forged."""
        ...


@runtime_checkable
class WebhookProvider(Protocol):
    """An adapter that verifies and parses its own webhooks and sends asynchronously."""

    name: str

    def verify(self, request: WebhookRequest) -> bool:
        """True when the request carries the provider's valid signature; False for anything else."""
        ...

    def parse(self, request: WebhookRequest) -> list[InboundSms | StatusUpdate | OptOutSignal]:
        """The events in a verified webhook; raises InvalidPayload naming the bad field."""
        ...

    async def send(self, message: OutboundSms) -> SendResult:
        """Send `message`; raise SendError when the provider does not accept it."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections; later sends raise SendError."""
        ...


# The largest value an INTEGER column holds on both databases; providers' counts and codes are far below it.
MAX_INTEGER = 2**31 - 1


def whole_number(text: str) -> int | None:
    """`text` (spaces around it aside) as a whole number from 0 to MAX_INTEGER, else None.

    ASCII digits only: str.isdigit also accepts "²" (which int() refuses) and "٣" (which it
    reads); and a run of digits too long for the column is refused before int() sees it.
    """
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_INTEGER)):
        return None
    value = int(text)
    return value if value <= MAX_INTEGER else None
