"""Synerise's CRM profile API (seed 002) at /compat/synerise, with the key as `Authorization: Bearer`.

A profile is found by any of its identifiers: email, phone, customId (optline's externalId),
uuid or the numeric clientId. Writes answer 202 with no content (002:32, 126, 141, 172);
`null` deletes a custom attribute or resets a native field, `""` is refused anywhere in a body
(002:111, 149). Synerise's own fields that optline has no column for (uuid, clientId,
displayName, company, address, …, tags, the non-SMS agreements) are kept in the profile's
attributes under `synerise:`. `agreements.sms` is consent: it shows whether the phone is
subscribed to a program; writing `false` opts it out of every program, `true` is refused
(consent needs its proof and the phone's confirmation: the opt-in APIs).
"""

from __future__ import annotations

import secrets
import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field, JsonValue, StrictBool
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import profiles
from app.dialects.common import (
    authenticate,
    bearer_key,
    find_by_vendor_field,
    object_body,
    operation,
    own_attributes,
    reject_empty_strings,
    refuse_vendor_keys,
    seconds_z,
    state,
    vendor_fields,
)
from app.errors import Conflict, InvalidInput, NotFound, Unprocessable
from app.jsonbody import json_body, validate
from app.keywords import Brand
from app.models import subscriptions
from app.optin import ApiActor, opt_out
from app.phone import to_e164
from app.profiles import ProfileRow
from app.schemas import _In

PREFIX = "/compat/synerise"
TAG = "synerise"
HOW = "Authorization: Bearer <key>"
VENDOR = "synerise"
MAX_BATCH = 1000
MAX_LIST = 10_000  # 002:99
# Synerise's native fields optline keeps as vendor fields, in the order 002:56-91 shows them.
TEXT_FIELDS = ("displayName", "company", "address", "city", "province", "zipCode", "countryCode", "birthDate",
               "avatarUrl")
AGREEMENTS = ("email", "sms", "push", "webPush", "bluetooth", "rfid", "wifi")


class Agreements(_In):
    email: StrictBool | None = None
    sms: StrictBool | None = None
    push: StrictBool | None = None
    webPush: StrictBool | None = None  # noqa: N815 - Synerise's name
    bluetooth: StrictBool | None = None
    rfid: StrictBool | None = None
    wifi: StrictBool | None = None


class Client(_In):
    """A profile as Synerise takes it (002:13-30, 111-124, 147-170)."""

    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=40)
    custom_id: str | None = Field(None, max_length=255)
    uuid: str | None = Field(None, max_length=36)
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    display_name: str | None = Field(None, max_length=200)
    company: str | None = Field(None, max_length=200)
    address: str | None = Field(None, max_length=500)
    city: str | None = Field(None, max_length=200)
    province: str | None = Field(None, max_length=200)
    zip_code: str | None = Field(None, max_length=20)
    country_code: str | None = Field(None, max_length=10)
    birth_date: str | None = Field(None, max_length=10)
    sex: Literal["FEMALE", "MALE", "OTHER", "NOT_SPECIFIED"] | None = None
    avatar_url: str | None = Field(None, max_length=2000)
    agreements: Agreements | None = None
    attributes: dict[str, JsonValue] | None = None
    tags: list[str] | None = Field(None, max_length=100)


def _auth(request: Request) -> tuple[Any, Brand]:
    return authenticate(request, bearer_key(request), HOW)


# --- reading ---------------------------------------------------------------------------------


def client_json(row: ProfileRow, sms_subscribed: bool) -> dict[str, Any]:
    """A profile as Synerise shows it (002:56-91)."""
    kept = vendor_fields(row.attributes, VENDOR)
    out: dict[str, Any] = {
        "previousClients": [], "clientId": kept.get("clientId"), "email": row.email, "phone": row.phone,
        "customId": row.external_id, "uuid": kept.get("uuid"), "firstName": row.first_name, "lastName": row.last_name,
    }
    for name in TEXT_FIELDS[:-1]:
        out[name] = kept.get(name)
    out["lastActivityDate"] = seconds_z(row.updated_at)
    out["sex"] = kept.get("sex", "NOT_SPECIFIED")
    out["avatarUrl"] = kept.get("avatarUrl")
    out["anonymous"] = row.email is None and row.phone is None and row.external_id is None
    out["agreements"] = {name: bool(kept.get(f"agreement.{name}", False)) for name in AGREEMENTS}
    out["agreements"]["sms"] = sms_subscribed
    out["attributes"] = own_attributes(row.attributes)
    out["tags"] = list(kept.get("tags") or [])
    return out


def _subscribed_phones(conn: Connection, brand: str, phones: list[str]) -> set[str]:
    if not phones:
        return set()
    rows = conn.execute(sa.select(subscriptions.c.phone).where(
        subscriptions.c.brand == brand, subscriptions.c.phone.in_(phones),
        subscriptions.c.status == "subscribed").distinct()).all()
    return {row.phone for row in rows}


Finder = Callable[[Connection, str], ProfileRow]


def _finder(kind: str, raw: str, brand: Brand) -> Finder:
    """How to find the profile one identifier in a path names; 404 for a value no profile can hold."""
    if "\x00" in raw:
        raise NotFound("no such profile")
    if kind == "email":
        try:
            email = profiles.normalize_email(raw)
        except ValueError as exc:
            raise Unprocessable(str(exc), field="email") from None
        return lambda conn, b: profiles.get_by_email(conn, brand=b, email=email)
    if kind == "phone":
        try:
            number = to_e164(raw, brand.default_region)
        except InvalidInput as exc:
            raise Unprocessable(exc.message, field="phone") from None
        return lambda conn, b: profiles.get_by_phone(conn, brand=b, phone=number)
    if kind == "customId":
        def by_custom_id(conn: Connection, b: str) -> ProfileRow:
            row = profiles.get(conn, brand=b, ref=raw)
            if row.external_id != raw:  # a prof_ id is not a customId
                raise NotFound(f"no profile with customId {raw!r}")
            return row
        return by_custom_id
    if kind == "uuid":
        try:
            value = str(uuidlib.UUID(raw))
        except ValueError:
            raise NotFound(f"no profile with uuid {raw!r}") from None
        return lambda conn, b: find_by_vendor_field(conn, brand=b, vendor=VENDOR, name="uuid", value=value)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise NotFound(f"no profile with clientId {raw!r}")
    return lambda conn, b: find_by_vendor_field(conn, brand=b, vendor=VENDOR, name="clientId", value=str(int(raw)))


# --- writing ---------------------------------------------------------------------------------


class Item:
    """One parsed client: its changes in optline's names, the uuid it names, and whether SMS consent ends."""

    def __init__(self, changes: profiles.Changes, uuid: str | None, sms_off: bool, identified: bool):
        self.changes, self.uuid, self.sms_off, self.identified = changes, uuid, sms_off, identified


def parse_client(data: Any, brand: Brand, where: str = "") -> Item:
    """Validate one Synerise client body into an Item; 422 naming the field (prefixed with `where`)."""
    try:
        reject_empty_strings(object_body(data))
        body = validate(Client, data)
        if body.agreements is not None and body.agreements.sms is True:
            raise Unprocessable("optline subscribes a phone only with consent proof and the phone's confirmation: "
                                "use an opt-in API", field="agreements.sms")
        sent = body.model_fields_set
        native: dict[str, Any] = {}
        for ours, theirs in (("email", "email"), ("phoneNumber", "phone"), ("externalId", "custom_id"),
                             ("firstName", "first_name"), ("lastName", "last_name")):
            if theirs in sent:
                native[ours] = getattr(body, theirs)
        kept: dict[str, Any] = {}
        dumped = body.model_dump(by_alias=True, include=sent)
        for name in (*TEXT_FIELDS, "sex", "tags"):
            if name in dumped:
                kept[f"{VENDOR}:{name}"] = dumped[name]
        uuid = None
        if body.uuid is not None:
            try:
                uuid = str(uuidlib.UUID(body.uuid))
            except ValueError:
                raise Unprocessable("uuid must be a UUID", field="uuid") from None
            kept[f"{VENDOR}:uuid"] = uuid
        if body.agreements is not None:
            for name, value in body.agreements.model_dump(include=body.agreements.model_fields_set).items():
                if name != "sms":
                    kept[f"{VENDOR}:agreement.{name}"] = value
        attributes: dict[str, Any] = {}
        if "attributes" in sent:
            if body.attributes is None:
                # null deletes every custom attribute (002:111), never Synerise's own fields.
                raise Unprocessable("attributes must be an object; null a single attribute to delete it",
                                    field="attributes")
            refuse_vendor_keys(body.attributes, "attributes")
            attributes.update(body.attributes)
        attributes.update(kept)
        if attributes:
            native["attributes"] = attributes
        changes = profiles.parse(native, region=brand.default_region)
    except InvalidInput as exc:
        exc.errors = [(_field(f, where), m) for f, m in exc.errors] or [(where or "body", exc.message)]
        raise
    identified = any(changes.fields.get(c) is not None for c in ("external_id", "phone", "email"))
    sms_off = body.agreements is not None and body.agreements.sms is False
    return Item(changes, uuid, sms_off, identified)


def _field(name: str | None, where: str) -> str:
    """An error's field in Synerise's names, inside batch item `where`."""
    name = {"phoneNumber": "phone", "externalId": "customId"}.get(name or "body", name or "body")
    if not where:
        return name
    return where if name == "body" else f"{where}.{name}"


def _with_ids(row: ProfileRow) -> profiles.Changes | None:
    """The clientId and uuid a profile lacks (a profile made natively or by SMS gets them on its first write here)."""
    kept = vendor_fields(row.attributes, VENDOR)
    add: dict[str, Any] = {}
    if "clientId" not in kept:
        add[f"{VENDOR}:clientId"] = 10**9 + secrets.randbelow(2**53 - 10**9)
    if "uuid" not in kept:
        add[f"{VENDOR}:uuid"] = str(uuidlib.uuid4())
    return profiles.Changes(attributes=add) if add else None


def save(conn: Connection, now: datetime, *, app: Any, brand: Brand, actor: ApiActor, item: Item,
         target: Finder | None = None) -> ProfileRow:
    """Create or update one client (the one `target` finds, else the one its identifiers match)."""
    row: ProfileRow | None = None
    if target is not None:
        row = target(conn, brand.key)
    elif item.uuid is not None:
        try:
            row = find_by_vendor_field(conn, brand=brand.key, vendor=VENDOR, name="uuid", value=item.uuid)
        except NotFound:
            row = None
    if row is not None:
        if item.uuid is not None:
            try:
                holder = find_by_vendor_field(conn, brand=brand.key, vendor=VENDOR, name="uuid", value=item.uuid)
            except NotFound:
                holder = None
            if holder is not None and holder.id != row.id:
                raise Conflict(f"uuid {item.uuid} belongs to another profile", field="uuid")
        row = profiles.patch(conn, now, brand=brand.key, ref=row.id, data=item.changes, region=brand.default_region)
    elif item.identified:
        row, _created = profiles.upsert(conn, now, brand=brand.key, data=item.changes, region=brand.default_region)
    else:
        raise Unprocessable("a new profile needs an email, phone or customId (a uuid only finds an existing one)",
                            errors=[("email", "required"), ("phone", "required"), ("customId", "required")])
    ids = _with_ids(row)
    if ids is not None:
        row = profiles.patch(conn, now, brand=brand.key, ref=row.id, data=ids, region=brand.default_region)
    if item.sms_off and row.phone is not None:
        opt_out(conn, now, rules=app.rules, brand=brand, programs=list(brand.programs), phone=row.phone, notify=True,
                actor=actor)
    return row


def _locks(brand: Brand, items: list[Item], extra: str | None = None) -> list[str]:
    keys = {k for item in items for k in item.changes.locks(brand.key)}
    if extra:
        keys.add(extra)
    return sorted(keys)


ACCEPTED = Response(status_code=202)


async def create_client(request: Request) -> Response:
    """POST /v4/clients: 202, no content (002:22-32)."""
    key, brand = _auth(request)
    item = parse_client(await json_body(request), brand)
    app = state(request)
    await app.writer.run(lambda conn, now: save(conn, now, app=app, brand=brand, actor=ApiActor(key.id), item=item),
                         locks=_locks(brand, [item]))
    app.wake_sender()
    return ACCEPTED


async def batch_clients(request: Request) -> Response:
    """POST /v4/clients/batch: a bare array, each item created or updated; 202, no content (002:143-172).

    Every item is checked before any is written: one bad item is a 422 naming it, and nothing changes.
    """
    key, brand = _auth(request)
    data = await json_body(request, limit=5 * 1024 * 1024)
    if not isinstance(data, list) or not data:
        raise Unprocessable("the body must be a non-empty JSON array of profiles", field="body")
    if len(data) > MAX_BATCH:
        raise Unprocessable(f"at most {MAX_BATCH} profiles a batch", field="body")
    items = [parse_client(entry, brand, f"[{index}]") for index, entry in enumerate(data)]
    app = state(request)
    actor = ApiActor(key.id)

    def apply(conn: Connection, now: datetime) -> None:
        for index, item in enumerate(items):
            try:
                save(conn, now, app=app, brand=brand, actor=actor, item=item)
            except InvalidInput as exc:
                exc.errors = [(f"[{index}].{f}" if f else f"[{index}]", m) for f, m in exc.errors] or [
                    (f"[{index}]", exc.message)]
                raise

    await app.writer.run(apply, locks=_locks(brand, items))
    app.wake_sender()
    return ACCEPTED


def _identified(kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """GET, POST and DELETE on /v4/clients/<by-kind>/{value}."""

    async def get(request: Request) -> Response:
        _key, brand = _auth(request)
        find = _finder(kind, request.path_params["value"], brand)

        def run(conn: Connection) -> tuple[ProfileRow, bool]:
            row = find(conn, brand.key)
            return row, bool(row.phone and _subscribed_phones(conn, brand.key, [row.phone]))

        row, sms = await state(request).read(run)
        return JSONResponse(client_json(row, sms))

    async def update(request: Request) -> Response:
        key, brand = _auth(request)
        find = _finder(kind, request.path_params["value"], brand)
        item = parse_client(await json_body(request), brand)
        app = state(request)
        current = await app.read(lambda conn: find(conn, brand.key))
        await app.writer.run(lambda conn, now: save(conn, now, app=app, brand=brand, actor=ApiActor(key.id),
                                                    item=item, target=find),
                             locks=_locks(brand, [item], current.phone))
        app.wake_sender()
        return ACCEPTED

    async def delete(request: Request) -> Response:
        _key, brand = _auth(request)
        find = _finder(kind, request.path_params["value"], brand)
        app = state(request)
        current = await app.read(lambda conn: find(conn, brand.key))
        await app.writer.run(lambda conn, now: profiles.delete(conn, now, brand=brand.key, ref=current.id),
                             locks=[current.phone] if current.phone else [])
        return ACCEPTED

    return get, update, delete


async def list_clients(request: Request) -> Response:
    """GET /crm/v1/list: profiles, at most 10 000 (002:93-105); `limit` (default 100)."""
    _key, brand = _auth(request)
    raw = request.query_params.get("limit", "100")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or not 1 <= int(raw) <= MAX_LIST:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIST}", field="limit")

    def run(conn: Connection) -> tuple[list[ProfileRow], set[str]]:
        rows, _more = profiles.list_page(conn, brand=brand.key, limit=int(raw))
        return rows, _subscribed_phones(conn, brand.key, [r.phone for r in rows if r.phone])

    rows, subscribed = await state(request).read(run)
    return JSONResponse([client_json(row, row.phone in subscribed) for row in rows])


KINDS = {"by-email": "email", "by-phone": "phone", "by-customId": "customId", "by-uuid": "uuid"}
routes = [
    Route(f"{PREFIX}/v4/clients", create_client, methods=["POST"]),
    Route(f"{PREFIX}/v4/clients/batch", batch_clients, methods=["POST"]),
    Route(f"{PREFIX}/crm/v1/list", list_clients, methods=["GET"]),
]
OPERATIONS = [
    operation("post", f"{PREFIX}/v4/clients", "Synerise: create a profile (202, no content)", TAG, "bearer", ok=202,
              body=True),
    operation("post", f"{PREFIX}/v4/clients/batch", "Synerise: create or update profiles (202, no content)", TAG,
              "bearer", ok=202, body=True),
    operation("get", f"{PREFIX}/crm/v1/list", "Synerise: list profiles", TAG, "bearer", errors=(400, 401)),
]
for segment, kind in [*KINDS.items(), ("", "clientId")]:
    path = f"{PREFIX}/v4/clients/{segment + '/' if segment else ''}{{value}}"
    get, update, delete = _identified(kind)
    routes += [Route(path, get, methods=["GET"]), Route(path, update, methods=["POST"]),
               Route(path, delete, methods=["DELETE"])]
    OPERATIONS += [
        operation("get", path, f"Synerise: a profile by {kind}", TAG, "bearer", errors=(401, 404, 422)),
        operation("post", path, f"Synerise: update a profile by {kind} (202, no content)", TAG, "bearer", ok=202,
                  body=True),
        operation("delete", path, f"Synerise: delete a profile by {kind} (202, no content)", TAG, "bearer", ok=202,
                  errors=(401, 404, 422)),
    ]
