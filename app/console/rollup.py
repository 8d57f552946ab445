"""The ledger counted per brand, program, UTC hour, source and keyword, kept up incrementally.

The console's analytics read `consent_rollup` (a few rows an hour per program) instead of the
ledger (millions of rows), so a 90-day chart costs the same at 10,000 or 10,000,000 events.
`catch_up` counts the consent events after `rollup_state.last_id`; `keep_up` runs it in every
`serve` process every few seconds (they take turns on the state row: one counts, the others
find nothing new).

Ids are handed out when a row is inserted, not when its transaction commits, so a lower id
can become visible after a higher one. An id range is therefore counted only once it has been
seen for `SETTLE` (far longer than any ledger transaction lasts): `catch_up` notes the highest
id it sees with the time, and later counts up to that id. What is not counted yet (the last
seconds) the analytics read from the ledger directly (`tail`), so the figures are exact and
current.

Hours are UTC; a brand's day in its own time zone is made of whole UTC hours, so a zone with a
half-hour offset (India, Newfoundland) has each hour's events counted in the day its UTC hour
starts in (at most 30 minutes off at midnight).

A year of hours is 8,760 rows a program, so each time zone of `rollup_zones` also has its days
counted (`consent_rollup_days`, `consent_rollup_day_series`; a day is the UTC hours that start
in it there, exactly as the hours are read into days). Every serve process asks for "UTC" and
its brands' zones (`keep_up`); a zone asked for the first time is filled from the hourly rows
(`track`), then kept up with them in the same transaction, so both always cover the same ids.
A year by week in a kept zone reads 365 rows a program; any other zone reads the hours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app import status_counts
from app.models import consent_events, rollup_state, rollup_zones

log = logging.getLogger("optline.console")

NAME = "consent"
SETTLE = timedelta(seconds=30)
SPAN = 200_000  # ids counted in one transaction
INTERVAL = 5.0  # seconds between two catch-ups in a serve process
COUNTS = ("joins", "confirmations", "opt_outs", "subscribed_in", "subscribed_out")
_ACTIVE = frozenset({"pendingDOI", "subscribed"})
_ZERO = (0, 0, 0, 0, 0)

Key = tuple[str, str, datetime, str, str]  # brand, program, hour, source, keyword


def counts(from_status: str, to_status: str) -> tuple[int, int, int, int, int]:
    """What one consent event adds to each count (joins, confirmations, opt-outs, subscribed in, out)."""
    if from_status == to_status:
        return _ZERO
    return (int(to_status in _ACTIVE and from_status not in _ACTIVE),
            int(from_status == "pendingDOI" and to_status == "subscribed"),
            int(to_status == "unsubscribed" and from_status in _ACTIVE),
            int(to_status == "subscribed"),
            int(from_status == "subscribed"))


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a moment falls in."""
    return moment.replace(minute=0, second=0, microsecond=0)


def add_up(rows: Iterable[Any]) -> dict[Key, list[int]]:
    """Consent event rows (brand, program, source, keyword, from_status, to_status, created_at) summed by key."""
    totals: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in rows:
        add = counts(r.from_status, r.to_status)
        if add == _ZERO:
            continue
        total = totals[(r.brand, r.program, hour_of(r.created_at), r.source, (r.keyword or "")[:64])]
        for i, value in enumerate(add):
            total[i] += value
    return totals


_COLUMNS = (consent_events.c.id, consent_events.c.brand, consent_events.c.program, consent_events.c.source,
            consent_events.c.keyword, consent_events.c.from_status, consent_events.c.to_status,
            consent_events.c.created_at)
def _state(conn: Connection) -> Any:
    conn.execute(sa.text("INSERT INTO rollup_state (name, last_id, seen_id) VALUES (:name, 0, 0)"
                         " ON CONFLICT (name) DO NOTHING"), {"name": NAME})
    return conn.execute(sa.select(rollup_state).where(rollup_state.c.name == NAME).with_for_update()).one()


def _hour(conn: Connection) -> str:
    # The UTC hour of created_at, stored as the column stores times: naive UTC text on SQLite.
    if conn.dialect.name == "sqlite":
        return "substr(created_at, 1, 13) || ':00:00.000000'"
    return "date_trunc('hour', created_at, 'UTC')"  # in UTC whatever the session's time zone


_ACTIVE_SQL = "('pendingDOI', 'subscribed')"


_SUMS = (
    f" sum(CASE WHEN to_status IN {_ACTIVE_SQL} AND from_status NOT IN {_ACTIVE_SQL} THEN 1 ELSE 0 END),"
    " sum(CASE WHEN from_status = 'pendingDOI' AND to_status = 'subscribed' THEN 1 ELSE 0 END),"
    f" sum(CASE WHEN to_status = 'unsubscribed' AND from_status IN {_ACTIVE_SQL} THEN 1 ELSE 0 END),"
    " sum(CASE WHEN to_status = 'subscribed' THEN 1 ELSE 0 END),"
    " sum(CASE WHEN from_status = 'subscribed' THEN 1 ELSE 0 END)"
)
_ADD = (
    " joins = {t}.joins + excluded.joins, confirmations = {t}.confirmations + excluded.confirmations,"
    " opt_outs = {t}.opt_outs + excluded.opt_outs, subscribed_in = {t}.subscribed_in + excluded.subscribed_in,"
    " subscribed_out = {t}.subscribed_out + excluded.subscribed_out"
)
_RANGE = " FROM consent_events WHERE id > :after AND id <= :upto AND from_status <> to_status"


def _count_sql(conn: Connection) -> list[str]:
    """The two upserts that add an id range: by source and keyword, and the hourly series."""
    hour, keyword = _hour(conn), "substr(coalesce(keyword, ''), 1, 64)"
    return [
        "INSERT INTO consent_rollup (brand, program, hour, source, keyword, joins, confirmations, opt_outs,"
        f" subscribed_in, subscribed_out) SELECT brand, program, {hour}, source, {keyword},{_SUMS}{_RANGE}"
        f" GROUP BY brand, program, {hour}, source, {keyword}"
        " ON CONFLICT (brand, program, hour, source, keyword) DO UPDATE SET" + _ADD.format(t="consent_rollup"),
        "INSERT INTO consent_rollup_series (brand, program, hour, joins, confirmations, opt_outs, subscribed_in,"
        f" subscribed_out) SELECT brand, program, {hour},{_SUMS}{_RANGE} GROUP BY brand, program, {hour}"
        " ON CONFLICT (brand, program, hour) DO UPDATE SET" + _ADD.format(t="consent_rollup_series"),
    ]


@functools.lru_cache(maxsize=65536)
def _zone_day(stamp: str, zone: str) -> str:
    """SQLite's optline_zone_day(time, zone): the day, in `zone`, of the UTC hour a stored time falls in."""
    hour = datetime(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]), int(stamp[11:13]), tzinfo=UTC)
    return hour.astimezone(zoneinfo.ZoneInfo(zone)).date().isoformat()


def _day(conn: Connection, column: str) -> str:
    """SQL for the day in time zone :zone of the UTC hour `column` falls in (stored as the Date columns store days)."""
    if conn.dialect.name == "sqlite":
        # SQLite knows no time zones: Python's, through a function of this connection.
        conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
            "optline_zone_day", 2, lambda t, z: None if t is None else _zone_day(t[:13], z), deterministic=True)
        return f"optline_zone_day({column}, :zone)"
    return f"(date_trunc('hour', {column}, 'UTC') AT TIME ZONE CAST(:zone AS text))::date"


def _day_sql(conn: Connection, *, events: bool) -> list[str]:
    """The two upserts that add to the days of zone :zone: the consent events of an id range (`events`), or
    every hourly rollup row (a zone's first fill)."""
    if events:
        day, keyword, sums = _day(conn, "created_at"), "substr(coalesce(keyword, ''), 1, 64)", _SUMS
        split_from = series_from = _RANGE
    else:
        day, keyword, sums = _day(conn, "hour"), "keyword", " " + ", ".join(f"sum({c})" for c in COUNTS)
        split_from, series_from = " FROM consent_rollup WHERE true", " FROM consent_rollup_series WHERE true"
    # Grouped by position: the day's expression holds a parameter, which PostgreSQL would not
    # match between the select list and a GROUP BY spelling it again. (:zone is cast alike
    # everywhere: psycopg sends it once, and it must have one type.)
    return [
        "INSERT INTO consent_rollup_days (brand, zone, program, day, source, keyword, joins, confirmations,"
        f" opt_outs, subscribed_in, subscribed_out) SELECT brand, CAST(:zone AS text), program, {day}, source, {keyword},{sums}"
        f"{split_from} GROUP BY 1, 3, 4, 5, 6"
        " ON CONFLICT (brand, zone, program, day, source, keyword) DO UPDATE SET"
        + _ADD.format(t="consent_rollup_days"),
        "INSERT INTO consent_rollup_day_series (brand, zone, program, day, joins, confirmations, opt_outs,"
        f" subscribed_in, subscribed_out) SELECT brand, CAST(:zone AS text), program, {day},{sums}{series_from} GROUP BY 1, 3, 4"
        " ON CONFLICT (brand, zone, program, day) DO UPDATE SET" + _ADD.format(t="consent_rollup_day_series"),
    ]


_REFUSED: set[str] = set()  # zones this PostgreSQL server does not know (warned about once)


def kept_zones(conn: Connection) -> set[str]:
    """The time zones whose days are counted."""
    return set(conn.execute(sa.select(rollup_zones.c.zone)).scalars())


def track(conn: Connection, now: datetime, zones: Iterable[str]) -> list[str]:
    """Start counting the days of each of `zones` not counted yet, from the hourly rows (the caller holds
    the state row's lock, so they cover exactly the ids counted); the zones added."""
    wanted = set(zones) - kept_zones(conn) - _REFUSED
    added = []
    for zone in sorted(wanted):
        if conn.dialect.name == "postgresql" and conn.execute(
                sa.text("SELECT count(*) FROM pg_timezone_names WHERE name = :zone"), {"zone": zone}).scalar() == 0:
            log.warning("consent rollup: PostgreSQL does not know the time zone %s; its days are read from hours",
                        zone)
            _REFUSED.add(zone)
            continue
        for sql in _day_sql(conn, events=False):
            conn.execute(sa.text(sql), {"zone": zone})
        conn.execute(rollup_zones.insert().values(zone=zone, added_at=now))
        added.append(zone)
    return added


def catch_up(conn: Connection, now: datetime, *, span: int = SPAN, zones: Iterable[str] = ()) -> int:
    """Count the settled consent events of the next `span` ids into consent_rollup (and the days of every
    kept zone, starting with `zones` if they are not yet), in the database; how many ids it moved on
    (0: nothing settled to count). A writer job."""
    state = _state(conn)  # locked: one process counts at a time
    track(conn, now, zones)
    last, seen_id, seen_at = int(state.last_id), int(state.seen_id), state.seen_at
    target = seen_id if seen_at is not None and seen_at <= now - SETTLE else last
    upto = min(target, last + span)
    if upto > last:
        # One INSERT … SELECT … GROUP BY: the events never leave the database. (SQLite needs the
        # WHERE to tell its upsert from a join; it is there.)
        for sql in _count_sql(conn):
            conn.execute(sa.text(sql), {"after": last, "upto": upto})
        for zone in sorted(kept_zones(conn)):
            for sql in _day_sql(conn, events=True):
                conn.execute(sa.text(sql), {"after": last, "upto": upto, "zone": zone})
    values: dict[str, Any] = {"last_id": upto}
    if upto >= seen_id:
        # Everything seen is counted: note the newest id now, to count once it has settled.
        newest = conn.execute(sa.select(sa.func.max(consent_events.c.id))).scalar()
        values.update(seen_id=max(int(newest or 0), upto), seen_at=now)
    conn.execute(rollup_state.update().where(rollup_state.c.name == NAME).values(**values))
    return upto - last


def counted_up_to(conn: Connection) -> int:
    """The id up to which the ledger is in consent_rollup."""
    return int(conn.execute(sa.select(rollup_state.c.last_id).where(rollup_state.c.name == NAME)).scalar() or 0)


TAIL_LIMIT = 50_000


def tail(conn: Connection, *, brand: str, after_id: int, since: datetime) -> tuple[dict[Key, list[int]], bool]:
    """The brand's consent events not counted yet (id > after_id, from `since`), summed by key; True when
    there were more than TAIL_LIMIT (the counting is behind, the figures incomplete)."""
    rows = conn.execute(sa.select(*_COLUMNS).where(consent_events.c.brand == brand, consent_events.c.id > after_id,
                                                   consent_events.c.created_at >= since)
                        .order_by(consent_events.c.id).limit(TAIL_LIMIT + 1)).all()
    return add_up(rows[:TAIL_LIMIT]), len(rows) > TAIL_LIMIT


def zones_of(rules: Any) -> set[str]:
    """The zones whose days a process with these rules keeps: UTC and each brand's."""
    return {"UTC", *(brand.timezone for brand in rules.brands.values())}


async def keep_up(state: Any) -> None:
    """Count new consent events every INTERVAL seconds, for as long as the process runs; fold the status counts
    (app.status_counts) after each round."""
    while True:
        try:
            zones = zones_of(state.rules)  # read each round: keywords.yaml may be reloaded
            while await state.writer.run(lambda c, now: catch_up(c, now, zones=zones)) == SPAN:
                await asyncio.sleep(0)  # a backlog: the next batch at once, letting the webhooks in between
            await state.writer.run(lambda c, _now: status_counts.compact(c))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a database hiccup must not end the loop; the next round retries
            log.warning("consent rollup: catching up failed; retrying", exc_info=True)
        await asyncio.sleep(INTERVAL)
