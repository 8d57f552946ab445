"""/console/operations: the brand's outbox backlog, held texts, failures by provider error code, and
how long STOPs take to suppress and to answer (p50/p99, last hour and last day).

Every read walks an index: the queue states through (status, next_attempt_at); failures through
a partial index of the failed texts by (brand, created_at); the day's STOPs through consent
events by (brand, event, created_at), newest first and at most `SAMPLE` of them (the hour's are
among them), then their texts and replies by phone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.responses import Response

from app.console.web import Ctx, page
from app.holds import list_held, per_phone
from app.models import outbox
from app.sql import Raw

QUEUE_STATES = ("pending", "dispatching", "sending")  # a held text is pending with held_until (app.holds)
SAMPLE = 2000  # STOPs per window the latencies are computed from (the newest)
HELD_LIMIT = 50


@dataclass(frozen=True)
class Latency:
    """Percentiles of one delay over one window, in seconds (None when nothing was measured)."""

    window: str
    count: int
    p50: float | None
    p99: float | None


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def backlog(conn: Connection, *, brand: str) -> list[dict[str, Any]]:
    """Per queue state: how many rows, and the oldest due time."""
    rows = conn.execute(
        sa.select(outbox.c.status, sa.func.count(), sa.func.min(outbox.c.next_attempt_at),
                  sa.func.min(outbox.c.created_at))
        .where(outbox.c.status.in_(QUEUE_STATES), outbox.c.brand == brand).group_by(outbox.c.status))
    found = {r[0]: (int(r[1]), _aware(r[2]), _aware(r[3])) for r in rows}
    return [{"status": s, "count": found.get(s, (0, None, None))[0], "oldest_due": found.get(s, (0, None, None))[1],
             "oldest_created": found.get(s, (0, None, None))[2]} for s in QUEUE_STATES]


# Written out, not bound: the partial index ix_outbox_failed_brand_created_at serves a query only
# when its condition appears in the query's text as it does in the index's.
_FAILED_SQL = "status IN ('failed', 'undelivered')"


def failures(conn: Connection, *, brand: str, since: datetime) -> list[tuple[str, int | None, str | None, int]]:
    """(status, provider error code, a reason, how many) of the brand's failed texts created since `since`."""
    raw = Raw(conn)
    # SQLite's planner, knowing only that most texts are of one brand, would rather walk every
    # failed text ever through (status, next_attempt_at): it is told which index.
    table = "outbox" if raw.pg else "outbox INDEXED BY ix_outbox_failed_brand_created_at"
    rows = raw.execute(
        f"SELECT status, error_code, max(error_reason), count(*) FROM {table}"
        f" WHERE {_FAILED_SQL} AND brand = :brand AND created_at >= :since"
        " GROUP BY status, error_code ORDER BY count(*) DESC, status, error_code",
        {"brand": brand, "since": since}).fetchall()
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def _aware_text(value: Any) -> datetime:
    """A time as Raw returns it unconverted (text on SQLite), aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def stop_latencies(conn: Connection, *, brand: str, since: datetime, margin: timedelta = timedelta(days=7)
                   ) -> list[tuple[datetime, float, float | None]]:
    """The newest `SAMPLE` STOPs applied since `since`: (when each was applied, seconds from its arrival to
    its suppression (the opt-out recorded), seconds to its stop reply sent or None), newest first. A STOP
    applied more than `margin` after it arrived (spooled through a longer outage) is not measured."""
    raw = Raw(conn)
    # The STOPs of the window through (brand, event, created_at), newest first. A STOP that ended
    # several programs has several events; the first of them is when it was applied.
    events = raw.execute(
        "SELECT phone, provider_message_id, created_at FROM consent_events WHERE brand = :brand AND event = 'stop'"
        " AND created_at >= :since AND provider_message_id IS NOT NULL ORDER BY created_at DESC LIMIT :limit",
        {"brand": brand, "since": since, "limit": SAMPLE * 4}).fetchall()
    applied: dict[tuple[str, str], datetime] = {}
    for phone, message_id, at in reversed(events):  # oldest first: the first event of each text wins
        applied.setdefault((phone, message_id), _aware_text(at))
    newest = sorted(applied.items(), key=lambda item: item[1], reverse=True)[:SAMPLE]
    if not newest:
        return []
    phones = sorted({phone for (phone, _m), _at in newest})
    # Their texts in and their stop replies: one index probe a phone (from_phone, …) and (brand, phone, …),
    # each phone's rows of the window only, matched here; never a list of thousands of values in the SQL.
    params: dict[str, Any] = {"since": since - margin}
    each = raw.each("phones", phones, params)
    if raw.pg:  # a lateral probe a phone (see app.sql.Raw.each)
        sql = (f"SELECT i.* FROM {each} CROSS JOIN LATERAL (SELECT id, from_phone, message_id, received_at"
               " FROM inbound_messages WHERE from_phone = phones.value AND received_at >= :since OFFSET 0) i")
    else:
        sql = ("SELECT id, from_phone, message_id, received_at FROM inbound_messages"
               f" WHERE from_phone IN (SELECT value FROM {each}) AND received_at >= :since")
    received = {(r[1], r[2]): (r[0], _aware_text(r[3])) for r in raw.execute(sql, params).fetchall()}
    replies = per_phone(raw, brand, phones, "inbound_id, sent_at", "outbox",
                        "purpose = 'stop' AND sent_at IS NOT NULL AND created_at >= :since", {"since": since - margin})
    sent = {r["inbound_id"]: _aware_text(r["sent_at"]) for r in replies if r["inbound_id"] is not None}
    out: list[tuple[datetime, float, float | None]] = []
    for key, done in newest:
        got = received.get(key)
        if got is None:
            continue  # its text is gone (erased, or older than kept): nothing to measure from
        inbound_id, at = got
        reply = sent.get(inbound_id)
        out.append((done, max((done - at).total_seconds(), 0.0),
                    None if reply is None else max((reply - at).total_seconds(), 0.0)))
    return out


def _latency(window: str, values: list[float]) -> Latency:
    return Latency(window, len(values), percentile(values, 50), percentile(values, 99))


@page("console:operations")
async def operations(ctx: Ctx) -> Response:
    """GET /console/operations: backlog, held texts, failures by code, STOP latencies."""
    brand = ctx.brand.key
    now = ctx.state.clock()

    def read(conn: Connection) -> dict[str, Any]:
        out: dict[str, Any] = {"backlog": backlog(conn, brand=brand), "held": list_held(conn, now, brand=brand, limit=HELD_LIMIT),
                               "failures": failures(conn, brand=brand, since=now - timedelta(days=1))}
        # The day's newest STOPs hold the hour's: if the hour had SAMPLE or more, they are the
        # same SAMPLE; if fewer, all of them. One read serves both windows.
        measured = stop_latencies(conn, brand=brand, since=now - timedelta(days=1))
        suppress, reply = [], []
        for window, span in (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1))):
            inside = [m for m in measured if m[0] >= now - span]
            suppress.append(_latency(window, [m[1] for m in inside]))
            reply.append(_latency(window, [m[2] for m in inside if m[2] is not None]))
        out.update(suppress=suppress, reply=reply)
        return out

    facts = await ctx.state.read(read)
    return ctx.render("operations.html", now=now, sample=SAMPLE, **facts)
