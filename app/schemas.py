"""API request/response shapes (pydantic v2), camelCase on the wire; the source of the OpenAPI document.

Request models forbid unknown fields and accept only the camelCase names, so a typo or a
snake_case field is a 422 naming it rather than a silent no-op. Response models are built
from snake_case names in code (`validate_by_name`) and dumped by alias.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from app.subscriptions import time_problem

MAX_BATCH = 1000
MAX_ATTRIBUTE_KEY = 100
# Deeper than any real profile or consent proof; the cap keeps recursive code (validation,
# JSON encoding, jsonb) far from Python's recursion limit.
MAX_JSON_DEPTH = 32

_REQUEST = ConfigDict(
    alias_generator=to_camel, validate_by_alias=True, validate_by_name=False, extra="forbid",
)
_RESPONSE = ConfigDict(alias_generator=to_camel, validate_by_alias=True, validate_by_name=True, serialize_by_alias=True)


def _not_empty(value: Any) -> Any:
    # Synerise's rule: "" is refused so that clearing a field is always an explicit null.
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise PydanticCustomError("empty_string", "must not be empty; send null to clear the field")
    return value


NUL_MESSAGE = "must not contain NUL (\\u0000) characters"
SURROGATE_MESSAGE = "must not contain unpaired surrogates (\\ud800 to \\udfff)"
DEPTH_MESSAGE = f"is nested deeper than {MAX_JSON_DEPTH} levels"


def _text_fault(text: str) -> str | None:
    # Neither database can store these: PostgreSQL's text refuses NUL, and a lone surrogate
    # has no UTF-8 form at all (the driver, and the JSON answer, would fail on it).
    if "\x00" in text:
        return NUL_MESSAGE
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_MESSAGE
    return None


def unstorable(value: Any) -> tuple[str, str] | None:
    """The first (dotted path, message) in parsed JSON that cannot be stored: too deep, NUL, or a lone surrogate.

    The path is "" for the value itself. Iterative, so a deep value cannot exhaust the stack.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            fault = _text_fault(item)
            if fault is not None:
                return path, fault
        elif isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                return path, DEPTH_MESSAGE
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and (fault := _text_fault(key)) is not None:
                    return child_path, f"field names {fault}"
                stack.append((child, child_path, depth + 1))
    return None


def _storable(value: Any) -> Any:
    if isinstance(value, str):  # the common case, on every field of every batch item: no walk
        fault = _text_fault(value)
        if fault is not None:
            raise PydanticCustomError("unstorable", fault)
        return value
    found = unstorable(value)
    if found is not None:
        path, message = found
        raise PydanticCustomError("unstorable", "{path}{message}", {"path": f"{path}: " if path else "",
                                                                      "message": message})
    return value


class FieldError(BaseModel):
    """One refused input field."""

    model_config = _RESPONSE

    field: str | None = Field(
        description="The offending field, as a dotted camelCase path (`attributes.plan`, `items`); `body` for the "
                    "body as a whole; null when no one field is at fault.",
    )
    message: str = Field(description="What is wrong with it.")


class OptOutScope(BaseModel):
    """Where an opt-out applies."""

    model_config = _RESPONSE

    program: str = Field(description="The program it ended.")
    sender: str | None = Field(description="The number, short code or Messaging Service the phone used, if known.")


class OptOutInfo(BaseModel):
    """The phone's own opt-out that a refused opt-in ran into: only the phone may undo it."""

    model_config = _RESPONSE

    at: datetime = Field(description="When the phone opted out (RFC 3339, UTC).")
    source: str = Field(description="How: `sms`, `whatsapp`, `rcs`, `messenger` (a texted STOP) or `carrier`.")
    scope: OptOutScope


class Problem(BaseModel):
    """An RFC 9457 problem document: every 4xx/5xx answer of the API."""

    model_config = _RESPONSE

    type: str = Field(description="A URI naming the kind of problem.")
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong, for a human.")
    errors: list[FieldError] = Field(default_factory=list, description="The fields that were refused, one entry each.")
    opt_out: OptOutInfo | None = Field(
        None, description="On a 409 for an opt-in: the phone's own opt-out (a STOP it texted, or a carrier's "
                          "signal), which only the phone can undo by texting a join keyword or START.")


class ProfileIn(BaseModel):
    """A profile upsert or partial update: only the fields sent change; `null` clears a field; `""` is refused."""

    model_config = _REQUEST

    external_id: str | None = Field(
        default=None, max_length=255,
        description="The brand's own id for this person; the first upsert match key. A string; `null` clears it.",
    )
    phone_number: str | None = Field(
        default=None, max_length=40,
        description="A phone number with its country code (`+33612345678` or `33612345678`); without one the "
                    "brand's default region applies. Stored in E.164. The second upsert match key.",
    )
    email: str | None = Field(
        default=None, max_length=254, description="An email address, stored in lower case. The third upsert match key.",
    )
    first_name: str | None = Field(default=None, max_length=200, description="Given name.")
    last_name: str | None = Field(default=None, max_length=200, description="Family name.")
    timezone: str | None = Field(default=None, max_length=64, description="An IANA time zone name, e.g. `Europe/Paris`.")
    attributes: dict[str, JsonValue] | None = Field(
        default=None,
        description="Custom attributes, merged key by key into the stored ones; a `null` value deletes that key; "
                    "`attributes: null` deletes them all.",
    )

    _strings_not_empty = field_validator(
        "external_id", "phone_number", "email", "first_name", "last_name", "timezone", mode="before",
    )(_not_empty)
    # Batch items are checked here, one by one, so such an item fails only itself.
    _strings_storable = field_validator(
        "external_id", "phone_number", "email", "first_name", "last_name", "timezone", "attributes", mode="before",
    )(_storable)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and not key.strip():
                    raise PydanticCustomError("empty_key", "attribute names must not be empty")
                if isinstance(key, str) and len(key) > MAX_ATTRIBUTE_KEY:
                    raise PydanticCustomError(
                        "long_key", "attribute names are at most {limit} characters", {"limit": MAX_ATTRIBUTE_KEY},
                    )
        return value


class ProfileOut(BaseModel):
    """A profile as the API shows it."""

    model_config = _RESPONSE

    id: str = Field(description="optline's id for the profile: `prof_` + 26 characters.")
    external_id: str | None = Field(description="The brand's own id, or null.")
    phone_number: str | None = Field(description="The phone number in E.164, or null.")
    email: str | None = Field(description="The email address (lower case), or null.")
    first_name: str | None = Field(description="Given name, or null.")
    last_name: str | None = Field(description="Family name, or null.")
    timezone: str | None = Field(description="IANA time zone name, or null.")
    attributes: dict[str, JsonValue] = Field(description="Custom attributes; `{}` when none.")
    created_at: datetime = Field(description="When the profile was created (RFC 3339, UTC).")
    updated_at: datetime = Field(description="When a field last changed (RFC 3339, UTC); the `updatedSince` filter reads it.")


class ProfilePage(BaseModel):
    """One page of profiles, oldest change first; follow `nextCursor` until it is null."""

    model_config = _RESPONSE

    items: list[ProfileOut] = Field(description="The profiles on this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def _batch_items(value: Any) -> Any:
    # Items are validated one by one by the service, so a bad item fails only itself;
    # here only the envelope is checked.
    if not isinstance(value, list):
        raise PydanticCustomError("list_type", "must be a list of profiles")
    if not value:
        raise PydanticCustomError("too_short", "must hold at least one profile")
    if len(value) > MAX_BATCH:
        raise PydanticCustomError("too_long", "holds at most {limit} profiles", {"limit": MAX_BATCH})
    return value


class ProfileBatchIn(BaseModel):
    """Up to 1000 profile upserts, applied one by one; one bad item fails only itself."""

    model_config = _REQUEST

    # SkipValidation keeps ProfileIn in the JSON schema while leaving each item unvalidated here.
    items: SkipValidation[list[ProfileIn]] = Field(
        min_length=1, max_length=MAX_BATCH, description="The upserts, each shaped like a `POST /v1/profiles` body.",
    )

    _items_envelope = field_validator("items", mode="before")(_batch_items)


class ProfileBatchResult(BaseModel):
    """The outcome of one batch item: `profile` when it was applied, `error` when it was refused."""

    model_config = _RESPONSE

    index: int = Field(description="The item's position in the request, from 0.")
    status: int = Field(description="The status the item would have had alone: 201 created, 200 updated, 4xx refused.")
    profile: ProfileOut | None = Field(default=None, description="The profile after the upsert (absent on error).")
    error: Problem | None = Field(default=None, description="Why the item was refused (absent on success).")


class ProfileBatchOut(BaseModel):
    """One result per batch item, in request order."""

    model_config = _RESPONSE

    items: list[ProfileBatchResult] = Field(description="The results, one per item, in request order.")


# A consent timestamp may run a little ahead of our clock (the CRM's clock), not more.


class _In(BaseModel):
    model_config = ConfigDict(**_REQUEST, str_strip_whitespace=True)


class ConsentProof(BaseModel):
    """What the person agreed to and where: at least one of termsUrl, termsVersion, sourceText."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    terms_url: str | None = Field(None, max_length=2000, description="URL of the terms shown")
    terms_version: str | None = Field(None, max_length=200, description="version of those terms")
    source_text: str | None = Field(None, max_length=5000, description="the consent language the person saw")

    @model_validator(mode="after")
    def _something(self) -> ConsentProof:
        if not (self.terms_url or self.terms_version or self.source_text):
            raise ValueError("consentProof needs at least one of termsUrl, termsVersion, sourceText")
        return self


def _client_time(value: datetime) -> datetime:
    """A time a client gave, if both engines can store it and it is not in the future; ValueError otherwise."""
    why = time_problem(value, datetime.now(UTC))
    if why is not None:
        raise ValueError(f"consentedAt {why}")
    return value


class OptInIn(_In):
    """POST /v1/subscriptions/opt-in."""

    phone_number: str = Field(min_length=1, max_length=40, description="E.164, digits with a country code, or national")
    program: str | None = Field(None, min_length=1, max_length=64, description="program key; optional when the brand has one")
    profile_id: str | None = Field(None, min_length=1, max_length=255,
                                   description="the profile to attach: its prof_ id or its externalId")
    consent_source: str = Field(min_length=1, max_length=200, description="where consent was given, e.g. web-checkout")
    consented_at: AwareDatetime = Field(description="when consent was given (RFC 3339 with offset)")
    consent_proof: ConsentProof
    double_opt_in: bool = Field(False, description="true: send the DOI prompt and wait for the confirm keyword")

    @field_validator("consented_at")
    @classmethod
    def _storable(cls, value: datetime) -> datetime:
        return _client_time(value)


class OptOutIn(_In):
    """POST /v1/subscriptions/opt-out."""

    phone_number: str = Field(min_length=1, max_length=40)
    program: str | None = Field(None, min_length=1, max_length=64, description="omit to opt out of every program")
    notify: bool = Field(True, description="send the stop confirmation text")


class ContactProgramIn(_In):
    subscribe_status: Literal["subscribed", "unsubscribed"]
    keyword: str | None = Field(None, min_length=1, max_length=64,
                                description="one of the program's join keywords (Cordial sends the one used to join)")
    consented_at: AwareDatetime | None = Field(
        None, description="when the person gave the consent behind `subscribed` (RFC 3339 with offset); after an "
                          "opt-out it must be later than the opt-out, else 409; absent means now unless the phone "
                          "opted out of that program, which then needs it",
    )
    consent_source: str | None = Field(None, min_length=1, max_length=200, description="where consent was given")

    @field_validator("consented_at")
    @classmethod
    def _storable(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _client_time(value)


class ContactSmsIn(_In):
    # Cordial's SMS object carries the address too; when sent it must be the path's number.
    address: str | None = Field(None, min_length=1, max_length=40, description="the path's number, if sent")
    programs: dict[str, ContactProgramIn] = Field(min_length=1)


class ContactChannelsIn(_In):
    sms: ContactSmsIn


class ContactIn(_In):
    """PUT /v1/contacts/{phone}: subscribed starts DOI, unsubscribed opts out."""

    channels: ContactChannelsIn


# --- subscriptions, consent, contacts, programs, messages -------------------------------


class ProfileRef(BaseModel):
    """The profile a subscription is attached to."""

    model_config = _RESPONSE

    id: str = Field(description="The profile's `prof_` id.")
    external_id: str | None = Field(description="The brand's own id for that profile, or null.")


class SubscriptionOut(BaseModel):
    """One phone's status in one program."""

    model_config = _RESPONSE

    id: str = Field(description="`sub_` + 26 characters.")
    program: str = Field(description="The program key from keywords.yaml.")
    phone_number: str = Field(description="E.164.")
    status: Literal["none", "pendingDOI", "subscribed", "unsubscribed"]
    keyword: str | None = Field(description="The keyword of the last opt-in (JOIN, YES, …), or null.")
    consent_source: str | None = Field(description="Where consent was given, for API opt-ins.")
    consented_at: datetime | None = Field(description="When consent was given, for API opt-ins.")
    subscribed_at: datetime | None = Field(description="When the phone subscribed; null unless subscribed.")
    unsubscribed_at: datetime | None = Field(description="When the phone left; null unless unsubscribed.")
    profile: ProfileRef | None = Field(description="The attached profile, or null.")


class SubscriptionPage(BaseModel):
    """A page of subscriptions."""

    model_config = _RESPONSE

    items: list[SubscriptionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ConsentEventOut(BaseModel):
    """One entry of the append-only consent ledger."""

    model_config = _RESPONSE

    id: int = Field(description="Increasing with time.")
    subscription_id: str
    program: str
    phone_number: str
    event: str = Field(description="join, confirm, doi_expired, stop, api_opt_in, api_opt_in_doi, api_opt_out, "
                                   "console_opt_out, carrier_opt_out, …")
    from_status: str
    to_status: str
    source: Literal["sms", "api", "carrier", "system"]
    keyword: str | None
    provider_message_id: str | None = Field(description="The inbound text's id (Twilio MessageSid) for SMS events.")
    raw_text: str | None = Field(description="The inbound text, verbatim, for SMS events.")
    api_key_id: int | None = Field(description="The API key that acted, for API events.")
    consent_source: str | None
    consent_proof: dict[str, JsonValue] | None
    consented_at: datetime | None
    created_at: datetime


class ConsentEventPage(BaseModel):
    """A page of the consent ledger, oldest first."""

    model_config = _RESPONSE

    items: list[ConsentEventOut]
    next_cursor: str | None


class ContactProgramOut(BaseModel):
    """A phone's status in one program, the Cordial way."""

    model_config = _RESPONSE

    keyword: str | None
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None
    subscribe_status: Literal["none", "pendingDOI", "subscribed", "unsubscribed"]


class ContactSmsOut(BaseModel):
    model_config = _RESPONSE

    address: str = Field(description="E.164.")
    programs: dict[str, ContactProgramOut] = Field(description="Every program of the brand, by key.")


class ContactChannelsOut(BaseModel):
    model_config = _RESPONSE

    sms: ContactSmsOut


class ContactOut(BaseModel):
    """The Cordial-shaped view of one phone."""

    model_config = _RESPONSE

    channels: ContactChannelsOut


class StatusCounts(BaseModel):
    """How many phones a program has in each status."""

    model_config = _RESPONSE

    none: int
    pending_doi: int = Field(alias="pendingDOI")
    subscribed: int
    unsubscribed: int


class ProgramOut(BaseModel):
    """A program as configured in keywords.yaml, with its subscriber counts."""

    model_config = _RESPONSE

    key: str
    name: str
    senders: list[str] = Field(description="Receiving numbers (E.164) or Messaging Service SIDs.")
    double_opt_in: bool
    doi_expires_after_seconds: int
    prompt_cooldown_seconds: int
    language: str
    keywords: dict[str, list[str]] = Field(description="Active keywords by kind: join, confirm, stop, help, start.")
    counts: StatusCounts = Field(description="Phones per subscription status, now.")


class ProgramPage(BaseModel):
    model_config = _RESPONSE

    items: list[ProgramOut]
    next_cursor: str | None


class MessageOut(BaseModel):
    """An inbound or outbound text."""

    model_config = _RESPONSE

    direction: Literal["inbound", "outbound"]
    id: str
    channel: str = Field(description="sms, or the channel an inbound text came on: whatsapp, rcs, messenger.")
    phone_number: str | None = Field(description="The subscriber's number (E.164); null for a channel address that is "
                                                 "no phone number.")
    address: str | None = Field(description="The sender's address as received, for texts on another channel.")
    peer: str | None = Field(description="Our side: the number or Messaging Service.")
    body: str
    media: list[dict[str, str | None]] = Field(description="MMS attachments: url and contentType.")
    flagged: bool = Field(description="Inbound: close to an opt-out but not honoured; a person should decide.")
    status: str = Field(description="Inbound: how it matched (join, stop, unmatched, …). Outbound: pending, held, "
                                    "sending, queued, sent, delivered, undelivered, failed, cancelled.")
    program: str | None
    provider_message_id: str | None
    error_code: int | None
    at: datetime = Field(description="Received (inbound) or queued (outbound).")
    held_until: datetime | None = Field(default=None, description="Outbound: a consent rule holds the text until "
                                                                  "then (the recipient's quiet hours, a daily cap).")
    held_reason: str | None = Field(default=None, description="Outbound: quiet_hours or daily_cap.")


class MessagePage(BaseModel):
    model_config = _RESPONSE

    items: list[MessageOut]
    next_cursor: str | None


# Clearer words than pydantic's for the errors clients hit most.
_MESSAGES = {
    "extra_forbidden": "unknown field",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) pairs for a problem document: dotted camelCase paths, "body" for the body itself."""
    pairs: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"]) or "body"
        pairs.append((loc, _MESSAGES.get(error["type"], str(error["msg"]).removeprefix("Value error, "))))
    return pairs


__all__ = [
    "MAX_BATCH",
    "ConsentEventOut",
    "ConsentEventPage",
    "ConsentProof",
    "ContactIn",
    "ContactOut",
    "MessageOut",
    "MessagePage",
    "OptInIn",
    "OptOutIn",
    "ProgramOut",
    "ProgramPage",
    "StatusCounts",
    "SubscriptionOut",
    "SubscriptionPage",
    "FieldError",
    "Problem",
    "ProfileBatchIn",
    "ProfileBatchOut",
    "ProfileBatchResult",
    "ProfileIn",
    "ProfileOut",
    "ProfilePage",
    "field_errors",
]
