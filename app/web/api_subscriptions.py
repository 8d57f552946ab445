"""The brand API's consent side: opt-in with proof, opt-out, the Cordial-shaped contact view,
programs and messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.errors import InvalidInput, OptedOut, Unprocessable
from app.models import inbound_messages, outbox, subscriptions
from app.consent import load_subs
from app.optin import ApiActor, check_consent_is_current, opt_in, opt_out, profile_ref, resolve_program
from app.phone import to_e164
from app.programs import check_join_keyword
from app.schemas import (
    ContactChannelsOut,
    ContactIn,
    ContactOut,
    ContactProgramOut,
    ContactSmsOut,
    MessageOut,
    MessagePage,
    OptInIn,
    OptOutIn,
    ProgramOut,
    ProgramPage,
    StatusCounts,
)
from app.stats import status_counts
from app.subscriptions import Status
from app.web.api import (
    _state,
    api_key,
    decode_cursor,
    encode_cursor,
    page_params,
    phone_param,
    read_json,
    subscription_json,
    subscriptions_with_profile,
)

def _phone(raw: str, region: str | None) -> str:
    try:
        return to_e164(raw, region)
    except InvalidInput as exc:
        raise Unprocessable(exc.message, field="phoneNumber") from None


async def _subscription_out(request: Request, brand: str, sub_id: str) -> dict[str, Any]:
    def run(conn: Connection) -> Any:
        return conn.execute(subscriptions_with_profile().where(subscriptions.c.id == sub_id, subscriptions.c.brand == brand)).first()

    row = await _state(request).read(run)
    return subscription_json(row)


async def post_opt_in(request: Request) -> JSONResponse:
    """Opt a phone in with consent proof (single or double opt-in)."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    body = await read_json(request, OptInIn)
    program = resolve_program(brand, body.program)
    phone = _phone(body.phone_number, brand.default_region)
    profile_id = None
    if body.profile_id is not None:
        found = await state.read(lambda conn: profile_ref(conn, brand=brand.key, profile_id=body.profile_id or ""))
        if found is None:
            raise Unprocessable("no profile with that prof_ id or externalId", field="profileId")
        profile_id = found[0]
    sub = await state.writer.run(
        partial(opt_in, rules=state.rules, brand=brand, program=program, phone=phone, double_opt_in=body.double_opt_in,
                actor=ApiActor(key.id), consent_source=body.consent_source, consented_at=body.consented_at,
                consent_proof=body.consent_proof.model_dump(by_alias=True, exclude_none=True),
                profile_id=profile_id),
        locks=[phone],
    )
    state.wake_sender()
    return JSONResponse(await _subscription_out(request, brand.key, sub.id))


async def post_opt_out(request: Request) -> JSONResponse:
    """Opt a phone out of one program, or of every program of the brand."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    body = await read_json(request, OptOutIn)
    programs = [resolve_program(brand, body.program)] if body.program is not None else list(brand.programs)
    phone = _phone(body.phone_number, brand.default_region)
    subs = await state.writer.run(
        partial(opt_out, rules=state.rules, brand=brand, programs=programs, phone=phone, notify=body.notify,
                actor=ApiActor(key.id)),
        locks=[phone],
    )
    state.wake_sender()
    items = [await _subscription_out(request, brand.key, sub.id) for sub in subs]
    return JSONResponse({"items": items, "nextCursor": None})


async def contact_view(request: Request, brand_key: str, phone: str) -> dict[str, Any]:
    """The Cordial-shaped view of one phone: every program of the brand, `none` where never subscribed."""
    state = _state(request)
    brand = state.rules.brand(brand_key)

    def run(conn: Connection) -> list[Any]:
        return conn.execute(sa.select(subscriptions).where(subscriptions.c.brand == brand_key,
                                                           subscriptions.c.phone == phone)).all()

    rows = {row.program: row for row in await state.read(run)}
    programs: dict[str, ContactProgramOut] = {}
    for key in brand.programs:
        row = rows.get(key)
        status = row.status if row is not None else Status.NONE.value
        programs[key] = ContactProgramOut(
            keyword=row.keyword if row is not None else None,
            subscribed_at=row.subscribed_at if row is not None and status == Status.SUBSCRIBED.value else None,
            unsubscribed_at=row.unsubscribed_at if row is not None and status == Status.UNSUBSCRIBED.value else None,
            subscribe_status=status,
        )
    view = ContactOut(channels=ContactChannelsOut(sms=ContactSmsOut(address=phone, programs=programs)))
    return view.model_dump(mode="json")


async def get_contact(request: Request) -> JSONResponse:
    """GET /v1/contacts/{phone}."""
    key = api_key(request)
    brand = _state(request).rules.brand(key.brand)
    phone = _phone(request.path_params["phone"], brand.default_region)
    return JSONResponse(await contact_view(request, key.brand, phone))


async def put_contact(request: Request) -> JSONResponse:
    """PUT /v1/contacts/{phone}: subscribeStatus subscribed starts DOI (→ pendingDOI), unsubscribed opts out."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    phone = _phone(request.path_params["phone"], brand.default_region)
    body = await read_json(request, ContactIn)
    address = body.channels.sms.address
    if address is not None and _phone(address, brand.default_region) != phone:
        raise Unprocessable("channels.sms.address is not the number in the path", field="channels.sms.address")
    wanted = body.channels.sms.programs
    unknown = [name for name in wanted if name not in brand.programs]
    if unknown:
        raise Unprocessable(f"unknown program {unknown[0]!r}", field=f"channels.sms.programs.{unknown[0]}")
    for name, value in wanted.items():
        if value.keyword is not None:
            check_join_keyword(brand.programs[name], value.keyword, field=f"channels.sms.programs.{name}.keyword")
    actor = ApiActor(key.id)

    def apply(conn: Connection, now: datetime) -> None:
        joining = {p: v for p, v in wanted.items() if v.subscribe_status == "subscribed"}
        # Every consent is checked before anything is written: a 409 for one program changes none.
        current = load_subs(conn, brand=brand.key, phone=phone, programs=list(joining))
        for program, value in joining.items():
            try:
                check_consent_is_current(current.get(program), consented_at=value.consented_at, now=now)
            except InvalidInput as exc:
                # The phone's own opt-out is about the program, not about the time given.
                where = "" if isinstance(exc, OptedOut) else ".consentedAt"
                exc.errors = [(f"channels.sms.programs.{program}{where}", exc.message)]
                raise
        leaving = [p for p, v in wanted.items() if v.subscribe_status == "unsubscribed"]
        if leaving:
            opt_out(conn, now, rules=state.rules, brand=brand, programs=leaving, phone=phone, notify=True, actor=actor)
        for program, value in joining.items():
            # The Cordial rule: an API subscribe asks the person to confirm by SMS.
            opt_in(conn, now, rules=state.rules, brand=brand, program=program, phone=phone, double_opt_in=True,
                   actor=actor, consent_source=value.consent_source or "api:contacts", consented_at=value.consented_at,
                   consent_proof={"sourceText": "PUT /v1/contacts subscribeStatus=subscribed"}, profile_id=None,
                   keyword=value.keyword)

    await state.writer.run(apply, locks=[phone])
    state.wake_sender()
    return JSONResponse(await contact_view(request, key.brand, phone))


async def list_programs(request: Request) -> JSONResponse:
    """GET /v1/programs: the brand's programs as configured, with their subscriber counts."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    counts = await state.read(lambda conn: status_counts(conn, brand=brand.key, programs=brand.programs))
    items = [
        ProgramOut(
            key=p.key, name=p.name, senders=list(p.senders), double_opt_in=p.double_opt_in,
            doi_expires_after_seconds=int(p.doi_expires_after.total_seconds()),
            prompt_cooldown_seconds=int(p.prompt_cooldown.total_seconds()), language=p.language,
            keywords={kind: list(words) for kind, words in p.keywords.items()},
            counts=StatusCounts.model_validate(counts[p.key]),
        )
        for p in brand.programs.values()
    ]
    return JSONResponse(ProgramPage(items=items, next_cursor=None).model_dump(mode="json"))


async def list_messages(request: Request) -> JSONResponse:
    """GET /v1/messages: inbound and outbound texts with their statuses, newest last; filter phoneNumber."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    limit, cursor = page_params(request)
    phone = phone_param(request, brand.default_region)
    inbound = sa.select(
        sa.literal("inbound").label("direction"), inbound_messages.c.id, inbound_messages.c.channel,
        inbound_messages.c.from_phone.label("phone"), inbound_messages.c.from_address.label("address"),
        inbound_messages.c.to.label("peer"), inbound_messages.c.body, inbound_messages.c.kind.label("status"),
        inbound_messages.c.program, inbound_messages.c.message_id.label("provider_message_id"),
        sa.null().label("error_code"), inbound_messages.c.media, inbound_messages.c.flagged,
        inbound_messages.c.received_at.label("at"), sa.null().label("held_until"), sa.null().label("held_reason"),
    ).where(inbound_messages.c.brand == key.brand)
    outbound = sa.select(
        sa.literal("outbound").label("direction"), outbox.c.id, sa.literal("sms").label("channel"), outbox.c.phone,
        sa.null().label("address"), sa.func.coalesce(outbox.c.from_number, outbox.c.service_id).label("peer"),
        outbox.c.body, outbox.c.status, outbox.c.program, outbox.c.provider_message_id, outbox.c.error_code,
        sa.null().label("media"), sa.false().label("flagged"), outbox.c.created_at.label("at"),
        outbox.c.held_until, outbox.c.held_reason,
    ).where(outbox.c.brand == key.brand, outbox.c.channel == "sms")
    if phone is not None:
        inbound = inbound.where(inbound_messages.c.from_phone == phone)
        outbound = outbound.where(outbox.c.phone == phone)
    flagged = request.query_params.get("flagged")
    if flagged is not None:
        if flagged not in ("true", "false"):
            raise InvalidInput("flagged must be true or false", field="flagged")
        inbound = inbound.where(inbound_messages.c.flagged.is_(flagged == "true"))
        if flagged == "true":
            outbound = outbound.where(sa.false())
    union = sa.union_all(inbound, outbound).subquery()
    query = sa.select(union).order_by(union.c.at, union.c.direction, union.c.id).limit(limit + 1)
    if cursor is not None:
        position = decode_cursor(cursor, state.settings)
        try:
            at, direction, row_id = datetime.fromisoformat(position[0]), str(position[1]), int(position[2])
        except (TypeError, ValueError, IndexError, KeyError):
            raise InvalidInput("cursor is not valid", field="cursor") from None
        query = query.where(sa.tuple_(union.c.at, union.c.direction, union.c.id) > sa.tuple_(
            sa.literal(at, type_=inbound_messages.c.received_at.type), sa.literal(direction), sa.literal(row_id)))
    rows = await state.read(lambda conn: conn.execute(query).all())
    more = len(rows) > limit
    rows = rows[:limit]
    now = state.clock()
    items = [
        MessageOut(direction=r.direction, id=f"{'in' if r.direction == 'inbound' else 'out'}_{r.id}",
                   channel=r.channel, phone_number=r.phone, address=r.address, peer=r.peer, body=r.body,
                   media=_json_list(r.media), flagged=bool(r.flagged), status=_shown_status(r, now), program=r.program,
                   provider_message_id=r.provider_message_id, error_code=r.error_code, at=_aware(r.at),
                   held_until=_aware(r.held_until) if r.held_until is not None else None, held_reason=r.held_reason)
        for r in rows
    ]
    last = rows[-1] if rows else None
    next_cursor = (encode_cursor([_aware(last.at).isoformat(), last.direction, last.id], state.settings)
                   if more and last else None)
    return JSONResponse(MessagePage(items=items, next_cursor=next_cursor).model_dump(mode="json"))


def _shown_status(row: Any, now: datetime) -> str:
    """The row's status; "held" for a text waiting on quiet hours or a daily cap (app.holds)."""
    if row.status == "pending" and row.held_until is not None and _aware(row.held_until) > now:
        return "held"
    return str(row.status)


def _json_list(value: Any) -> list[Any]:
    # A UNION loses the JSON type on SQLite too.
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])


def _aware(value: Any) -> datetime:
    # A UNION loses the column type on SQLite, so timestamps can come back as text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


routes = [
    Route("/v1/subscriptions/opt-in", post_opt_in, methods=["POST"]),
    Route("/v1/subscriptions/opt-out", post_opt_out, methods=["POST"]),
    Route("/v1/contacts/{phone}", get_contact, methods=["GET"]),
    Route("/v1/contacts/{phone}", put_contact, methods=["PUT"]),
    Route("/v1/programs", list_programs, methods=["GET"]),
    Route("/v1/messages", list_messages, methods=["GET"]),
]
