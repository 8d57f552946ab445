"""The send decided as late as possible, under the phone's lock, and the sender's rate slot settled.

`dispatch` (one row) and `dispatch_many` (a claimed batch in one job) mark a text
`dispatching` unless a stop got there first, then take its sender's slot (app.ratelimit):
a slot a moment away is waited for in place, a later one puts the row back to pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from app.db import utcnow
from app.outbox.queue import CANCELLED_BY_OPT_OUT, CANCELLED_REASON, STILL_ALLOWED, Claimed
from app.ratelimit import take
from app.sql import Raw, in_list


@dataclass(frozen=True)
class SendRate:
    """The rate limit of the sender a row goes out from: `sender` may send `rate` texts a second."""

    sender: str
    rate: float
    burst: float = 1.0


# A stop confirmation may borrow one slot ahead of its sender's rate (burst + 1): it goes before
# the texts waiting for that sender's next slot, which then wait that much longer.
# A sender's next slot this close is waited for by the send itself, still claimed; a later one
# puts the row back to pending, due then, so a slow sender never holds the sender's slots.
RATE_WAIT_IN_PLACE = 0.05


def dispatch(conn: Connection, now: datetime, *, row_id: int, worker: str, limit: SendRate | None = None) -> float | None:
    """Decide, under the phone's lock, that a claimed text goes out now: 0.0 to send, None if it must not,
    or the seconds its sender must wait for a slot.

    It must not when a stop cancelled it, or when the phone opted out of its program (of any
    of the brand's, for a brand-level text) after it was queued: the latter covers a row
    whose sender died mid-send and that a STOP could not cancel then. Stop replies always go.
    A row no longer claimed by `worker` (cancelled, or taken over after a lost lease) is left
    alone. Run with the phone locked (app.db.lock_phones), like every STOP is, and with the
    sender's lock when `limit` is given: its slot is taken here (app.ratelimit), only for a
    text that may go. The limit counts real seconds (the wall clock every process shares),
    whatever clock `now` comes from. A row that must wait stays claimed when its slot is
    RATE_WAIT_IN_PLACE away or less (a STOP meanwhile cancels it as any queued text), else
    goes back to pending, due when the slot is; either way it keeps its attempts.
    """
    raw = Raw(conn)
    params = {"id": row_id, "worker": worker, "now": now}
    decided = raw.rowcount(
        "UPDATE outbox SET status = 'dispatching', dispatched_at = :now, updated_at = :now"
        f" WHERE id = :id AND claimed_by = :worker AND status IN ('sending', 'dispatching') AND {STILL_ALLOWED}",
        params)
    if not decided:
        raw.execute(
            f"UPDATE outbox SET status = 'cancelled', error_reason = {CANCELLED_REASON}, lease_until = NULL,"
            " updated_at = :now WHERE id = :id AND claimed_by = :worker AND status IN ('sending', 'dispatching')",
            {**params, "reason": CANCELLED_BY_OPT_OUT})
        return None
    if limit is None:
        return 0.0
    return _settle_wait(raw, now, row_id, take(conn, utcnow(), sender=limit.sender, rate=limit.rate,
                                               burst=limit.burst))


def dispatch_many(conn: Connection, now: datetime, *, rows: Sequence[Claimed], worker: str,
                  limits: Mapping[int, SendRate]) -> dict[int, float | None]:
    """`dispatch` for a claimed batch in one job: row id -> 0.0 (send), None (must not) or seconds to wait.

    The same rule, set-based: one UPDATE decides every row still allowed, one cancels the rest,
    then each decided row takes its sender's slot (`limits`, by row id) in claim order. Run
    with every row's phone and sender locked.
    """
    raw = Raw(conn)
    ids = [row.id for row in rows]
    params: dict[str, Any] = {"worker": worker, "now": now}
    decided = {r["id"] for r in raw.rows(
        "UPDATE outbox SET status = 'dispatching', dispatched_at = :now, updated_at = :now"
        f" WHERE id IN {in_list('i', ids, params)} AND claimed_by = :worker AND status IN ('sending', 'dispatching')"
        f" AND {STILL_ALLOWED} RETURNING id", params)}
    refused = [row_id for row_id in ids if row_id not in decided]
    if refused:
        cancel: dict[str, Any] = {"worker": worker, "now": now, "reason": CANCELLED_BY_OPT_OUT}
        raw.execute(
            f"UPDATE outbox SET status = 'cancelled', error_reason = {CANCELLED_REASON}, lease_until = NULL,"
            f" updated_at = :now WHERE id IN {in_list('i', refused, cancel)} AND claimed_by = :worker"
            " AND status IN ('sending', 'dispatching')", cancel)
    outcome: dict[int, float | None] = dict.fromkeys(refused)
    wall = utcnow()
    for row in rows:
        if row.id not in decided:
            continue
        limit = limits.get(row.id)
        wait = take(conn, wall, sender=limit.sender, rate=limit.rate, burst=limit.burst) if limit is not None else 0.0
        outcome[row.id] = _settle_wait(raw, now, row.id, wait)
    return outcome


def _settle_wait(raw: Raw, now: datetime, row_id: int, wait: float) -> float:
    """Put a decided row that must wait for its sender back: still claimed for a near slot, else pending."""
    if wait > RATE_WAIT_IN_PLACE:
        raw.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = :due, attempts = attempts - 1,"
            " dispatched_at = NULL, lease_until = NULL, claimed_by = NULL, updated_at = :now WHERE id = :id",
            {"id": row_id, "now": now, "due": now + timedelta(seconds=wait)})
    elif wait > 0:
        raw.execute("UPDATE outbox SET status = 'sending', dispatched_at = NULL WHERE id = :id", {"id": row_id})
    return wait
