"""API shapes of the consent rules (pydantic v2, camelCase on the wire): the send check, the brand's
reported sends, and opt-out lists in and out. Same conventions as app.schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator

from app.schemas import _REQUEST, _RESPONSE, MAX_BATCH, _storable, _text_fault
from app.subscriptions import CLOCK_SKEW

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A send check may ask about a planned send, up to a year ahead.
PLAN_AHEAD = timedelta(days=366)

ReasonCode = Literal["not_subscribed", "pending_doi", "opted_out", "quiet_hours", "daily_cap", "country_not_allowed"]


def _in_range(value: datetime | None, *, ahead: timedelta, name: str) -> datetime | None:
    if value is None:
        return None
    if value < EPOCH:
        raise ValueError(f"{name} is before 1970")
    if value - datetime.now(UTC) > ahead:
        raise ValueError(f"{name} is too far in the future")
    return value


# SendCheckItem's text lengths, which plain_send_checks reads too.
_PHONE_MAX = 40
_PROGRAM_MAX = 64


class SendCheckItem(BaseModel):
    """One send the brand plans: may this program text this phone (now, or at `at`)?"""

    model_config = _REQUEST

    phone_number: str = Field(min_length=1, max_length=_PHONE_MAX,
                              description="E.164, digits with a country code, or national")
    program: str = Field(min_length=1, max_length=_PROGRAM_MAX, description="program key")
    at: AwareDatetime | None = Field(None, description="when the text would go (RFC 3339 with offset); default now, "
                                                       "at most a year ahead")

    _text = field_validator("phone_number", "program", mode="before")(_storable)

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime | None) -> datetime | None:
        return _in_range(value, ahead=PLAN_AHEAD, name="at")


class SendCheckIn(BaseModel):
    """POST /v1/send-check: up to 1000 planned sends."""

    model_config = _REQUEST

    items: list[SendCheckItem] = Field(min_length=1, max_length=MAX_BATCH)


def plain_send_checks(data: Any) -> list[tuple[str, str, datetime | None]] | None:
    """A send-check body's items as (phoneNumber, program, at), when every item is plainly valid; else None.

    Building a model for each of 1,000 items costs more than the check itself. This reads the
    shape SendCheckIn accepts without them: a body of `items` alone, 1 to MAX_BATCH objects of
    `phoneNumber` and `program` (strings within their lengths that a database can store) and,
    optionally, `at` (a time given goes through SendCheckItem, the one place times are read).
    Anything else, valid or not, is None: the caller validates the body with SendCheckIn, whose
    answer (the values, or the errors naming each field) is the API's.
    """
    if type(data) is not dict or len(data) != 1:
        return None
    items = data.get("items")
    if type(items) is not list or not 1 <= len(items) <= MAX_BATCH:
        return None
    out: list[tuple[str, str, datetime | None]] = []
    for item in items:
        if type(item) is not dict:
            return None
        phone, program = item.get("phoneNumber"), item.get("program")
        if (type(phone) is not str or type(program) is not str or not 0 < len(phone) <= _PHONE_MAX
                or not 0 < len(program) <= _PROGRAM_MAX or _text_fault(phone) or _text_fault(program)):
            return None
        at = None
        if len(item) != 2:  # phoneNumber, program, and what else?
            if len(item) != 3 or "at" not in item:
                return None
            if item["at"] is not None:
                if type(item["at"]) is not str or _text_fault(item["at"]):
                    return None
                try:
                    at = SendCheckItem.model_validate(item).at
                except ValidationError:
                    return None
        out.append((phone, program, at))
    return out


class SendCheckReason(BaseModel):
    """Why a send may not go (now)."""

    model_config = _RESPONSE

    code: ReasonCode = Field(description="not_subscribed, pending_doi, opted_out, quiet_hours, daily_cap, "
                                         "country_not_allowed")
    at: datetime | None = Field(None, description="opted_out: when the phone (or the brand) opted out")
    source: str | None = Field(None, description="opted_out: sms, carrier, api, console, import, or the channel")
    scope: str | None = Field(None, description="opted_out: brand (every program), sender (the programs of one "
                                                "number) or program")
    next_allowed_at: datetime | None = Field(None, description="quiet_hours, daily_cap: the earliest time allowed")
    detail: str | None = Field(None, description="human-readable: the window, the cap")


class SendCheckResult(BaseModel):
    """The answer for one item, in the request's order."""

    model_config = _RESPONSE

    index: int
    phone_number: str = Field(description="E.164")
    program: str
    allowed: bool
    reasons: list[SendCheckReason]
    next_allowed_at: datetime | None = Field(description="when the send would be allowed, if only time stands in the "
                                                         "way (quiet hours, caps); null when allowed, or never without "
                                                         "new consent")


class SendCheckOut(BaseModel):
    model_config = _RESPONSE

    items: list[SendCheckResult]


class SendItem(BaseModel):
    """A text the brand sent itself (it counts toward the program's caps)."""

    model_config = _REQUEST

    phone_number: str = Field(min_length=1, max_length=40)
    program: str = Field(min_length=1, max_length=64)
    sent_at: AwareDatetime | None = Field(None, description="when it went (default now); not in the future")
    external_id: str | None = Field(None, min_length=1, max_length=255, description="the brand's id for the text")

    _text = field_validator("phone_number", "program", "external_id", mode="before")(_storable)

    @field_validator("sent_at")
    @classmethod
    def _sent_at(cls, value: datetime | None) -> datetime | None:
        return _in_range(value, ahead=CLOCK_SKEW, name="sentAt")


class SendsIn(BaseModel):
    """POST /v1/sends: up to 1000 texts the brand sent."""

    model_config = _REQUEST

    items: list[SendItem] = Field(min_length=1, max_length=MAX_BATCH)


class SendsOut(BaseModel):
    model_config = _RESPONSE

    recorded: int
    opted_out: list[int] = Field(description="indexes of items whose phone had opted out of that program: the brand "
                                             "texted someone it should not have")


class ImportLineError(BaseModel):
    model_config = _RESPONSE

    line: int = Field(description="1-based: the CSV line (the header is line 1), or the JSON array position + 1")
    message: str


class OptOutImportOut(BaseModel):
    """What an opt-out import did."""

    model_config = _RESPONSE

    batch_id: str = Field(description="imp_…; each consent event it wrote names it")
    rows: int
    applied: int = Field(description="rows that opted a phone out of at least one program")
    unchanged: int = Field(description="rows whose phone was already opted out of every program")
    rejected: int
    errors: list[ImportLineError] = Field(description="the first 1000 bad rows, by line")


class OptOutOut(BaseModel):
    """One entry of the suppression list: a phone opted out of a program."""

    model_config = _RESPONSE

    phone_number: str
    program: str
    opted_out_at: datetime
    source: str | None = Field(description="what made the latest opt-out: sms, carrier, api, console, import, …")


class OptOutPage(BaseModel):
    model_config = _RESPONSE

    items: list[OptOutOut]
    next_cursor: str | None
