"""Profiles: validate, upsert, patch, read, list, delete and batch; callers own the transaction.

Rules, from the reference APIs:
- an upsert matches on externalId, else phoneNumber, else email (one is required);
- only the fields sent change: absent leaves a field alone, `null` clears it, `""` is refused;
- `attributes` merge key by key, a `null` value deletes that key, `attributes: null` all of them;
- externalId, phone and email are unique per brand among live profiles; a write that would
  take another profile's value is a Conflict naming the field;
- DELETE nulls the personal data and keeps a tombstone, so subscriptions and consent events
  stay (detached) and opt-outs keep being honoured.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import operator
import re
import sqlite3
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from app.errors import Conflict, InvalidInput, NotFound, Unprocessable
from app.models import new_id, profiles, subscriptions
from app.phone import to_e164
from app.schemas import ProfileIn, field_errors
from app.sql import Raw, pg_sql, update_sql

log = logging.getLogger("optline.profiles")

ID_PREFIX = "prof_"

# Column -> the field's name in the API, in match order first.
API_NAMES: Mapping[str, str] = {
    "external_id": "externalId",
    "phone": "phoneNumber",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "timezone": "timezone",
}
MATCH_ORDER = ("external_id", "phone", "email")
_NORMALIZED = frozenset({"phone", "email", "timezone"})  # columns parse() normalises

# The WHATWG (HTML) email grammar, plus a dot in the domain: what browsers accept, with
# no network lookups; a mailbox's existence is the brand's problem, not ours.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One live profile as stored."""

    id: str
    brand: str
    external_id: str | None
    phone: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    timezone: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> ProfileRow:
        """From a result row of the profiles table."""
        m = row._mapping
        return cls(
            id=m["id"], brand=m["brand"], external_id=m["external_id"], phone=m["phone"], email=m["email"],
            first_name=m["first_name"], last_name=m["last_name"], timezone=m["timezone"],
            attributes=dict(m["attributes"] or {}), created_at=m["created_at"], updated_at=m["updated_at"],
        )


@dataclass(frozen=True)
class Changes:
    """A validated profile body: the columns sent (None clears) and the attribute patch."""

    fields: Mapping[str, str | None] = field(default_factory=dict)
    attributes: Mapping[str, Any] | None = None  # key -> value, None deletes the key; None: not sent
    clear_attributes: bool = False  # `attributes: null` was sent

    def locks(self, brand: str) -> list[str]:
        """Writer lock keys: the phone (serialises with SMS work on it) and the other unique keys."""
        keys = []
        phone = self.fields.get("phone")
        if phone:
            keys.append(phone)
        # Two processes upserting the same new externalId or email then queue instead of
        # one of them failing on the unique index.
        for column in ("external_id", "email"):
            value = self.fields.get(column)
            if value:
                keys.append(f"profile:{brand}:{column}:{value}")
        return keys


@dataclass(frozen=True)
class BatchResult:
    """One batch item's outcome: the profile and 201/200, or the error that refused it."""

    index: int
    status: int
    profile: ProfileRow | None = None
    error: InvalidInput | None = None


# --- validation ------------------------------------------------------------------------


@functools.cache
def _timezones() -> Mapping[str, str]:
    # Read the tz database once; keys folded so "europe/paris" finds "Europe/Paris".
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def normalize_timezone(value: str) -> str:
    """The canonical IANA name; ValueError when it is not one."""
    name = _timezones().get(value.strip().casefold())
    if name is None:
        raise ValueError("must be an IANA time zone name, like Europe/Paris or America/New_York")
    return name


def normalize_email(value: str) -> str:
    """The address in lower case; ValueError when it is not an email address."""
    text = value.strip()
    if len(text) > 254 or not _EMAIL.fullmatch(text):
        raise ValueError("must be an email address, like ada@example.com")
    # Stored and matched in lower case: nobody means two people by Ada@X.com and ada@x.com.
    return text.lower()


def normalize_phone(value: str, region: str | None) -> str:
    """E.164, using the brand's default region for numbers without a country code."""
    return to_e164(value, region)


def parse(data: Any, *, region: str | None) -> Changes:
    """Validate a profile body (upsert or patch) into Changes; Unprocessable naming every bad field."""
    try:
        model = ProfileIn.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable("the profile is not valid", errors=field_errors(exc)) from None
    fields: dict[str, str | None] = {}
    errors: list[tuple[str, str]] = []
    sent = model.model_fields_set
    for name in sent:
        if name == "attributes":
            continue
        column = "phone" if name == "phone_number" else name
        value = getattr(model, name)
        if value is not None and column in _NORMALIZED:
            try:
                if column == "phone":
                    value = normalize_phone(value, region)
                elif column == "email":
                    value = normalize_email(value)
                else:
                    value = normalize_timezone(value)
            except InvalidInput as exc:
                errors.append((API_NAMES[column], exc.message))
                continue
            except ValueError as exc:
                errors.append((API_NAMES[column], str(exc)))
                continue
        fields[column] = value
    if errors:
        errors.sort(key=lambda e: list(API_NAMES.values()).index(e[0]))
        raise Unprocessable("the profile is not valid", errors=errors)
    if "attributes" not in sent:
        return Changes(fields=fields)
    return Changes(fields=fields, attributes=model.attributes, clear_attributes=model.attributes is None)


def require_identifier(changes: Changes) -> None:
    """Unprocessable unless an upsert carries externalId, phoneNumber or email."""
    fields = changes.fields
    if fields.get("external_id") is None and fields.get("phone") is None and fields.get("email") is None:
        message = "one of externalId, phoneNumber or email is required to match or create a profile"
        raise Unprocessable(message, errors=[(API_NAMES[c], message) for c in MATCH_ORDER])


# --- reading -----------------------------------------------------------------------------


# Statements are built once: per-call construction cost more than the query itself
# (profiling a 1000-item batch), so each call only binds values.
_LIVE = (profiles.c.brand == sa.bindparam("brand"), profiles.c.deleted_at.is_(None))
_BY = {c: sa.select(profiles).where(*_LIVE, profiles.c[c] == sa.bindparam("value")) for c in ("id", *MATCH_ORDER)}
# FOR UPDATE: attributes are read, merged and written back; on PostgreSQL a second process
# must wait for the first (SQLite ignores it: BEGIN IMMEDIATE already serialises writers).
_BY_LOCKED = {c: q.with_for_update() for c, q in _BY.items()}
# Who holds any of these unique values: one query answers both the match and the conflicts.
# One indexed lookup per column given, so each uses its own unique index: with an OR, SQLite
# scans every profile of the brand and a 1000-item batch grew quadratic.
_HOLDERS = {
    column: sa.select(profiles).where(*_LIVE, profiles.c[column] == sa.bindparam("value")).with_for_update()
    for column in MATCH_ORDER
}
_INSERT = profiles.insert()
_UPDATE = profiles.update().where(profiles.c.id == sa.bindparam("_id"))
_DETACH = (
    subscriptions.update()
    .where(subscriptions.c.brand == sa.bindparam("_brand"), subscriptions.c.profile_id == sa.bindparam("_profile_id"))
)


def _find(conn: Connection, brand: str, column: str, value: str, *, lock: bool = False) -> ProfileRow | None:
    row = conn.execute((_BY_LOCKED if lock else _BY)[column], {"brand": brand, "value": value}).first()
    return ProfileRow.of(row) if row is not None else None


def _by_ref(conn: Connection, brand: str, ref: str, *, lock: bool = False) -> ProfileRow | None:
    found = _find(conn, brand, "id", ref, lock=lock) if ref.startswith(ID_PREFIX) else None
    # An externalId may itself start with prof_; the id wins, then the externalId.
    return found or _find(conn, brand, "external_id", ref, lock=lock)


def get(conn: Connection, *, brand: str, ref: str) -> ProfileRow:
    """The live profile whose id or externalId is `ref`; NotFound otherwise."""
    row = _by_ref(conn, brand, ref)
    if row is None:
        raise NotFound(f"no profile {ref!r}")
    return row


def get_by_phone(conn: Connection, *, brand: str, phone: str) -> ProfileRow:
    """The live profile with this E.164 number; NotFound otherwise."""
    row = _find(conn, brand, "phone", phone)
    if row is None:
        raise NotFound(f"no profile with phone number {phone}")
    return row


def get_by_email(conn: Connection, *, brand: str, email: str) -> ProfileRow:
    """The live profile with this (normalised) email; NotFound otherwise."""
    row = _find(conn, brand, "email", email)
    if row is None:
        raise NotFound(f"no profile with email {email}")
    return row


def phone_of(conn: Connection, *, brand: str, ref: str) -> str | None:
    """The phone of the profile `ref`, if any (to choose the writer lock before deleting)."""
    row = _by_ref(conn, brand, ref)
    return row.phone if row is not None else None


def list_page(
    conn: Connection, *, brand: str, limit: int, cursor: tuple[datetime, str] | None = None,
    updated_since: datetime | None = None, program: str | None = None, status: str | None = None,
) -> tuple[list[ProfileRow], bool]:
    """Up to `limit` live profiles after `cursor`, by (updatedAt, id); True when more follow."""
    query = sa.select(profiles).where(profiles.c.brand == brand, profiles.c.deleted_at.is_(None))
    if cursor is not None:
        # A row value comparison walks the (brand, updated_at, id) index: every page costs the same.
        query = query.where(sa.tuple_(profiles.c.updated_at, profiles.c.id) > cursor)
    if updated_since is not None:
        query = query.where(profiles.c.updated_at >= updated_since)
    if program is not None or status is not None:
        # "Profiles in this program/status": a subscription of the brand on the profile's phone.
        has = sa.select(sa.literal(1)).where(
            subscriptions.c.brand == profiles.c.brand, subscriptions.c.phone == profiles.c.phone,
        )
        if program is not None:
            has = has.where(subscriptions.c.program == program)
        if status is not None:
            has = has.where(subscriptions.c.status == status)
        query = query.where(has.exists())
    rows = conn.execute(query.order_by(profiles.c.updated_at, profiles.c.id).limit(limit + 1)).all()
    return [ProfileRow.of(r) for r in rows[:limit]], len(rows) > limit


# --- writing -----------------------------------------------------------------------------


def _holders(conn: Connection, brand: str, values: Mapping[str, str | None]) -> dict[str, ProfileRow]:
    """The live profiles holding the externalId, phone or email in `values`, by column."""
    params = {c: values.get(c) for c in MATCH_ORDER}
    if not any(params.values()):
        return {}
    found: dict[str, ProfileRow] = {}
    for column, value in params.items():
        if value is None:
            continue
        row = conn.execute(_HOLDERS[column], {"brand": brand, "value": value}).first()
        if row is not None:
            found[column] = ProfileRow.of(row)
    return found


def _match(holders: Mapping[str, ProfileRow], changes: Changes) -> ProfileRow | None:
    external_id = changes.fields.get("external_id")
    if "external_id" in holders:
        return holders["external_id"]
    for column in ("phone", "email"):
        row = holders.get(column)
        # A profile found by phone or email is taken only if it is not another externalId's:
        # silently re-keying a CRM record would merge two people (the write then conflicts).
        if row is not None and (external_id is None or row.external_id is None):
            return row
    return None


def _check_unique(target: ProfileRow | None, values: Mapping[str, Any], holders: Mapping[str, ProfileRow]) -> None:
    errors = []
    for column in MATCH_ORDER:
        holder = holders.get(column)
        if values.get(column) is not None and holder is not None and (target is None or holder.id != target.id):
            errors.append((API_NAMES[column], f"{values[column]} belongs to another profile ({holder.id})"))
    if errors:
        raise Conflict("the profile would take another profile's " + ", ".join(f for f, _ in errors), errors=errors)


def _merged_attributes(current: Mapping[str, Any], changes: Changes) -> dict[str, Any]:
    merged = {} if changes.clear_attributes else dict(current)
    for key, value in (changes.attributes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _plan(
    now: datetime, brand: str, target: ProfileRow | None, changes: Changes, holders: Mapping[str, ProfileRow],
) -> tuple[ProfileRow, dict[str, Any] | None]:
    """The row after `changes` (target None: a new profile) and the values to write, None when nothing changed.

    Pure: Conflict when a unique value belongs to another holder; the caller writes.
    """
    _check_unique(target, changes.fields, holders)
    attributes = _merged_attributes(target.attributes if target else {}, changes)
    if target is None:
        values: dict[str, Any] = {c: None for c in API_NAMES}
        values.update(changes.fields)
        values.update(id=new_id(ID_PREFIX), brand=brand, attributes=attributes, created_at=now, updated_at=now)
        return ProfileRow(**values), values
    updates: dict[str, Any] = {c: v for c, v in changes.fields.items() if getattr(target, c) != v}
    if attributes != target.attributes:
        updates["attributes"] = attributes
    if not updates:
        # Nothing changed: updatedAt stays, so `updatedSince` syncs skip no-op writes.
        return target, None
    updates["updated_at"] = now
    return dataclasses.replace(target, **updates), updates


def _apply(
    conn: Connection, now: datetime, brand: str, target: ProfileRow | None, changes: Changes,
    holders: Mapping[str, ProfileRow],
) -> ProfileRow:
    """Create (target None) or update `target` with `changes`; the row as it now is."""
    row, write = _plan(now, brand, target, changes, holders)
    if write is None:
        return row
    try:
        if target is None:
            conn.execute(_INSERT, write)
        else:
            conn.execute(_UPDATE, {"_id": target.id, **write})
    except IntegrityError as exc:
        # Another process took the value between our read and our write.
        raise Conflict("the profile collides with another profile written at the same time") from exc
    return row


def upsert(conn: Connection, now: datetime, *, brand: str, data: Changes | Any, region: str | None) -> tuple[ProfileRow, bool]:
    """Create or update the profile the body matches; the profile and True when it was created."""
    changes = data if isinstance(data, Changes) else parse(data, region=region)
    require_identifier(changes)
    holders = _holders(conn, brand, changes.fields)
    target = _match(holders, changes)
    return _apply(conn, now, brand, target, changes, holders), target is None


def patch(conn: Connection, now: datetime, *, brand: str, ref: str, data: Changes | Any, region: str | None) -> ProfileRow:
    """Partially update the profile `ref` (id or externalId); NotFound if there is none."""
    changes = data if isinstance(data, Changes) else parse(data, region=region)
    target = _by_ref(conn, brand, ref, lock=True)
    if target is None:
        raise NotFound(f"no profile {ref!r}")
    moving = {c: v for c in MATCH_ORDER if (v := changes.fields.get(c)) is not None and v != getattr(target, c)}
    return _apply(conn, now, brand, target, changes, _holders(conn, brand, moving))


def delete(conn: Connection, now: datetime, *, brand: str, ref: str) -> str:
    """Erase the profile's personal data, keep its id as a tombstone, detach its subscriptions; its id."""
    target = _by_ref(conn, brand, ref, lock=True)
    if target is None:
        raise NotFound(f"no profile {ref!r}")
    erased: dict[str, Any] = {c: None for c in API_NAMES}
    conn.execute(_UPDATE, {"_id": target.id, **erased, "attributes": {}, "deleted_at": now, "updated_at": now})
    # Subscriptions and the consent ledger stay, so opt-outs keep being honoured; they only
    # stop pointing at a person who asked to be forgotten.
    conn.execute(_DETACH, {"_brand": brand, "_profile_id": target.id, "profile_id": None, "updated_at": now})
    return target.id


def parse_items(items: Iterable[Any], *, region: str | None) -> list[Changes | InvalidInput]:
    """Validate batch items one by one: each becomes Changes or the error that refuses it."""
    parsed: list[Changes | InvalidInput] = []
    for item in items:
        try:
            changes = parse(item, region=region)
            require_identifier(changes)
        except InvalidInput as exc:
            parsed.append(exc)
        else:
            parsed.append(changes)
    return parsed


# --- batches -----------------------------------------------------------------------------
#
# A batch slice is one lookup per column for every identifier its items name, the items
# applied in order to that in-memory picture, and the writes in a few statements, all in
# plain SQL (app.sql.Raw). Item by item through SQLAlchemy (up to three lookups and a write,
# each a built statement) it cost ~300 µs an item, ten times what SQLite needs for the work.

# The columns of a ProfileRow, in the order the batch's plain SQL reads and writes them.
_ROW_COLUMNS = tuple(f.name for f in dataclasses.fields(ProfileRow))
assert _ROW_COLUMNS[-3:] == ("attributes", "created_at", "updated_at"), "_rows converts these three by position"
_SELECT_LIVE = f"SELECT {', '.join(_ROW_COLUMNS)} FROM profiles WHERE brand = :brand AND deleted_at IS NULL"
_NEW_ROWS = "insert"  # the writes' key for new profiles (an update's is its SQL)

Index = dict[str, dict[str, ProfileRow]]  # column -> value -> the live profile holding it


def _rows(raw: Raw, records: Iterable[Sequence[Any]]) -> list[ProfileRow]:
    """ProfileRows from records of _ROW_COLUMNS, converting what each engine stores its own way."""
    if raw.pg:
        # psycopg answers JSON parsed and timestamps in the session's time zone; the API speaks UTC.
        return [ProfileRow(*r[:-3], dict(r[-3] or {}), r[-2].astimezone(UTC), r[-1].astimezone(UTC))
                for r in records]
    # SQLite holds JSON text and naive UTC text (see app.db.UtcDateTime).
    parse_time = datetime.fromisoformat
    return [
        ProfileRow(*r[:-3], json.loads(r[-3]) if r[-3] else {}, parse_time(r[-2]).replace(tzinfo=UTC),
                   parse_time(r[-1]).replace(tzinfo=UTC))
        for r in records
    ]


@functools.lru_cache(maxsize=8)
def _lookup_sql(column: str, pg: bool) -> str:
    # The values go as one array (a JSON array on SQLite), so the text stays the same for any
    # number of them and each engine probes the column's unique index once per value.
    # FOR UPDATE as in _HOLDERS (SQLite has no such clause: BEGIN IMMEDIATE serialises writers).
    if pg:
        return pg_sql(f"{_SELECT_LIVE} AND {column} = ANY(:values) FOR UPDATE")
    return f"{_SELECT_LIVE} AND {column} IN (SELECT value FROM json_each(:values))"


def _holders_many(raw: Raw, brand: str, wanted: Mapping[str, Iterable[str]]) -> Index:
    """The live profiles holding any of the `wanted` values, locked: at most one query per column."""
    index: Index = {column: {} for column in MATCH_ORDER}
    found: dict[str, ProfileRow] = {}
    for column in MATCH_ORDER:
        # A value held by a profile already found needs no second look (the value is unique).
        values = sorted(set(wanted.get(column, ())) - {getattr(r, column) for r in found.values()})
        if values:
            # One query per column rather than an OR across them: each walks its own index.
            params = {"brand": brand, "values": values if raw.pg else json.dumps(values)}
            records = raw.cur.execute(_lookup_sql(column, raw.pg), params).fetchall()
            found.update((row.id, row) for row in _rows(raw, records))
    for row in found.values():
        _reindex(index, None, row)
    return index


def _reindex(index: Index, before: ProfileRow | None, after: ProfileRow) -> None:
    """Point the index at `after`, the new state of `before` (None: a new profile)."""
    for column in MATCH_ORDER:
        held = index[column]
        old = getattr(before, column) if before is not None else None
        if old is not None and (holder := held.get(old)) is not None and holder.id == after.id:
            del held[old]
        new = getattr(after, column)
        if new is not None:
            held[new] = after


def _batch_slice(
    conn: Connection, now: datetime, brand: str, items: Sequence[Changes | InvalidInput | Any], region: str | None,
    start: int,
) -> list[BatchResult]:
    """Upsert the items in order against one lookup of every identifier they name; DBAPI errors propagate."""
    parsed: list[Changes | InvalidInput] = []
    for item in items:
        if isinstance(item, (Changes, InvalidInput)):
            parsed.append(item)
        else:
            parsed += parse_items([item], region=region)
    raw = Raw(conn)
    wanted = {c: [v for ch in parsed if isinstance(ch, Changes) and (v := ch.fields.get(c)) is not None]
              for c in MATCH_ORDER}
    index = _holders_many(raw, brand, wanted)
    # Every write of the slice stamps the same time: convert it for SQLite once, not per row.
    stamp = now if raw.pg else sqlite3.adapt(now)
    results: list[BatchResult] = []
    # (sql, params) in item order: a value one item frees may be taken by a later one, so
    # the writes keep the items' order (a run of inserts, or of alike updates, goes at once).
    writes: list[tuple[str, dict[str, Any]]] = []
    for offset, changes in enumerate(parsed, start):
        if isinstance(changes, InvalidInput):
            results.append(BatchResult(offset, changes.status, error=changes))
            continue
        # The index holds every value the slice names, kept current as items apply, so
        # an item sees the items before it exactly as if each had been written alone.
        holders = {c: row for c in MATCH_ORDER
                   if (v := changes.fields.get(c)) is not None and (row := index[c].get(v)) is not None}
        try:
            require_identifier(changes)
            target = _match(holders, changes)
            row, write = _plan(now, brand, target, changes, holders)
        except InvalidInput as exc:
            results.append(BatchResult(offset, exc.status, error=exc))
            continue
        if write is not None:
            if target is None:
                writes.append((_NEW_ROWS, {**write, "created_at": stamp, "updated_at": stamp}))
            else:
                writes.append((update_sql("profiles", tuple(write)), {**write, "updated_at": stamp, "id": target.id}))
            _reindex(index, target, row)
        results.append(BatchResult(offset, 201 if target is None else 200, profile=row))
    for sql, run in itertools.groupby(writes, key=operator.itemgetter(0)):
        rows = [params for _sql, params in run]
        if sql is _NEW_ROWS:
            raw.insert_rows("profiles", _ROW_COLUMNS, rows)
        else:
            raw.executemany(sql, rows)
    return results


def _batch_items(
    conn: Connection, now: datetime, brand: str, items: Sequence[Changes | InvalidInput | Any], region: str | None,
    start: int,
) -> list[BatchResult]:
    """The slow path: each item alone under its own savepoint, so the database refusing one fails only it."""
    results: list[BatchResult] = []
    for offset, item in enumerate(items):
        index = start + offset
        try:
            if isinstance(item, InvalidInput):
                raise item
            changes = item if isinstance(item, Changes) else parse(item, region=region)
            with conn.begin_nested():
                row, created = upsert(conn, now, brand=brand, data=changes, region=region)
        except InvalidInput as exc:
            results.append(BatchResult(index, exc.status, error=exc))
        except DataError as exc:
            results.append(BatchResult(index, 422, error=Unprocessable(f"the database refused the item: {exc.orig}")))
        else:
            results.append(BatchResult(index, 201 if created else 200, profile=row))
    return results


def batch(
    conn: Connection, now: datetime, *, brand: str, items: Sequence[Changes | InvalidInput | Any], region: str | None,
    start: int = 0,
) -> list[BatchResult]:
    """Upsert each item in order; one bad item fails only itself. `start` is the first item's index."""
    # Refusals found by our own checks never touch the database, so the usual slice runs
    # under one savepoint. When the database itself refuses a write (a unique index raced
    # by another process; PostgreSQL then aborts the whole transaction), the slice is
    # rolled back and replayed with a savepoint per item, so that item fails alone.
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.begin_nested():
            return _batch_slice(conn, now, brand, items, region, start)
    except (dbapi.IntegrityError, dbapi.DataError, DataError, IntegrityError):
        log.info("the database refused a write of a batch slice of %d items; replayed item by item", len(items),
                 exc_info=True)
        return _batch_items(conn, now, brand, items, region, start)


__all__ = [
    "BatchResult",
    "Changes",
    "ProfileRow",
    "batch",
    "delete",
    "get",
    "get_by_email",
    "get_by_phone",
    "list_page",
    "normalize_email",
    "normalize_timezone",
    "parse",
    "parse_items",
    "patch",
    "phone_of",
    "require_identifier",
    "upsert",
]
