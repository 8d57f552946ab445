"""The brand API (/v1): reading subscriptions and the consent ledger (issue 2's slice)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.auth import ApiKeyInfo
from app.errors import InvalidInput, Unauthorized
from app.jsonbody import MAX_JSON_BYTES, json_body, read_json, validate  # noqa: F401 - re-exported
from app.models import consent_events, subscriptions
from app.phone import to_e164
from app.schemas import ConsentEventOut, ProfileRef, SubscriptionOut
from app.settings import Settings
from app.signing import Signer, secret_key
from app.subscriptions import Status
from app.web.state import AppState

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# The widest integer both databases store (BIGINT): a larger id in a cursor is not ours.
MAX_ID = 2**63 - 1


def _state(request: Request) -> AppState:
    return request.app.state.optline  # type: ignore[no-any-return]


def api_key(request: Request) -> ApiKeyInfo:
    """The caller's key, from x-api-key or Authorization: Bearer."""
    key = request.headers.get("x-api-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    state = _state(request)
    info = state.keys.authenticate(key)
    if info.brand not in state.rules.brands:
        # keywords.yaml no longer has the brand (a reload removed it): its keys act for nothing.
        raise Unauthorized(f"this key's brand {info.brand!r} is not configured")
    return info


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a Z, or None."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@lru_cache(maxsize=4)
def _cursor_signer(key: str) -> Signer:
    return Signer(key, "cursor")


def encode_cursor(last: Any, settings: Settings) -> str:
    """An opaque cursor for the row after `last`, signed so that only optline's own cursors are accepted."""
    return _cursor_signer(secret_key(settings)).dumps(last)


def decode_cursor(raw: str, settings: Settings) -> Any:
    """The position a cursor stands for; 400 when it was not made by us."""
    # A cursor is a position in a keyset: a forged one could name any row, or any value the
    # database then fails on (text for an integer id, a number no column holds).
    position = _cursor_signer(secret_key(settings)).loads(raw)
    if position is None:
        raise InvalidInput("cursor is not valid", field="cursor")
    return position


def bad_cursor() -> InvalidInput:
    """The error for a cursor that is signed but not one of this route's."""
    return InvalidInput("cursor is not valid", field="cursor")


def _key_position(position: Any, key: sa.Column[Any]) -> Any:
    """A cursor's position checked against the type of the key column it stands for."""
    if key.type.python_type is int:
        valid = isinstance(position, int) and not isinstance(position, bool) and -MAX_ID <= position <= MAX_ID
    else:
        valid = isinstance(position, str)
    if not valid:
        raise bad_cursor()
    return position


def page_params(request: Request) -> tuple[int, str | None]:
    """`limit` (1..1000) and `cursor` from the query string."""
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    # ASCII digits only: str.isdigit also says yes to "²" and "٣", which int() refuses or reads.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
    return int(raw), request.query_params.get("cursor")


def query_text(request: Request, name: str) -> str | None:
    """A text query parameter, or None; 400 when it holds NUL, which no stored value can contain."""
    value = request.query_params.get(name)
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{name} must not contain NUL characters", field=name)
    return value


def aware_time(raw: str, field: str) -> datetime:
    """An ISO 8601 time with an offset, as UTC; 400 naming `field` otherwise."""
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field} must be an ISO 8601 time", field=field) from None
    if when.tzinfo is None:
        raise InvalidInput(f"{field} must carry a time zone (e.g. Z)", field=field)
    try:
        # In UTC before it is bound: PostgreSQL takes offsets only up to ±15:59, Python ±23:59.
        return when.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00-01:00 is before the first UTC time Python has
        raise InvalidInput(f"{field} is out of range", field=field) from None


def phone_param(request: Request, brand_region: str | None) -> str | None:
    """The `phoneNumber` filter in E.164, or None."""
    raw = request.query_params.get("phoneNumber")
    if raw is None:
        return None
    try:
        return to_e164(raw, brand_region)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="phoneNumber") from None


def subscription_json(row: Any) -> dict[str, Any]:
    """A subscription as the API shows it (SubscriptionOut)."""
    status = row.status
    return SubscriptionOut(
        id=row.id, program=row.program, phone_number=row.phone, status=status, keyword=row.keyword,
        consent_source=row.consent_source, consented_at=row.consented_at,
        subscribed_at=row.subscribed_at if status == Status.SUBSCRIBED.value else None,
        # A pending re-join or a resubscription clears unsubscribedAt.
        unsubscribed_at=row.unsubscribed_at if status == Status.UNSUBSCRIBED.value else None,
        profile=ProfileRef(id=row.profile_id, external_id=getattr(row, "profile_external_id", None))
        if row.profile_id else None,
    ).model_dump(mode="json")


def consent_event_json(row: Any) -> dict[str, Any]:
    """A consent event as the API shows it (ConsentEventOut)."""
    return ConsentEventOut(
        id=row.id, subscription_id=row.subscription_id, program=row.program, phone_number=row.phone,
        event=row.event, from_status=row.from_status, to_status=row.to_status, source=row.source,
        keyword=row.keyword, provider_message_id=row.provider_message_id, raw_text=row.raw_text,
        api_key_id=row.api_key_id, consent_source=row.consent_source, consent_proof=row.consent_proof,
        consented_at=row.consented_at, created_at=row.created_at,
    ).model_dump(mode="json")


def subscriptions_with_profile() -> sa.Select[Any]:
    """Subscriptions joined to their (live) profile's externalId."""
    from app.models import profiles

    return sa.select(subscriptions, profiles.c.external_id.label("profile_external_id")).select_from(
        subscriptions.outerjoin(profiles, sa.and_(profiles.c.id == subscriptions.c.profile_id,
                                                  profiles.c.deleted_at.is_(None)))
    )


async def _page(request: Request, base: sa.Select[Any], filters: list[Any], to_json: Callable[[Any], dict[str, Any]],
                key: sa.Column[Any]) -> JSONResponse:
    limit, cursor = page_params(request)
    query = base.where(*filters).order_by(key).limit(limit + 1)
    if cursor is not None:
        query = query.where(key > _key_position(decode_cursor(cursor, _state(request).settings), key))

    def run(conn: Connection) -> list[Any]:
        return conn.execute(query).all()

    rows = await _state(request).read(run)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], key.name), _state(request).settings) if more and rows else None
    return JSONResponse({"items": [to_json(r) for r in rows], "nextCursor": next_cursor})


def list_filters(request: Request, table: sa.Table) -> list[Any]:
    """The caller's key, then the WHERE of a list route on `table`: its brand, `phoneNumber` and `program`."""
    key = api_key(request)
    brand = _state(request).rules.brand(key.brand)
    filters: list[Any] = [table.c.brand == key.brand]
    phone = phone_param(request, brand.default_region)
    if phone:
        filters.append(table.c.phone == phone)
    program = query_text(request, "program")
    if program is not None:
        filters.append(table.c.program == program)
    return filters


async def list_subscriptions(request: Request) -> JSONResponse:
    """GET /v1/subscriptions: filters phoneNumber, program, status; cursor pages."""
    filters = list_filters(request, subscriptions)
    status = request.query_params.get("status")
    if status is not None:
        if status not in {s.value for s in Status}:
            raise InvalidInput("status must be one of none, pendingDOI, subscribed, unsubscribed", field="status")
        filters.append(subscriptions.c.status == status)
    return await _page(request, subscriptions_with_profile(), filters, subscription_json, subscriptions.c.id)


async def list_consent_events(request: Request) -> JSONResponse:
    """GET /v1/consent-events: the ledger; filters phoneNumber, program, since; cursor pages."""
    filters = list_filters(request, consent_events)
    since = request.query_params.get("since")
    if since is not None:
        filters.append(consent_events.c.created_at >= aware_time(since, "since"))
    return await _page(request, sa.select(consent_events), filters, consent_event_json, consent_events.c.id)
