"""Holding texts the phone did not just ask for: quiet hours and daily caps, applied when a text is queued.

An API-triggered DOI prompt, a reminder, an expiry notice: queued by something other
than the phone's own text, so it waits for the recipient's sending window (app.rules.quiet_hours)
and for room under the program's caps. Replies to the phone's own text never come here:
the STOP confirmation, HELP, the prompt after JOIN and the welcome after YES go at once.

Caps count a phone's texts in one program over a rolling 24 h: what optline queued or sent
(cancelled and failed texts aside) and what the brand reported (POST /v1/sends). A program's
own cap is `max_per_day`; a `marketing: true` program also gets its state's cap (FL, OK, MD: 3).

`decide` is the one rule, used here and by the send check (app.sendcheck).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from app.events import EVENT_COLUMNS, event_row, iso
from app.keywords import Brand, Program, Rules
from app.outbox.queue import enqueue_sms
from app.rules.quiet_hours import marketing_cap, next_allowed, recipient_zones
from app.sql import Raw

# Brand event: a text was held by a rule (its time and reason), so the CRM knows it is not lost.
MESSAGE_HELD = "message.held"
QUIET_HOURS = "quiet_hours"
DAILY_CAP = "daily_cap"
CAP_WINDOW = timedelta(hours=24)
# Purposes that may be held when nothing the phone texted asked for them: the API's DOI prompt,
# reminders and expiry notices. The welcome after an API opt-in with proof is not held: it
# confirms consent the person gave that moment, and carries the opt-out instructions.
HOLDABLE = frozenset({"doi_prompt", "doi_expired", "reminder"})


@dataclass(frozen=True)
class Hold:
    """A text held: until when, and the rule that held it (the last one that moved it)."""

    until: datetime
    reason: str
    reasons: tuple[str, ...] = ()

    def as_tuple(self) -> tuple[datetime, str]:
        """(until, reason), as app.outbox.queue.enqueue_sms takes it."""
        return self.until, self.reason


def program_cap(program: Program | None, phone: str, at: datetime) -> int | None:
    """The most texts `phone` may get from `program` in 24 h: its max_per_day and, if it markets, its state's cap."""
    if program is None:
        return None
    caps = [program.max_per_day] if program.max_per_day is not None else []
    if program.marketing:
        state = marketing_cap(phone, at.date())
        if state is not None:
            caps.append(state[0])
    return min(caps) if caps else None


def _cap_opening(at: datetime, cap: int, times: Sequence[datetime]) -> datetime | None:
    """None when a text at `at` stays within `cap` per 24 h; else when enough earlier texts fall out of the window."""
    recent = sorted(t for t in times if at - CAP_WINDOW < t <= at)
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + CAP_WINDOW


def decide(at: datetime, *, phone: str, zones: Sequence[ZoneInfo], brand_window: tuple[time, time] | None,
           cap: int | None, times: Sequence[datetime]) -> Hold | None:
    """None when a text may go at `at`; else the earliest time both the window and the cap allow, and why."""
    t = at
    reasons: list[str] = []
    for _ in range(16):
        moved = False
        if cap is not None and (opening := _cap_opening(t, cap, times)) is not None:
            t, moved = opening, True
            reasons.append(DAILY_CAP)
        if (opening := next_allowed(t, phone=phone, zones=zones, brand_window=brand_window)) is not None:
            t, moved = opening, True
            reasons.append(QUIET_HOURS)
        if not moved:
            break
    if t == at:
        return None
    return Hold(until=t, reason=reasons[0], reasons=tuple(dict.fromkeys(reasons)))


def profile_zone(conn: Connection, *, brand: str, phone: str) -> str | None:
    """The IANA time zone of the brand's live profile with this phone, if it has one."""
    return Raw(conn).scalar(  # type: ignore[no-any-return]
        "SELECT timezone FROM profiles WHERE brand = :brand AND phone = :phone AND deleted_at IS NULL",
        {"brand": brand, "phone": phone})


def per_phone(raw: Raw, brand: str, phones: Sequence[str], columns: str, table: str, where: str = "",
               extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of `table` for these phones of the brand, one index probe a phone (brand, phone lead each index)."""
    sql, params = _per_phone_sql(raw, brand, phones, columns, table, where, extra)
    return raw.rows(sql, params)


def per_phone_tuples(raw: Raw, brand: str, phones: Sequence[str], columns: str, table: str,
                     where: str = "") -> list[tuple[Any, ...]]:
    """As `per_phone`, as plain tuples with nothing converted (times are text on SQLite): the send check's hot path."""
    sql, params = _per_phone_sql(raw, brand, phones, columns, table, where, None)
    return raw.execute(sql, params).fetchall()  # type: ignore[no-any-return]


def _per_phone_sql(raw: Raw, brand: str, phones: Sequence[str], columns: str, table: str, where: str,
                   extra: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"brand": brand, **(extra or {})}
    each = raw.each("phones", phones, params)
    cond = f" AND {where}" if where else ""
    if raw.pg:
        # A lateral subquery that cannot be flattened: PostgreSQL without statistics (a new
        # database) would otherwise hash-join the whole table (see app.sql.Raw.each).
        sql = (f"SELECT t.* FROM {each} CROSS JOIN LATERAL (SELECT {columns} FROM {table}"
               f" WHERE brand = :brand AND phone = phones.value{cond} OFFSET 0) t")
    else:
        sql = f"SELECT {columns} FROM {table} WHERE brand = :brand AND phone IN (SELECT value FROM {each}){cond}"
    return sql, params


# Outbox texts that went or will go (cancelled and failed ones do not count toward a cap).
_COUNTED = ("'pending', 'sending', 'dispatching', 'queued', 'sending_provider', 'sent', 'delivered', 'undelivered'")


def texts_for(raw: Raw, brand: str, pairs: set[tuple[str, str]], since: datetime) -> dict[tuple[str, str], list[datetime]]:
    """When each (phone, program) got texts after `since`: optline's and those the brand reported."""
    if not pairs:
        return {}
    phones = sorted({phone for phone, _program in pairs})
    out: dict[tuple[str, str], list[datetime]] = {}
    found = per_phone(raw, brand, phones, "phone, program, sent_at, next_attempt_at", "outbox",
                       f"status IN ({_COUNTED}) AND channel = 'sms' AND COALESCE(sent_at, next_attempt_at) > :since",
                       {"since": since})
    found += per_phone(raw, brand, phones, "phone, program, sent_at", "brand_sends", "sent_at > :since",
                        {"since": since})
    for row in found:
        key = (row["phone"], row["program"])
        if key in pairs:
            out.setdefault(key, []).append(row["sent_at"] or row["next_attempt_at"])
    return out


def hold_for(conn: Connection, now: datetime, *, rules: Rules, brand: str, program: str | None, phone: str,
             purpose: str) -> Hold | None:
    """Whether a text nobody just asked for must wait (quiet hours, caps), and until when; None: send now."""
    if purpose not in HOLDABLE:
        return None
    b = rules.brands.get(brand)
    if b is None:
        return None
    settings = b.programs.get(program) if program is not None else None
    zones = recipient_zones(phone, profile_zone(conn, brand=brand, phone=phone))
    cap = program_cap(settings, phone, now)
    times: list[datetime] = []
    if cap is not None and program is not None:
        # Texts up to a day ahead count too (held ones): the loop in `decide` may move past now.
        times = texts_for(Raw(conn), brand, {(phone, program)}, now - CAP_WINDOW).get((phone, program), [])
    return decide(now, phone=phone, zones=zones, brand_window=b.quiet_hours, cap=cap, times=times)


def hold_retry(conn: Connection, at: datetime, *, rules: Rules, brand: str | None, program: str | None,
               phone: str | None, purpose: str) -> Hold | None:
    """Whether a retry at `at` of a text nobody just asked for must wait for the recipient's window again.

    Only the window: the text was within the caps when it was queued, and it counts toward
    them already (a retry is the same text, not one more).
    """
    if purpose not in HOLDABLE or brand is None or phone is None:
        return None
    b = rules.brands.get(brand)
    if b is None:
        return None
    zones = recipient_zones(phone, profile_zone(conn, brand=brand, phone=phone))
    return decide(at, phone=phone, zones=zones, brand_window=b.quiet_hours, cap=None, times=())


def enqueue_unasked(conn: Connection, now: datetime, *, hold: Hold | None, brand: Brand, program: str | None,
                    phone: str, body: str, purpose: str, from_number: str | None, service_id: str | None) -> int:
    """Queue a text nothing the phone texted asked for, held as `hold_for` decided (and the brand told); its outbox id."""
    row_id = enqueue_sms(conn, now=now, brand=brand.key, program=program, phone=phone, body=body, purpose=purpose,
                         from_number=from_number, service_id=service_id, hold=hold.as_tuple() if hold else None)
    if hold is not None:
        event = event_row(now, brand=brand, type=MESSAGE_HELD, data={
            "brand": brand.key, "program": program, "phoneNumber": phone, "purpose": purpose,
            "heldUntil": iso(hold.until), "reason": hold.reason, "reasons": list(hold.reasons),
            "messageId": f"out_{row_id}", "occurredAt": iso(now)})
        if event is not None:
            Raw(conn).insert_rows("outbox", EVENT_COLUMNS, [event])
    return row_id


def held_counts(conn: Connection, now: datetime) -> list[tuple[str, str, int]]:
    """(brand, reason, rows) of the texts held now, for the metrics."""
    rows = Raw(conn).execute(
        "SELECT brand, held_reason, count(*) FROM outbox WHERE held_until > :now AND status = 'pending'"
        " GROUP BY brand, held_reason", {"now": now}).fetchall()
    return [(row[0], row[1], int(row[2])) for row in rows]


def list_held(conn: Connection, now: datetime, *, brand: str, limit: int = 100) -> list[dict[str, Any]]:
    """The brand's texts held now, soonest first (for the console's operations page): id, phone, program, purpose,
    held_until, held_reason, created_at."""
    return Raw(conn).rows(
        "SELECT id, phone, program, purpose, held_until, held_reason, created_at FROM outbox"
        " WHERE brand = :brand AND held_until > :now AND status = 'pending' ORDER BY held_until, id LIMIT :limit",
        {"brand": brand, "now": now, "limit": limit})
