"""The send check: may the brand text these phones in these programs now (or at a planned time)?

`POST /v1/send-check` asks for up to 1,000 (phone, program, at) at once; `check` answers
each with the reasons it may not (app.schemas_rules.ReasonCode) and, when only time stands in
the way, when it may. A handful of queries answer the whole batch, each walking an index
once per phone (subscriptions by (brand, phone); profiles by (brand, phone); texts for caps
by (brand, phone, …)): nothing scans, however many subscriptions the brand has.

`record_sends` stores the texts the brand reports having sent (`POST /v1/sends`): they count
toward caps exactly like optline's own texts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from app.errors import InvalidInput, Unprocessable
from app.holds import (CAP_WINDOW, DAILY_CAP, QUIET_HOURS, Hold, decide, per_phone, per_phone_tuples, program_cap,
                       texts_for)
from app.keywords import Brand
from app.ledger import phone_key, pseudonym
from app.phone import in_countries, to_e164
from app.rules.quiet_hours import number_place, recipient_zones, window_text
from app.sql import Raw
from app.subscriptions import OPT_OUT_EVENTS, Status

# A North American number already in E.164 with a possible shape ([2-9]XX area code): no
# need for libphonenumber, which costs more than the rest of a check.
_NANP = re.compile(r"\+1[2-9]\d{9}")
_OPT_OUT_EVENTS = tuple(sorted(e.value for e in OPT_OUT_EVENTS))


class Planned(NamedTuple):
    """One item to check: a valid E.164 phone, a known program, a time."""

    index: int
    phone: str
    program: str
    at: datetime


def parse_items(brand: Brand, items: Sequence[tuple[str, str, datetime | None]], now: datetime) -> list[Planned]:
    """(phone as given, program, at) checked: phone in E.164, known program; 422 naming the first bad one."""
    out = []
    nanp, programs, region = _NANP.fullmatch, brand.programs, brand.default_region
    for i, (raw, program, at) in enumerate(items):
        if nanp(raw):
            phone = raw
        else:
            try:
                phone = to_e164(raw, region)
            except InvalidInput as exc:
                raise Unprocessable(exc.message, field=f"items.{i}.phoneNumber") from None
        if program not in programs:
            raise Unprocessable(f"unknown program {program!r}", field=f"items.{i}.program")
        out.append(Planned(i, phone, program, at or now))
    return out


def _erased_aliases(raw: Raw, brand: str, phones: Sequence[str], found: set[str]) -> dict[str, str]:
    """The pseudonym of each erased phone with no row under its number: an erased number keeps its consent
    (and its opt-outs) under its pseudonym until it is seen again (app.erasure). Alias -> phone.

    One probe of `erasures` per phone not found, by its keyed hash: a check of phones that are
    simply unknown pays no second look at the subscriptions.
    """
    keys = {phone_key(phone): phone for phone in phones if phone not in found}
    if not keys:
        return {}
    params: dict[str, Any] = {"brand": brand}
    source = raw.each("k", list(keys), params)
    erased = raw.execute(f"SELECT k.value FROM {source} WHERE EXISTS (SELECT 1 FROM erasures e"
                         " WHERE e.phone_key = k.value AND e.brand = :brand)", params).fetchall()
    return {pseudonym(key): keys[key] for key, in erased}


def _subscriptions(raw: Raw, brand: str, phones: list[str]) -> dict[tuple[str, str], tuple[str, Any]]:
    """(status, opted_out_at as stored) of each (phone, program), erased numbers included."""
    columns = "phone, program, status, opted_out_at"
    rows = per_phone_tuples(raw, brand, phones, columns, "subscriptions")
    aliases = _erased_aliases(raw, brand, phones, {row[0] for row in rows})
    if aliases:
        rows = [*rows, *((aliases[alias], *rest) for alias, *rest in
                         per_phone_tuples(raw, brand, sorted(aliases), columns, "subscriptions"))]
    return {(phone, program): (status, opted) for phone, program, status, opted in rows}


def _zones(raw: Raw, brand: str, phones: list[str]) -> dict[str, str]:
    rows = per_phone_tuples(raw, brand, phones, "phone, timezone", "profiles",
                            "deleted_at IS NULL AND timezone IS NOT NULL")
    return dict(rows)  # type: ignore[arg-type]


def _iso(value: Any) -> str | None:
    """A stored time (a datetime, or SQLite's naive UTC text) as RFC 3339."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _opt_outs(raw: Raw, brand: Brand, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, scope) of the latest opt-out of each (phone, program), from the ledger.

    The scope is read from the events one opt-out wrote together (same phone, same time):
    every program of the brand (or an import) is "brand", one program "program", else "sender".
    """
    if not keys:
        return {}
    events = ", ".join(f"'{e}'" for e in _OPT_OUT_EVENTS)
    phones = sorted({phone for phone, _program in keys})
    columns, where = "id, phone, program, source, created_at", f"event IN ({events})"
    rows = per_phone(raw, brand.key, phones, columns, "consent_events", where)
    aliases = _erased_aliases(raw, brand.key, phones, {row["phone"] for row in rows})
    if aliases:
        rows = [*rows, *({**row, "phone": aliases[row["phone"]]} for row in
                         per_phone(raw, brand.key, sorted(aliases), columns, "consent_events", where))]
    latest: dict[tuple[str, str], tuple[str, Any]] = {}
    programs_at: dict[tuple[str, Any], set[str]] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        latest[(row["phone"], row["program"])] = (row["source"], row["created_at"])
        programs_at.setdefault((row["phone"], row["created_at"]), set()).add(row["program"])
    out = {}
    for key in keys:
        if key not in latest:
            continue
        source, created_at = latest[key]
        together = programs_at[(key[0], created_at)]
        if source == "import" or together >= set(brand.programs):
            scope = "brand"
        elif len(together) == 1:
            scope = "program"
        else:
            scope = "sender"
        out[key] = (source, scope)
    return out


# Where a phone is, for the rules: the brand may text its country; its state; its recipient's zones.
_Place = tuple[bool, str | None, tuple[ZoneInfo, ...]]


def _places(brand: Brand, phones: Sequence[str], profile_zones: dict[str, str]) -> dict[str, _Place]:
    """Each phone's place: its country allowed, its state, its recipient's zones (the profile's, else the number's)."""
    allowed = brand.allowed_countries
    us = allowed is not None and "US" in allowed
    out = {}
    for phone in phones:
        state, zones = number_place(phone)
        # A US area code passes a brand that allows the US without asking libphonenumber.
        country = allowed is None or (us and state is not None) or in_countries(phone, allowed)
        profile = profile_zones.get(phone)
        out[phone] = (country, state, recipient_zones(phone, profile) if profile else zones)
    return out


def check(conn: Connection, now: datetime, *, brand: Brand, items: Sequence[Planned]) -> list[dict[str, Any]]:
    """The send check's answer for each item, in order (JSON-ready: camelCase, times as text)."""
    raw = Raw(conn)
    phones = sorted({item.phone for item in items})
    subs = _subscriptions(raw, brand.key, phones)
    places = _places(brand, phones, _zones(raw, brand.key, phones))
    unsub, pending, subscribed = Status.UNSUBSCRIBED.value, Status.PENDING.value, Status.SUBSCRIBED.value
    no_row = (Status.NONE.value, None)
    rows = [subs.get((item.phone, item.program), no_row) for item in items]
    opt_outs = _opt_outs(raw, brand, {(item.phone, item.program) for item, row in zip(items, rows, strict=True)
                                      if row[0] == unsub})
    programs = brand.programs
    capped = {key for key, p in programs.items() if p.max_per_day is not None or p.marketing}
    caps = {(i.phone, i.program): cap for i in items
            if i.program in capped and (cap := program_cap(programs[i.program], i.phone, i.at)) is not None}
    earliest = min((i.at for i in items), default=now)
    texts = texts_for(raw, brand.key, set(caps), earliest - CAP_WINDOW)
    window = brand.quiet_hours
    # Without a cap, the answer on time depends only on where the recipient is and when: most
    # of a batch shares a few zones and one `at`, so each is worked out once, and so is the
    # sending window's text for each state and day.
    holds: dict[tuple[Any, ...], tuple[Hold | None, str | None]] = {}
    windows: dict[tuple[Any, ...], str] = {}
    results = []
    for item, (status, opted_at) in zip(items, rows, strict=True):
        index, phone, program, at = item
        country, state, zones = places[phone]
        forever = True  # a reason no waiting cures
        if not country:
            reasons: list[dict[str, Any]] = [{"code": "country_not_allowed"}]
        elif status == subscribed:
            reasons, forever = [], False
        elif status == unsub:
            source, scope = opt_outs.get((phone, program), (None, None))
            reasons = [{"code": "opted_out", "at": _iso(opted_at), "source": source, "scope": scope}]
        elif status == pending:
            reasons = [{"code": "pending_doi"}]
        else:
            reasons = [{"code": "not_subscribed"}]
        cap = caps.get((phone, program)) if caps else None
        if cap is None:
            key = (zones, state, at)
            found = holds.get(key)
            if found is None:
                hold = decide(at, phone=phone, zones=zones, brand_window=window, cap=None, times=())
                found = holds[key] = (hold, _iso(hold.until) if hold is not None else None)
            hold, until = found
        else:
            hold = decide(at, phone=phone, zones=zones, brand_window=window, cap=cap,
                          times=texts.get((phone, program), ()))
            until = _iso(hold.until) if hold is not None else None
        if hold is not None:
            for code in hold.reasons:
                if code == QUIET_HOURS:
                    day = at.date()
                    text = windows.get((state, day))
                    if text is None:
                        text = windows[(state, day)] = window_text(phone, day, window)
                    detail = f"sending window {text}"
                else:
                    detail = f"at most {cap} texts in 24 h"
                reasons.append({"code": code, "nextAllowedAt": until, "detail": detail})
        results.append({"index": index, "phoneNumber": phone, "program": program, "allowed": not reasons,
                        "reasons": reasons, "nextAllowedAt": None if forever else until})
    return results


def record_sends(conn: Connection, now: datetime, *, brand: Brand, items: Sequence[Planned],
                 external_ids: Sequence[str | None], api_key_id: int | None) -> list[int]:
    """Store texts the brand sent (they count toward caps); the indexes of those to phones opted out of that program."""
    raw = Raw(conn)
    raw.insert_rows("brand_sends", ("brand", "program", "phone", "sent_at", "external_id", "api_key_id", "created_at"),
                    [{"brand": brand.key, "program": i.program, "phone": i.phone, "sent_at": i.at,
                      "external_id": ext, "api_key_id": api_key_id, "created_at": now}
                     for i, ext in zip(items, external_ids, strict=True)])
    subs = _subscriptions(raw, brand.key, sorted({i.phone for i in items}))
    return [i.index for i in items if subs.get((i.phone, i.program), ("",))[0] == Status.UNSUBSCRIBED.value]


__all__ = ["DAILY_CAP", "QUIET_HOURS", "Planned", "check", "parse_items", "record_sends"]
