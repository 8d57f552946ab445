"""/console/operations: the brand's outbox backlog, held texts, failures by provider error code, and
how long STOPs take to suppress and to answer (p50/p99, last hour and last day).

Every read walks an index: the queue states through (status, next_attempt_at); the STOPs of a
window through consent events by (brand, created_at), newest first and at most `SAMPLE` of them,
then their texts and replies by phone.
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
from app.holds import list_held
from app.models import consent_events, inbound_messages, outbox

QUEUE_STATES = ("pending", "dispatching", "sending")  # a held text is pending with held_until (app.holds)
FAILED_STATES = ("failed", "undelivered")
SAMPLE = 2000  # STOPs per window the latencies are computed from (the newest)
HELD_LIMIT = 50
_CHUNK = 500


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


def failures(conn: Connection, *, brand: str, since: datetime) -> list[tuple[str, int | None, str | None, int]]:
    """(status, provider error code, a reason, how many) of the brand's failed texts created since `since`."""
    rows = conn.execute(
        sa.select(outbox.c.status, outbox.c.error_code, sa.func.max(outbox.c.error_reason), sa.func.count())
        .where(outbox.c.status.in_(FAILED_STATES), outbox.c.brand == brand, outbox.c.created_at >= since)
        .group_by(outbox.c.status, outbox.c.error_code).order_by(sa.func.count().desc()))
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def stop_latencies(conn: Connection, *, brand: str, since: datetime) -> tuple[list[float], list[float]]:
    """Seconds from each STOP's arrival to its suppression (the opt-out recorded) and to its stop reply sent."""
    # Newest first on (brand, created_at): a STOP that ended several programs has several events,
    # the first of them is when it was applied.
    events = conn.execute(
        sa.select(consent_events.c.phone, consent_events.c.provider_message_id, consent_events.c.created_at)
        .where(consent_events.c.brand == brand, consent_events.c.created_at >= since,
               consent_events.c.event == "stop", consent_events.c.provider_message_id.is_not(None))
        .order_by(consent_events.c.created_at.desc()).limit(SAMPLE * 4)).all()
    applied: dict[tuple[str, str], datetime] = {}
    for phone, message_id, at in reversed(events):  # oldest first: the first event of each text wins
        if len(applied) >= SAMPLE and (phone, message_id) not in applied:
            continue
        applied.setdefault((phone, message_id), _aware(at))  # type: ignore[arg-type]
    arrived: dict[int, tuple[datetime, datetime]] = {}  # inbound id -> (received, suppressed)
    for chunk in _chunks(list(applied)):
        rows = conn.execute(sa.select(inbound_messages.c.id, inbound_messages.c.from_phone,
                                      inbound_messages.c.message_id, inbound_messages.c.received_at)
                            .where(inbound_messages.c.from_phone.in_({p for p, _m in chunk}),
                                   inbound_messages.c.message_id.in_({m for _p, m in chunk})))
        for r in rows:
            done = applied.get((r.from_phone, r.message_id))
            if done is not None:
                arrived[r.id] = (_aware(r.received_at), done)  # type: ignore[assignment]
    to_suppress = [max((done - got).total_seconds(), 0.0) for got, done in arrived.values()]
    to_reply: list[float] = []
    ids = list(arrived)
    phones = {p for p, _m in applied}
    for chunk in _chunks(ids):
        rows = conn.execute(sa.select(outbox.c.inbound_id, outbox.c.sent_at)
                            .where(outbox.c.brand == brand, outbox.c.phone.in_(phones), outbox.c.purpose == "stop",
                                   outbox.c.inbound_id.in_(chunk), outbox.c.sent_at.is_not(None)))
        for r in rows:
            got = arrived[r.inbound_id][0]
            to_reply.append(max((_aware(r.sent_at) - got).total_seconds(), 0.0))  # type: ignore[operator]
    return to_suppress, to_reply


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
        suppress, reply = [], []
        for window, span in (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1))):
            s, r = stop_latencies(conn, brand=brand, since=now - span)
            suppress.append(_latency(window, s))
            reply.append(_latency(window, r))
        out.update(suppress=suppress, reply=reply)
        return out

    facts = await ctx.state.read(read)
    return ctx.render("operations.html", now=now, sample=SAMPLE, **facts)
