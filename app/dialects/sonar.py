"""Sonar's Add/Update Customer (seed 004) at /compat/sonar/api/v1/customers, with the key in `X-Token`.

The phone number is the customer: a POST with a number optline knows updates only the fields
sent (200), else creates (201). Bodies and answers are snake_case. `properties` are the
profile's custom attributes; Sonar's own fields optline has no column for (`picture_url`,
`zipcode`, `assigned_to`, `external_id`) are kept in the attributes under `sonar:`.
`subscribed` is a consent switch: `false` opts the phone out of every program; `true` is
refused, because consent needs its proof and the phone's confirmation (the opt-in APIs).

Seed 004 shows the body fields' types and descriptions but lost most of their names (004:67-112);
those after `picture_url` are Sonar's public reference's: subscribed, assigned_to, zipcode,
timezone, external_id.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import profiles
from app.dialects.common import (
    authenticate,
    header_key,
    operation,
    own_attributes,
    phone,
    refuse_vendor_keys,
    state,
    vendor_fields,
)
from app.errors import NotFound, Unprocessable
from app.jsonbody import json_body, validate
from app.keywords import Brand
from app.optin import ApiActor, opt_out
from app.profiles import ProfileRow

PATH = "/compat/sonar/api/v1/customers"
TAG = "sonar"
HOW = "the X-Token header"
VENDOR = "sonar"
KEPT = ("picture_url", "zipcode", "assigned_to", "external_id")  # Sonar's fields with no optline column


class Customer(BaseModel):
    """The body of POST /customers (004:28-35, 67-112), snake_case as Sonar takes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone_number: str = Field(min_length=1, max_length=40)
    email: str | None = Field(None, max_length=254)
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    picture_url: str | None = Field(None, max_length=2000)
    subscribed: StrictBool | None = None
    assigned_to: dict[str, JsonValue] | None = None
    zipcode: str | None = Field(None, max_length=20)
    timezone: str | None = Field(None, max_length=64)
    external_id: str | None = Field(None, max_length=255)
    properties: dict[str, JsonValue] | None = None


def _auth(request: Request) -> tuple[Any, Brand]:
    return authenticate(request, header_key(request, "x-token"), HOW)


def customer_json(row: ProfileRow) -> dict[str, Any]:
    """A customer as Sonar shows it (004:47-53): the fields it has, `properties` always."""
    out: dict[str, Any] = {"phone_number": row.phone}
    for name, value in (("email", row.email), ("first_name", row.first_name), ("last_name", row.last_name),
                        ("timezone", row.timezone)):
        if value is not None:
            out[name] = value
    kept = vendor_fields(row.attributes, VENDOR)
    out.update({name: kept[name] for name in KEPT if name in kept})
    out["properties"] = own_attributes(row.attributes)
    return out


def _changes(body: Customer, number: str, brand: Brand) -> profiles.Changes:
    """The profile fields the body sends, in optline's names: only those change (004:37-59)."""
    sent = body.model_fields_set
    native: dict[str, Any] = {"phoneNumber": number}
    for ours, theirs in (("email", "email"), ("firstName", "first_name"), ("lastName", "last_name"),
                         ("timezone", "timezone")):
        if theirs in sent:
            native[ours] = getattr(body, theirs)
    attributes: dict[str, Any] = {}
    if body.properties is not None:
        refuse_vendor_keys(body.properties, "properties")
        attributes.update(body.properties)
    for name in KEPT:
        if name in sent:
            attributes[f"{VENDOR}:{name}"] = getattr(body, name)
    if attributes:
        native["attributes"] = attributes
    try:
        return profiles.parse(native, region=brand.default_region)
    except Unprocessable as exc:
        names = {"phoneNumber": "phone_number", "firstName": "first_name", "lastName": "last_name"}
        exc.errors = [(names.get(f or "", f), m) for f, m in exc.errors]
        raise


async def add_update_customer(request: Request) -> JSONResponse:
    """POST /customers: 201 created, 200 updated (004:7-8); the phone number is the key (004:24)."""
    key, brand = _auth(request)
    body = validate(Customer, await json_body(request))
    if body.subscribed is True:
        raise Unprocessable("optline subscribes a phone only with consent proof and the phone's confirmation: "
                            "use an opt-in API (the customer is not changed)", field="subscribed")
    number = phone(body.phone_number, brand, "phone_number")
    changes = _changes(body, number, brand)
    app = state(request)

    def apply(conn: Connection, now: datetime) -> tuple[ProfileRow, bool]:
        try:
            current = profiles.get_by_phone(conn, brand=brand.key, phone=number)
        except NotFound:
            return profiles.upsert(conn, now, brand=brand.key, data=changes, region=brand.default_region)
        # Found by its phone: that profile is updated, whatever other identifiers the body carries.
        row = profiles.patch(conn, now, brand=brand.key, ref=current.id, data=changes, region=brand.default_region)
        return row, False

    row, created = await app.writer.run(apply, locks=changes.locks(brand.key))
    if body.subscribed is False:
        await app.writer.run(partial(opt_out, rules=app.rules, brand=brand, programs=list(brand.programs),
                                     phone=number, notify=True, actor=ApiActor(key.id)), locks=[number])
        app.wake_sender()
    return JSONResponse(customer_json(row), status_code=201 if created else 200)


routes = [Route(PATH, add_update_customer, methods=["POST"])]

OPERATIONS = [
    operation("post", PATH, "Sonar: add or update a customer by phone number (201 created, 200 updated)", TAG,
              "xToken", body=True),
]
