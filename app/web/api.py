"""The brand API (/v1): reading subscriptions and the consent ledger (issue 2's slice)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.auth import ApiKeyInfo
from app.errors import InvalidInput
from app.models import consent_events, subscriptions
from app.phone import to_e164
from app.subscriptions import Status
from app.web.state import AppState

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def _state(request: Request) -> AppState:
    return request.app.state.optline  # type: ignore[no-any-return]


def api_key(request: Request) -> ApiKeyInfo:
    """The caller's key, from x-api-key or Authorization: Bearer."""
    key = request.headers.get("x-api-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return _state(request).keys.authenticate(key)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a Z, or None."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def encode_cursor(last: Any) -> str:
    """An opaque cursor for the row after `last`."""
    return base64.urlsafe_b64encode(json.dumps(last).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> Any:
    """The position a cursor stands for; 400 when it was not made by us."""
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid", field="cursor") from None


def page_params(request: Request) -> tuple[int, str | None]:
    """`limit` (1..1000) and `cursor` from the query string."""
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
    return int(raw), request.query_params.get("cursor")


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
    """A subscription as the API shows it."""
    status = row.status
    return {
        "id": row.id,
        "program": row.program,
        "phoneNumber": row.phone,
        "status": status,
        "keyword": row.keyword,
        "consentSource": row.consent_source,
        "consentedAt": iso(row.consented_at),
        "subscribedAt": iso(row.subscribed_at) if status == Status.SUBSCRIBED.value else None,
        # A pending re-join or a resubscription clears unsubscribedAt (SPEC §4).
        "unsubscribedAt": iso(row.unsubscribed_at) if status == Status.UNSUBSCRIBED.value else None,
        "profile": {"id": row.profile_id, "externalId": None} if row.profile_id else None,
    }


def consent_event_json(row: Any) -> dict[str, Any]:
    """A consent event as the API shows it."""
    return {
        "id": row.id,
        "subscriptionId": row.subscription_id,
        "program": row.program,
        "phoneNumber": row.phone,
        "event": row.event,
        "fromStatus": row.from_status,
        "toStatus": row.to_status,
        "source": row.source,
        "keyword": row.keyword,
        "providerMessageId": row.provider_message_id,
        "rawText": row.raw_text,
        "apiKeyId": row.api_key_id,
        "consentSource": row.consent_source,
        "consentProof": row.consent_proof,
        "consentedAt": iso(row.consented_at),
        "createdAt": iso(row.created_at),
    }


async def _page(request: Request, table: sa.Table, filters: list[Any], to_json: Callable[[Any], dict[str, Any]],
                key: sa.Column[Any]) -> JSONResponse:
    limit, cursor = page_params(request)
    query = sa.select(table).where(*filters).order_by(key).limit(limit + 1)
    if cursor is not None:
        query = query.where(key > decode_cursor(cursor))

    def run(conn: Connection) -> list[Any]:
        return conn.execute(query).all()

    rows = await _state(request).read(run)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], key.name)) if more and rows else None
    return JSONResponse({"items": [to_json(r) for r in rows], "nextCursor": next_cursor})


async def list_subscriptions(request: Request) -> JSONResponse:
    """GET /v1/subscriptions: filters phoneNumber, program, status; cursor pages."""
    key = api_key(request)
    brand = _state(request).rules.brand(key.brand)
    filters: list[Any] = [subscriptions.c.brand == key.brand]
    phone = phone_param(request, brand.default_region)
    if phone:
        filters.append(subscriptions.c.phone == phone)
    program = request.query_params.get("program")
    if program is not None:
        filters.append(subscriptions.c.program == program)
    status = request.query_params.get("status")
    if status is not None:
        if status not in {s.value for s in Status}:
            raise InvalidInput("status must be one of none, pendingDOI, subscribed, unsubscribed", field="status")
        filters.append(subscriptions.c.status == status)
    return await _page(request, subscriptions, filters, subscription_json, subscriptions.c.id)


async def list_consent_events(request: Request) -> JSONResponse:
    """GET /v1/consent-events: the ledger; filters phoneNumber, program, since; cursor pages."""
    key = api_key(request)
    brand = _state(request).rules.brand(key.brand)
    filters: list[Any] = [consent_events.c.brand == key.brand]
    phone = phone_param(request, brand.default_region)
    if phone:
        filters.append(consent_events.c.phone == phone)
    program = request.query_params.get("program")
    if program is not None:
        filters.append(consent_events.c.program == program)
    since = request.query_params.get("since")
    if since is not None:
        try:
            when = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("since must be an ISO 8601 time", field="since") from None
        if when.tzinfo is None:
            raise InvalidInput("since must carry a time zone (e.g. Z)", field="since")
        filters.append(consent_events.c.created_at >= when)
    return await _page(request, consent_events, filters, consent_event_json, consent_events.c.id)
