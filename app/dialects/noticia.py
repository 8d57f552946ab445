"""Noticia's API (seeds 000 and 001) at /compat/noticia/v1, with the key in `x-api-key`.

Profiles are upserted by `externalId` (the one required field) and answer Noticia's profile;
an opt-in answers the subscription with an upper-case status (`SUBSCRIBED`) and times with
milliseconds (`2026-05-28T10:00:00.000Z`). An opt-in that names no program goes to the brand's
`default_program` (Noticia has no programs). Nothing here decides consent: app.optin does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import AwareDatetime, Field, field_validator
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import profiles
from app.consent import Sub, load_subs
from app.dialects.common import (
    authenticate,
    header_key,
    millis,
    object_body,
    operation,
    own_attributes,
    phone,
    refuse_vendor_keys,
    state,
)
from app.errors import NotFound, Unprocessable
from app.jsonbody import json_body, validate
from app.keywords import Brand
from app.optin import ApiActor, opt_in, opt_out, profile_ref, resolve_program
from app.profiles import ProfileRow
from app.schemas import ConsentProof, _client_time, _In

PREFIX = "/compat/noticia/v1"
TAG = "noticia"
HOW = "the x-api-key header"
# optline's statuses the Noticia way: upper case, words split by _.
STATUSES = {"none": "NONE", "pendingDOI": "PENDING_DOI", "subscribed": "SUBSCRIBED", "unsubscribed": "UNSUBSCRIBED"}
PROFILE_FIELDS = ("externalId", "phoneNumber", "email", "firstName", "lastName", "timezone", "attributes")


class OptIn(_In):
    """POST /subscriptions/opt-in (000:29-39); `program` is optline's addition, else default_program."""

    phone_number: str = Field(min_length=1, max_length=40)
    program: str | None = Field(None, min_length=1, max_length=64)
    profile_id: str | None = Field(None, min_length=1, max_length=255)
    consent_source: str = Field(min_length=1, max_length=200)
    consented_at: AwareDatetime
    consent_proof: ConsentProof

    _storable = field_validator("consented_at")(_client_time)


class OptOut(_In):
    """POST /subscriptions/opt-out (000:56)."""

    phone_number: str = Field(min_length=1, max_length=40)
    program: str | None = Field(None, min_length=1, max_length=64)


def _auth(request: Request) -> tuple[Any, Brand]:
    return authenticate(request, header_key(request, "x-api-key"), HOW)


def profile_json(row: ProfileRow) -> dict[str, Any]:
    """A profile as Noticia shows it (001:11)."""
    return {"id": row.id, "externalId": row.external_id, "phoneNumber": row.phone, "email": row.email,
            "firstName": row.first_name, "lastName": row.last_name, "timezone": row.timezone,
            "attributes": own_attributes(row.attributes), "createdAt": millis(row.created_at),
            "updatedAt": millis(row.updated_at)}


def subscription_json(sub: Sub, profile: tuple[str, str | None] | None) -> dict[str, Any]:
    """A subscription as Noticia shows it (000:43-53)."""
    return {
        "phoneNumber": sub.phone, "status": STATUSES[sub.status], "consentSource": sub.consent_source,
        "consentedAt": millis(sub.consented_at),
        "unsubscribedAt": millis(sub.unsubscribed_at) if sub.status == "unsubscribed" else None,
        "profile": {"id": profile[0], "externalId": profile[1]} if profile else None,
    }


async def upsert_profile(request: Request) -> JSONResponse:
    """POST /profiles: upsert keyed on externalId; 201 created, 200 updated (001:6-11)."""
    _key, brand = _auth(request)
    body = object_body(await json_body(request))
    if body.get("externalId") is None:
        raise Unprocessable("externalId is required", field="externalId")
    refuse_vendor_keys(body.get("attributes") or {}, "attributes")
    changes = profiles.parse(body, region=brand.default_region)
    row, created = await state(request).writer.run(
        lambda conn, now: profiles.upsert(conn, now, brand=brand.key, data=changes, region=brand.default_region),
        locks=changes.locks(brand.key),
    )
    return JSONResponse(profile_json(row), status_code=201 if created else 200)


async def get_profile(request: Request) -> JSONResponse:
    """GET /profiles/{ref}: by externalId or prof_ id (001:12)."""
    _key, brand = _auth(request)
    ref = request.path_params["ref"]
    if "\x00" in ref:
        raise NotFound(f"no profile {ref!r}")
    row = await state(request).read(lambda conn: profiles.get(conn, brand=brand.key, ref=ref))
    return JSONResponse(profile_json(row))


async def _answer(request: Request, brand: Brand, sub: Sub) -> JSONResponse:
    def run(conn: Connection) -> tuple[Sub, tuple[str, str | None] | None]:
        fresh = load_subs(conn, brand=brand.key, phone=sub.phone, programs=[sub.program])[sub.program]
        ref = profile_ref(conn, brand=brand.key, profile_id=fresh.profile_id) if fresh.profile_id else None
        return fresh, ref

    fresh, ref = await state(request).read(run)
    return JSONResponse(subscription_json(fresh, ref))


async def post_opt_in(request: Request) -> JSONResponse:
    """POST /subscriptions/opt-in: consent with proof, subscribed at once (000:24-53)."""
    key, brand = _auth(request)
    app = state(request)
    body = validate(OptIn, await json_body(request))
    program = resolve_program(brand, body.program)
    number = phone(body.phone_number, brand, "phoneNumber")
    profile_id = None
    if body.profile_id is not None:
        found = await app.read(lambda conn: profile_ref(conn, brand=brand.key, profile_id=body.profile_id or ""))
        if found is None:
            raise Unprocessable("no profile with that prof_ id or externalId", field="profileId")
        profile_id = found[0]
    sub = await app.writer.run(
        partial(opt_in, rules=app.rules, brand=brand, program=program, phone=number, double_opt_in=False,
                actor=ApiActor(key.id), consent_source=body.consent_source, consented_at=body.consented_at,
                consent_proof=body.consent_proof.model_dump(by_alias=True, exclude_none=True), profile_id=profile_id),
        locks=[number],
    )
    app.wake_sender()
    return await _answer(request, brand, sub)


async def post_opt_out(request: Request) -> JSONResponse:
    """POST /subscriptions/opt-out (000:56): the program named, else every program of the brand.

    The answer is the subscription of the program named, else of the brand's default (or first) program.
    """
    key, brand = _auth(request)
    app = state(request)
    body = validate(OptOut, await json_body(request))
    programs = [resolve_program(brand, body.program)] if body.program is not None else list(brand.programs)
    number = phone(body.phone_number, brand, "phoneNumber")
    subs = await app.writer.run(
        partial(opt_out, rules=app.rules, brand=brand, programs=programs, phone=number, notify=True,
                actor=ApiActor(key.id)),
        locks=[number],
    )
    app.wake_sender()
    shown = body.program or brand.default_program or programs[0]
    return await _answer(request, brand, next(s for s in subs if s.program == shown))


routes = [
    Route(f"{PREFIX}/profiles", upsert_profile, methods=["POST"]),
    Route(f"{PREFIX}/profiles/{{ref:path}}", get_profile, methods=["GET"]),
    Route(f"{PREFIX}/subscriptions/opt-in", post_opt_in, methods=["POST"]),
    Route(f"{PREFIX}/subscriptions/opt-out", post_opt_out, methods=["POST"]),
]

OPERATIONS = [
    operation("post", f"{PREFIX}/profiles", "Noticia: upsert a profile by externalId (201 created, 200 updated)",
              TAG, "apiKey", body=True),
    operation("get", f"{PREFIX}/profiles/{{ref}}", "Noticia: a profile by externalId or prof_ id", TAG, "apiKey",
              errors=(401, 404)),
    operation("post", f"{PREFIX}/subscriptions/opt-in", "Noticia: opt a phone in with consent proof", TAG, "apiKey",
              body=True),
    operation("post", f"{PREFIX}/subscriptions/opt-out", "Noticia: opt a phone out", TAG, "apiKey", body=True),
]
