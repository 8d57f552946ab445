"""Cordial's contacts API for the SMS channel (seed 003) at /compat/cordial/v2/contacts, HTTP Basic auth.

The key is the Basic user (Cordial's "encoded API key"; the password is ignored). A contact is
one phone; `{key}` is its SMS address as Cordial takes a secondary key, `sms:12225555151`, or
the bare address. Answers are Cordial's SMS object: the address as Cordial stores it (digits,
no `+`), per program the join `keyword`, `subscribedAt` (kept after an unsubscribe),
`unsubscribedAt` (`""` while subscribed, gone while pendingDOI) and `subscribeStatus`, dates
as `2020-04-16T20:52:21+0000`. Subscribing needs the program and one of its join keywords
and always starts double opt-in; unsubscribing sends the stop message. app.optin decides.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import profiles
from app.consent import Sub, load_subs
from app.dialects.common import authenticate, basic_key, operation, phone, plus0000, state
from app.errors import InvalidInput, NotFound, Unprocessable
from app.jsonbody import json_body, validate
from app.keywords import Brand
from app.models import consent_events, profiles as profile_table
from app.optin import ApiActor, opt_in, opt_out
from app.programs import check_join_keyword
from app.schemas import _In

PREFIX = "/compat/cordial/v2"
TAG = "cordial"
HOW = "HTTP Basic auth with the key as the user"
JOIN_EVENTS = ("join", "join_single", "api_opt_in", "api_opt_in_doi")


class CordialProgram(_In):
    keyword: str | None = Field(None, min_length=1, max_length=64)
    subscribe_status: Literal["subscribed", "unsubscribed"] | None = None


class CordialSms(_In):
    address: str | None = Field(None, min_length=1, max_length=40)
    programs: dict[str, CordialProgram] | None = None


class CordialChannels(_In):
    sms: CordialSms


class CordialContact(_In):
    """The SMS object as Cordial's contacts API takes it (003:32, 36, 49, 62)."""

    channels: CordialChannels


def _auth(request: Request) -> tuple[Any, Brand]:
    return authenticate(request, basic_key(request), HOW)


def key_phone(raw: str, brand: Brand) -> str:
    """The phone a contact key names: `sms:<address>` or the address itself."""
    if "\x00" in raw:
        raise NotFound("no such contact")
    return phone(raw.removeprefix("sms:"), brand, "key")


def _join_keywords(conn: Connection, brand: str, phone_number: str) -> dict[str, str]:
    """Per program, the keyword of the phone's latest join (the confirm word is not the program's keyword)."""
    rows = conn.execute(sa.select(consent_events.c.program, consent_events.c.keyword).where(
        consent_events.c.brand == brand, consent_events.c.phone == phone_number,
        consent_events.c.event.in_(JOIN_EVENTS), consent_events.c.keyword.is_not(None),
    ).order_by(consent_events.c.id)).all()
    return {row.program: row.keyword for row in rows}


def program_json(sub: Sub, keyword: str | None) -> dict[str, Any]:
    """One program of the SMS object (003:5, 59, 70)."""
    out: dict[str, Any] = {"keyword": keyword or ""}
    if sub.subscribed_at is not None:
        out["subscribedAt"] = plus0000(sub.subscribed_at)
    if sub.status == "subscribed":
        out["unsubscribedAt"] = ""
    elif sub.status == "unsubscribed":
        out["unsubscribedAt"] = plus0000(sub.unsubscribed_at) if sub.unsubscribed_at else ""
    out["subscribeStatus"] = sub.status
    return out


def contact_json(number: str, subs: dict[str, Sub], keywords: dict[str, str]) -> dict[str, Any]:
    sms: dict[str, Any] = {"address": number.removeprefix("+")}
    if subs:
        sms["programs"] = {name: program_json(sub, keywords.get(name)) for name, sub in subs.items()}
    else:
        sms["subscribeStatus"] = "none"  # 003:33: a record never subscribed is none at the channel level
    return {"channels": {"sms": sms}}


async def _view(request: Request, brand: Brand, number: str, *, must_exist: bool) -> dict[str, Any]:
    def run(conn: Connection) -> tuple[dict[str, Sub], dict[str, str], bool]:
        subs = load_subs(conn, brand=brand.key, phone=number)
        known = bool(subs) or conn.execute(sa.select(profile_table.c.id).where(
            profile_table.c.brand == brand.key, profile_table.c.phone == number,
            profile_table.c.deleted_at.is_(None))).first() is not None
        return {p: subs[p] for p in brand.programs if p in subs}, _join_keywords(conn, brand.key, number), known

    subs, keywords, known = await state(request).read(run)
    if must_exist and not known:
        raise NotFound(f"no contact with SMS address {number.removeprefix('+')}")
    return contact_json(number, subs, keywords)


def _plan(brand: Brand, programs: dict[str, CordialProgram]) -> tuple[dict[str, str], list[str]]:
    """(program -> join keyword) to subscribe and the programs to unsubscribe; 422 naming what is missing."""
    joining: dict[str, str] = {}
    leaving: list[str] = []
    for name, value in programs.items():
        where = f"channels.sms.programs.{name}"
        if name not in brand.programs:
            raise Unprocessable(f"unknown program {name!r}", field=where)
        if value.subscribe_status is None:
            raise Unprocessable("subscribeStatus is required", field=f"{where}.subscribeStatus")
        if value.subscribe_status == "subscribed":
            # 003:37-45: the program name, keyword and subscribeStatus are required to subscribe.
            if value.keyword is None:
                raise Unprocessable("keyword is required to subscribe: one of the program's join keywords",
                                    field=f"{where}.keyword")
            joining[name] = check_join_keyword(brand.programs[name], value.keyword, field=f"{where}.keyword")
        else:
            if value.keyword is not None:  # 003:50: not required to unsubscribe; when sent, it must be right
                check_join_keyword(brand.programs[name], value.keyword, field=f"{where}.keyword")
            leaving.append(name)
    return joining, leaving


async def _write(request: Request, key: Any, brand: Brand, number: str, body: CordialContact, *,
                 create: bool) -> None:
    joining, leaving = _plan(brand, body.channels.sms.programs or {})
    app = state(request)
    actor = ApiActor(key.id)

    def apply(conn: Connection, now: datetime) -> None:
        if create:
            # 003:30-34: the record exists from now on, subscribed to nothing until asked.
            changes = profiles.parse({"phoneNumber": number}, region=brand.default_region)
            profiles.upsert(conn, now, brand=brand.key, data=changes, region=brand.default_region)
        if leaving:
            opt_out(conn, now, rules=app.rules, brand=brand, programs=leaving, phone=number, notify=True, actor=actor)
        for program, keyword in joining.items():
            # 003:40: an API subscribe sends the opt-in message and waits for the confirmation (pendingDOI).
            # Cordial gives no consent time: the request's own time is the consent's.
            try:
                opt_in(conn, now, rules=app.rules, brand=brand, program=program, phone=number, double_opt_in=True,
                       actor=actor, consent_source="cordial:contacts", consented_at=now,
                       consent_proof={"sourceText": f"Cordial contacts API: subscribeStatus=subscribed, keyword={keyword}"},
                       profile_id=None, keyword=keyword)
            except InvalidInput as exc:  # e.g. 409: the phone itself opted out; named in Cordial's terms
                exc.errors = [(f"channels.sms.programs.{program}", exc.message)]
                raise

    await app.writer.run(apply, locks=[number])
    app.wake_sender()


async def create_contact(request: Request) -> JSONResponse:
    """POST /contacts: create the SMS record (003:30-34), and subscribe when programs are given (003:35-42)."""
    key, brand = _auth(request)
    body = validate(CordialContact, await json_body(request))
    if body.channels.sms.address is None:
        raise Unprocessable("channels.sms.address is required", field="channels.sms.address")
    number = phone(body.channels.sms.address, brand, "channels.sms.address")
    await _write(request, key, brand, number, body, create=True)
    return JSONResponse(await _view(request, brand, number, must_exist=False))


async def get_contact(request: Request) -> JSONResponse:
    """GET /contacts/{key}: the SMS object (003:4-5)."""
    _key, brand = _auth(request)
    number = key_phone(request.path_params["key"], brand)
    return JSONResponse(await _view(request, brand, number, must_exist=True))


async def update_contact(request: Request) -> JSONResponse:
    """PUT /contacts/{key}: unsubscribe (003:47-52) or resubscribe (003:53-70)."""
    key, brand = _auth(request)
    number = key_phone(request.path_params["key"], brand)
    body = validate(CordialContact, await json_body(request))
    address = body.channels.sms.address
    if address is not None and phone(address, brand, "channels.sms.address") != number:
        raise Unprocessable("channels.sms.address is not the contact's address", field="channels.sms.address")
    await _write(request, key, brand, number, body, create=False)
    return JSONResponse(await _view(request, brand, number, must_exist=False))


routes = [
    Route(f"{PREFIX}/contacts", create_contact, methods=["POST"]),
    Route(f"{PREFIX}/contacts/{{key}}", get_contact, methods=["GET"]),
    Route(f"{PREFIX}/contacts/{{key}}", update_contact, methods=["PUT"]),
]

OPERATIONS = [
    operation("post", f"{PREFIX}/contacts", "Cordial: create an SMS contact, optionally subscribing it (starts DOI)",
              TAG, "basic", body=True),
    operation("get", f"{PREFIX}/contacts/{{key}}", "Cordial: a contact's SMS object (key: sms:<address>)", TAG,
              "basic", errors=(401, 404, 422)),
    operation("put", f"{PREFIX}/contacts/{{key}}", "Cordial: unsubscribe, or resubscribe (starts DOI)", TAG, "basic",
              body=True),
]
