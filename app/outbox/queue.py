"""The outbox's rows and their SQL: enqueue in the caller's transaction, cancel, claim, redrive.

Claims take due rows by priority (stop replies, then help and welcome, then prompts and
brand events) and lease them; texts to one phone leave in turn. See app/outbox/__init__.py
for a row's lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.models import outbox
from app.providers.twilio import ERROR_UNSUBSCRIBED
from app.sql import Raw, in_list, insert_sql


class OutboxStatus(StrEnum):
    """Where an outbox row is."""

    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # claimed by a sender until lease_until
    DISPATCHING = "dispatching"  # the send was decided (no stop before it); the provider call is in flight
    QUEUED = "queued"  # the provider accepted it
    PROVIDER_SENDING = "sending_provider"  # the provider is handing it to the carrier
    SENT = "sent"  # the carrier accepted it
    DELIVERED = "delivered"  # delivered to the handset
    UNDELIVERED = "undelivered"  # the carrier could not deliver it
    FAILED = "failed"  # permanent failure, retries spent, or provider failure
    CANCELLED = "cancelled"  # a stop landed before it was sent


QUEUED_STATES = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value, OutboxStatus.DISPATCHING.value)

CHANNEL_SMS = "sms"
CHANNEL_EVENT = "event"


CANCELLED_BY_OPT_OUT = "cancelled by opt-out"
CANCELLED_AS_SUPERSEDED = "superseded by a newer state of its subscription"
SMS_COLUMNS = ("channel", "brand", "program", "phone", "body", "purpose", "priority", "from_number", "service_id",
               "status", "error_reason", "attempts", "next_attempt_at", "inbound_id", "created_at", "updated_at",
               "held_until", "held_reason", "deadline_at")

# Claim order: a stop confirmation first (CTIA, and it is the reply the phone is waiting on),
# then answers to what the phone just asked, then prompts and brand events.
PRIORITY_STOP, PRIORITY_ANSWER, PRIORITY_REST = 0, 1, 2
_ANSWERS = frozenset({"help", "welcome", "already_subscribed", "doi_expired"})


def priority_of(purpose: str) -> int:
    """The claim priority of a row with this purpose."""
    if purpose == "stop":
        return PRIORITY_STOP
    return PRIORITY_ANSWER if purpose in _ANSWERS else PRIORITY_REST


@dataclass(frozen=True)
class Deadlines:
    """How long transient failures are retried, by what the row is."""

    stop: timedelta = timedelta(hours=1)  # stop confirmations
    text: timedelta = timedelta(hours=24)  # every other text
    event: timedelta = timedelta(hours=72)  # brand events

    def budget(self, channel: str, purpose: str) -> timedelta:
        """The retry budget of a row, from when it was queued."""
        if channel == CHANNEL_EVENT:
            return self.event
        return self.stop if purpose == "stop" else self.text


def enqueue_sms(
    conn: Connection,
    *,
    now: datetime,
    brand: str,
    program: str | None,
    phone: str,
    body: str,
    purpose: str,
    from_number: str | None,
    service_id: str | None,
    inbound_id: int | None = None,
    hold: tuple[datetime, str] | None = None,
) -> int:
    """Queue one text in the caller's transaction; returns the outbox id.

    `hold` (until, reason), from app.holds: a consent rule holds the text until then. It
    stays pending, due then, and keeps its whole retry budget from then (the default budget:
    the caller does not know the deployment's).
    """
    values = sms_row(now=now, brand=brand, program=program, phone=phone, body=body, purpose=purpose,
                     from_number=from_number, service_id=service_id, inbound_id=inbound_id)
    if hold is not None:
        until, reason = hold
        values.update(next_attempt_at=until, held_until=until, held_reason=reason,
                      deadline_at=until + Deadlines().budget(CHANNEL_SMS, purpose))
    return int(Raw(conn).scalar(insert_sql("outbox", SMS_COLUMNS, "id"), values))


def sms_row(*, now: datetime, brand: str, program: str | None, phone: str, body: str, purpose: str,
            from_number: str | None, service_id: str | None, inbound_id: Any = None) -> dict[str, Any]:
    """The outbox row (columns SMS_COLUMNS) of one text, due now."""
    return {
        "channel": CHANNEL_SMS, "brand": brand, "program": program, "phone": phone, "body": body, "purpose": purpose,
        "priority": priority_of(purpose), "from_number": from_number, "service_id": service_id,
        "status": OutboxStatus.PENDING.value,
        "error_reason": None, "attempts": 0, "next_attempt_at": now, "inbound_id": inbound_id, "created_at": now,
        "updated_at": now, "held_until": None, "held_reason": None, "deadline_at": None,
    }


def cancel_queued(conn: Connection, stops: Sequence[Mapping[str, Any]], *, programs: Iterable[str] | None) -> int:
    """Cancel texts still queued to each stop's phone (all but stop replies): after a stop only the stop reply goes out.

    Each of `stops` names a `brand`, a `phone` and the time (`now`) it was cancelled at.
    `programs=None` means every program of the brand, and brand-level texts too. Returns how
    many texts it cancelled.
    """
    params: dict[str, Any] = {"channel": CHANNEL_SMS, "pending": QUEUED_STATES[0], "sending": QUEUED_STATES[1],
                              "cancelled": OutboxStatus.CANCELLED.value, "reason": CANCELLED_BY_OPT_OUT}
    sql = ("UPDATE outbox SET status = :cancelled, error_reason = :reason, updated_at = :now"
           " WHERE brand = :brand AND phone = :phone AND channel = :channel AND status IN (:pending, :sending)"
           " AND purpose <> 'stop'")
    if programs is not None:
        sql += " AND program IN " + in_list("p", list(programs), params)
    return Raw(conn).executemany(sql, [{**params, **stop} for stop in stops])


@dataclass(frozen=True)
class Claimed:
    """A claimed row, as the sender needs it."""

    id: int
    channel: str
    brand: str | None
    program: str | None
    phone: str | None
    body: str
    purpose: str
    from_number: str | None
    service_id: str | None
    attempts: int
    url: str | None
    payload: Any
    created_at: datetime
    deadline_at: datetime | None


_CLAIMED = ("id, channel, brand, program, phone, body, purpose, from_number, service_id, attempts, url, payload,"
            " created_at, deadline_at")


def claim(conn: Connection, now: datetime, *, worker: str, limit: int, lease: timedelta,
          channel: str | None = None, expired: bool = True) -> list[Claimed]:
    """Claim up to `limit` due rows for `worker` (SKIP LOCKED on PostgreSQL), leasing them; optionally one channel.

    `expired=False` leaves out the rows whose lease ran out (a dead sender's), which only a
    crash leaves behind: the sender looks for those every few seconds, not at every claim.
    """
    raw = Raw(conn)
    if raw.pg:
        # Each query below must walk its index in due order and stop at the limit. PostgreSQL
        # without statistics (a new database, a launch-day burst) thinks the backlog holds two
        # rows and instead fetches all of it, tests each row's turn and sorts: 4.5 ms a claim
        # behind 5,000 prompts, which capped a worker at about 220 sends/s. Sorting and bitmap
        # scans are priced out for these queries only (set_config's `true`: this transaction).
        # (If _pick fails, the transaction fails with it, and so do these settings.)
        # JIT off too: a plan priced out like that crosses jit_above_cost, and compiling it cost
        # about a second a claim. It stays off for the rest of the transaction: its other jobs
        # are short OLTP statements that JIT never helps.
        raw.execute("SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true),"
                    " set_config('jit', 'off', true)")
        ids = _pick(raw, now, limit=limit, channel=channel, expired=expired)
        raw.execute("SELECT set_config('enable_sort', 'on', true), set_config('enable_bitmapscan', 'on', true)")
    else:
        ids = _pick(raw, now, limit=limit, channel=channel, expired=expired)
    if not ids:
        return []
    params = {"worker": worker, "lease": now + lease, "now": now, "sending": OutboxStatus.SENDING.value}
    rows = raw.rows(
        "UPDATE outbox SET status = :sending, claimed_by = :worker, lease_until = :lease, attempts = attempts + 1,"
        f" updated_at = :now WHERE id IN {in_list('i', ids, params)} RETURNING {_CLAIMED}",
        params,
    )
    return sorted((Claimed(**row) for row in rows), key=lambda c: (priority_of(c.purpose), c.id))


# Other texts leave one at a time per phone, oldest first: a welcome queued behind its
# confirmation prompt (a YES typed before the prompt went out) must not overtake it. A text
# held by a consent rule (quiet hours, caps) holds up nothing: the phone's answers go at once.
_IN_TURN = ("(channel <> 'sms' OR NOT EXISTS (SELECT 1 FROM outbox earlier WHERE earlier.brand = outbox.brand"
            " AND earlier.phone = outbox.phone AND earlier.channel = 'sms'"
            " AND earlier.status IN ('pending', 'sending', 'dispatching') AND earlier.id < outbox.id"
            " AND (earlier.held_until IS NULL OR earlier.held_until <= :now)))")


def claim_row(conn: Connection, now: datetime, *, row_id: int, worker: str, lease: timedelta) -> Claimed | None:
    """Claim one pending row by id (`optline simulate` sends its own reply and nothing else); None if not pending."""
    params = {"id": row_id, "worker": worker, "lease": now + lease, "now": now}
    rows = Raw(conn).rows(
        "UPDATE outbox SET status = 'sending', claimed_by = :worker, lease_until = :lease, attempts = attempts + 1,"
        f" updated_at = :now WHERE id = :id AND status = 'pending' RETURNING {_CLAIMED}", params)
    return Claimed(**rows[0]) if rows else None


def redrive(conn: Connection, now: datetime, *, since: datetime | None, brand: str | None,
            deadlines: Deadlines) -> int:
    """Put failed rows that are still allowed back in the queue, each with a new deadline; returns how many.

    Still allowed: brand events always; a stop reply unless the phone joined again since; any
    other text unless the phone opted out since it was queued (or the carrier refused it as
    opted out). Rows a stop cancelled are never re-driven.
    """
    params: dict[str, Any] = {"now": now, "since": since, "brand": brand, "opted_out": ERROR_UNSUBSCRIBED}
    filters = ""
    if since is not None:
        filters += " AND updated_at >= :since"
    if brand is not None:
        filters += " AND brand = :brand"
    # What `dispatch` would still send, except that a stop reply to a phone that joined again
    # since would only confuse it.
    allowed = (
        f"({STILL_ALLOWED} AND (purpose <> 'stop' OR NOT EXISTS (SELECT 1 FROM subscriptions s"
        " WHERE s.brand = outbox.brand AND s.phone = outbox.phone"
        " AND (outbox.program IS NULL OR s.program = outbox.program) AND s.joined_at > outbox.created_at)))"
    )
    rows = Raw(conn).rows(
        f"SELECT id, channel, purpose FROM outbox WHERE status = 'failed'{filters}"
        f" AND (error_code IS NULL OR error_code <> :opted_out) AND {allowed}", params)
    Raw(conn).executemany(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = :now, deadline_at = :deadline,"
        " lease_until = NULL, claimed_by = NULL, updated_at = :now WHERE id = :id AND status = 'failed'",
        [{"id": row["id"], "now": now, "deadline": now + deadlines.budget(row["channel"], row["purpose"])}
         for row in rows])
    return len(rows)


def _pick(raw: Raw, now: datetime, *, limit: int, channel: str | None, expired: bool = True) -> list[int]:
    """The ids to claim: due rows by priority (stop replies, answers, the rest), then expired leases, each by due time.

    One query per priority, each walking the (priority, status, next_attempt_at) index and
    stopping at what is left of `limit`, rather than one that sorts the whole backlog: with
    20,000 prompts queued, that sort held SQLite's write lock 40 ms a claim.

    Texts to one phone leave in turn (see `_in_turn`): a welcome whose confirmation prompt is
    still queued brings that prompt forward with it, instead of being skipped. (Skipping in
    SQL walked every blocked welcome on each claim: 9–15 ms of SQLite's write lock behind
    5,000 prompts, and the welcomes waited for the whole prompt backlog.)
    """
    params: dict[str, Any] = {"now": now}
    where_channel = ""
    if channel:
        params["channel"] = channel
        where_channel = " AND channel = :channel"
    lock = " FOR UPDATE SKIP LOCKED" if raw.pg else ""
    picked: dict[int, None] = {}  # ordered, without duplicates
    for priority in (PRIORITY_STOP, PRIORITY_ANSWER, PRIORITY_REST):
        params.update(priority=priority, limit=limit - len(picked))
        rows = raw.rows(
            "SELECT id, brand, phone, channel FROM outbox WHERE priority = :priority AND status = 'pending'"
            f" AND next_attempt_at <= :now{where_channel} ORDER BY next_attempt_at LIMIT :limit{lock}", params)
        # A stop must leave fast even behind a burst of prompts, and waits for no earlier text.
        ids = [row["id"] for row in rows] if priority == PRIORITY_STOP else _in_turn(raw, now, rows, lock)
        picked.update(dict.fromkeys(row_id for row_id in ids if row_id not in picked))
        if len(picked) >= limit:
            return list(picked)[:limit]
    if not expired:
        return list(picked)
    # Rows whose sender died mid-send (few: at most what the senders had in flight). One status
    # a query, so each walks the (status, next_attempt_at) index in order instead of sorting.
    for status in ("sending", "dispatching"):
        params.update(status=status, limit=limit - len(picked))
        picked.update(dict.fromkeys(row[0] for row in raw.execute(
            "SELECT id FROM outbox WHERE status = :status AND lease_until < :now"
            f"{where_channel} AND (purpose = 'stop' OR {_IN_TURN}) ORDER BY next_attempt_at LIMIT :limit{lock}",
            params).fetchall()))
        if len(picked) >= limit:
            break
    return list(picked)


def _in_turn(raw: Raw, now: datetime, rows: list[dict[str, Any]], lock: str) -> list[int]:
    """For each candidate, the row of its phone whose turn it is: itself, or the earlier text still queued before it.

    Texts to one phone leave one at a time, oldest first (a stop reply aside). A candidate
    whose phone has an earlier text pending and due yields that text instead; one whose phone
    has a text in flight (or not due yet) yields nothing this time.
    """
    texts = [row for row in rows if row["channel"] == CHANNEL_SMS]
    out = [row["id"] for row in rows if row["channel"] != CHANNEL_SMS]  # brand events wait for no text
    if not texts:
        return out
    params: dict[str, Any] = {"now": now}
    phones: dict[str, set[str]] = {}
    for row in texts:
        phones.setdefault(row["brand"], set()).add(row["phone"])
    # (brand, phone) leads the index these walk: each phone's few queued rows, not the backlog.
    groups = []
    for n, (brand, group) in enumerate(sorted(phones.items())):
        params[f"b{n}"] = brand
        groups.append(f"(e.brand = :b{n} AND e.phone IN {in_list(f'p{n}_', sorted(group), params)})")
    where = " OR ".join(groups)
    # The oldest text still queued for each phone, with its state.
    firsts = {(row["brand"], row["phone"]): row for row in raw.rows(
        "SELECT o.id, o.brand, o.phone, o.status, o.next_attempt_at <= :now AS due FROM outbox o"
        " WHERE o.id IN (SELECT MIN(e.id) FROM outbox e WHERE e.channel = 'sms'"
        f" AND e.status IN ('pending', 'sending', 'dispatching') AND e.purpose <> 'stop' AND ({where})"
        " AND (e.held_until IS NULL OR e.held_until <= :now)"
        " GROUP BY e.brand, e.phone)", params)}
    pulled = []
    for row in texts:
        first = firsts.get((row["brand"], row["phone"]))
        if first is None or first["id"] == row["id"]:
            out.append(row["id"])
        elif first["status"] == "pending" and first["due"]:
            pulled.append(first["id"])
    if pulled:
        # The earlier texts brought forward are locked like the candidates were.
        lock_params: dict[str, Any] = {"now": now}
        out += [r[0] for r in raw.execute(
            f"SELECT id FROM outbox WHERE id IN {in_list('i', sorted(set(pulled)), lock_params)}"
            f" AND status = 'pending' AND next_attempt_at <= :now{lock}", lock_params).fetchall()]
    return out


# A text may still go out: a stop reply or a brand event always; any other text unless the
# phone opted out of its program (of any of the brand's, for a brand-level text) since it was queued.
NOT_OPTED_OUT = ("(purpose = 'stop' OR channel <> 'sms' OR NOT EXISTS (SELECT 1 FROM subscriptions s"
                 " WHERE s.brand = outbox.brand AND s.phone = outbox.phone"
                 " AND (outbox.program IS NULL OR s.program = outbox.program) AND s.opted_out_at >= outbox.created_at))")
# A confirmation prompt held by a consent rule (app.holds: quiet hours, caps) still asks something
# only while its subscription waits for the confirm keyword and no later prompt for it was queued:
# a phone that texted JOIN meanwhile got its own prompt at once, one that texted YES is subscribed,
# and a second API opt-in queued a newer prompt. Otherwise it is cancelled as superseded, so the
# phone never gets a stale "reply YES" hours later. Only held rows pay for the two probes.
NOT_SUPERSEDED = ("(outbox.held_reason IS NULL OR outbox.purpose <> 'doi_prompt' OR outbox.program IS NULL OR ("
                  "EXISTS (SELECT 1 FROM subscriptions s WHERE s.brand = outbox.brand AND s.phone = outbox.phone"
                  " AND s.program = outbox.program AND s.status = 'pendingDOI')"
                  " AND NOT EXISTS (SELECT 1 FROM outbox later WHERE later.brand = outbox.brand"
                  " AND later.phone = outbox.phone AND later.program = outbox.program"
                  " AND later.purpose = 'doi_prompt' AND later.id > outbox.id AND later.status <> 'cancelled')))")
STILL_ALLOWED = f"({NOT_OPTED_OUT} AND {NOT_SUPERSEDED})"
# Why a refused text was cancelled: the opt-out, else a newer state of its subscription.
CANCELLED_REASON = f"(CASE WHEN {NOT_OPTED_OUT} THEN '{CANCELLED_AS_SUPERSEDED}' ELSE :reason END)"


def backlog(conn: Connection) -> list[tuple[str, str, int, datetime | None]]:
    """(channel, status, rows, earliest due time) of the rows still to send: one GROUP BY on the due index."""
    # A pending row is due at next_attempt_at; a claimed one again when its lease runs out.
    due = sa.case((outbox.c.status == OutboxStatus.PENDING.value, outbox.c.next_attempt_at), else_=outbox.c.lease_until)
    query = (sa.select(outbox.c.channel, outbox.c.status, sa.func.count(), sa.func.min(due))
             .where(outbox.c.status.in_(QUEUED_STATES)).group_by(outbox.c.channel, outbox.c.status))
    return [(row[0], row[1], int(row[2]), row[3]) for row in conn.execute(query)]
