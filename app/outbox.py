"""The transactional outbox: enqueue replies inside the caller's transaction; claim and send due rows.

Row lifecycle (column `status`):

    pending ──claim──▶ sending ──dispatch──▶ dispatching ──accepted──▶ queued ─▶ sending* ─▶ sent ─▶ delivered | …
       ▲                 │                        │      (*provider-side status from callbacks; never backwards)
       └──transient──────┴────────────────────────┤
                         │                        └──permanent / deadline passed──▶ failed
                         └──a stop landed first──▶ cancelled

Claims take due rows by priority (stop replies, then help and welcome, then prompts and
brand events) and lease them. Right before the provider call, `dispatch` decides the send
under the phone's lock: a text is still allowed unless a stop cancelled it or the phone
opted out of its program since it was queued. A STOP for that phone is serialised with that
decision, so no send is decided after the STOP commits, and a STOP never touches a row
already dispatching (its text is on its way; the row records what really happened).

A claim is a lease: a sender that dies mid-batch leaves rows in `sending` or `dispatching`
with `lease_until` in the past; the next claim takes them over and `dispatch` checks them
again. Transient failures retry with backoff until the row's deadline (`deadline_at`, else
its purpose's budget from when it was queued); `redrive` (`optline outbox retry`) gives
failed rows that are still allowed a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.db import Writer, utcnow
from app.errors import DatabaseUnavailable
from app.keywords import Rules
from app.metrics import Metrics
from app.models import outbox
from app.phone import mask
from app.providers.base import DeliveryStatus, OutboundSms, SendError, SendResult
from app.providers.registry import Providers
from app.ratelimit import take
from app.providers.twilio import ERROR_UNSUBSCRIBED
from app.sql import Array, Raw, in_list, insert_sql
from app.subscriptions import Event, Source

# Applies a carrier's opt-out (21610 and the like) in the caller's transaction: app.carrier's
# `carrier_opt_out`, handed in by whoever builds the sender, since consent changes are not the
# queue's to make (and the consent room already depends on this one).
CarrierOptOut = Callable[..., object]

log = logging.getLogger("optline.outbox")

# How long a sender keeps trying to record a send's outcome through a database outage.
RECORD_PATIENCE = 300.0
# The longest a sender waits for more free slots before claiming (see OutboxSender._pipeline).
BATCH_WAIT = 0.005


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


# Delivery statuses as stored on the row (the provider's "sending" must not collide with ours).
_FROM_DELIVERY = {
    DeliveryStatus.QUEUED: OutboxStatus.QUEUED,
    DeliveryStatus.SENDING: OutboxStatus.PROVIDER_SENDING,
    DeliveryStatus.SENT: OutboxStatus.SENT,
    DeliveryStatus.DELIVERED: OutboxStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED: OutboxStatus.UNDELIVERED,
    DeliveryStatus.FAILED: OutboxStatus.FAILED,
}
_TO_DELIVERY = {v: k for k, v in _FROM_DELIVERY.items()}
QUEUED_STATES = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value, OutboxStatus.DISPATCHING.value)

CHANNEL_SMS = "sms"
CHANNEL_EVENT = "event"


CANCELLED_BY_OPT_OUT = "cancelled by opt-out"
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


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
    """Seconds to wait before retry `attempt` (1-based): exponential backoff with full jitter."""
    return rng.uniform(0, min(cap, base * (2 ** (attempt - 1))))


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
        f"({_STILL_ALLOWED} AND (purpose <> 'stop' OR NOT EXISTS (SELECT 1 FROM subscriptions s"
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
_STILL_ALLOWED = ("(purpose = 'stop' OR channel <> 'sms' OR NOT EXISTS (SELECT 1 FROM subscriptions s"
                  " WHERE s.brand = outbox.brand AND s.phone = outbox.phone"
                  " AND (outbox.program IS NULL OR s.program = outbox.program) AND s.opted_out_at >= outbox.created_at))")


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
        f" WHERE id = :id AND claimed_by = :worker AND status IN ('sending', 'dispatching') AND {_STILL_ALLOWED}",
        params)
    if not decided:
        raw.execute(
            "UPDATE outbox SET status = 'cancelled', error_reason = :reason, lease_until = NULL, updated_at = :now"
            " WHERE id = :id AND claimed_by = :worker AND status IN ('sending', 'dispatching')",
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
        f" AND {_STILL_ALLOWED} RETURNING id", params)}
    refused = [row_id for row_id in ids if row_id not in decided]
    if refused:
        cancel: dict[str, Any] = {"worker": worker, "now": now, "reason": CANCELLED_BY_OPT_OUT}
        raw.execute(
            "UPDATE outbox SET status = 'cancelled', error_reason = :reason, lease_until = NULL, updated_at = :now"
            f" WHERE id IN {in_list('i', refused, cancel)} AND claimed_by = :worker"
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


def record_sent(conn: Connection, now: datetime, *, row_id: int, worker: str, result: SendResult,
                rules: Rules | None = None, opt_out: CarrierOptOut | None = None) -> None:
    """Record the provider's acceptance (merging a delivery report that may have come first); a 21610 report that
    came first opts the phone out through `opt_out`."""
    raw = Raw(conn)
    # A brand event is done when the CRM answered 2xx; a text is only queued at the provider.
    status = OutboxStatus.DELIVERED if result.status == "delivered" else OutboxStatus.QUEUED
    error_code = None
    report = raw.execute("SELECT status, error_code FROM delivery_reports WHERE message_id = :m",
                         {"m": result.message_id}).fetchone()
    if report is not None:
        status = _FROM_DELIVERY[DeliveryStatus(report[0])]
        error_code = report[1]
    # Only a row this sender dispatched (or a brand event it claimed): a cancelled row is never
    # turned back into a sent one, and a stop never cancels a dispatching row.
    rows = raw.rows(
        "UPDATE outbox SET status = :status, provider_message_id = :m, sent_at = :now, lease_until = NULL,"
        " error_code = :code, error_reason = NULL, updated_at = :now"
        " WHERE id = :id AND claimed_by = :worker AND status IN ('sending', 'dispatching')"
        " RETURNING brand, phone, from_number, service_id",
        {"status": status.value, "m": result.message_id, "now": now, "code": error_code, "id": row_id,
         "worker": worker},
    )
    row = rows[0] if rows else None
    if opt_out is not None and row is not None and error_code == ERROR_UNSUBSCRIBED and row["brand"] and row["phone"]:
        # The carrier's 21610 report beat us here (the webhook found no row by this id yet).
        opt_out(conn, now, rules=rules, brand=row["brand"], phone=row["phone"], to=row["from_number"],
                        service_id=row["service_id"], code=error_code, message_id=result.message_id)


@dataclass(frozen=True)
class SentRecord:
    """A writer job recording one accepted send; the sender's grouped recording runs many as one `record_sent_many`."""

    row_id: int
    worker: str
    result: SendResult
    rules: Rules | None
    opt_out: CarrierOptOut | None = None

    def __call__(self, conn: Connection, now: datetime) -> None:
        record_sent(conn, now, row_id=self.row_id, worker=self.worker, result=self.result, rules=self.rules,
                    opt_out=self.opt_out)


def record_sent_many(conn: Connection, now: datetime, records: Sequence[SentRecord]) -> None:
    """`record_sent` for a batch of accepted sends, in two statements rather than two a send.

    Recording was the outbox's busiest statement: two a reply (look for an early delivery
    report, then mark the row), about half of what the database did per inbound text in
    `make bench`. Here one query finds the sends whose report came first (rare: those take
    `record_sent`'s path, one at a time, 21610 included), and one UPDATE marks all the others,
    with the same conditions as `record_sent` (only a row this sender still holds).
    """
    if not records:
        return
    raw = Raw(conn)
    params: dict[str, Any] = {}
    ids = raw.each("m", [r.result.message_id for r in records], params)
    early = {row[0] for row in raw.execute(
        f"SELECT m.value FROM {ids} WHERE EXISTS (SELECT 1 FROM delivery_reports d WHERE d.message_id = m.value)",
        params).fetchall()}
    for record in records:
        if record.result.message_id in early:
            record(conn, now)
    plain = [r for r in records if r.result.message_id not in early]
    if not plain:
        return
    # (row id, provider message id, status): the rows travel as one parameter, so the statement's
    # text is the same whatever the batch size (PostgreSQL prepares it once).
    values = [(r.row_id, r.result.message_id, (OutboxStatus.DELIVERED if r.result.status == "delivered"
                                               else OutboxStatus.QUEUED).value, r.worker) for r in plain]
    if raw.pg:
        source = ("SELECT * FROM unnest(CAST(:i AS bigint[]), CAST(:m AS text[]), CAST(:s AS text[]), CAST(:w AS text[]))"
                  " AS v(id, m, status, worker)")
        params = {"i": Array(v[0] for v in values), "m": Array(v[1] for v in values),
                  "s": Array(v[2] for v in values), "w": Array(v[3] for v in values)}
    else:
        source = ("SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS m,"
                  " json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS worker FROM json_each(:rows)")
        params = {"rows": json.dumps(values)}
    params["now"] = now
    raw.execute(
        "UPDATE outbox SET status = v.status, provider_message_id = v.m, sent_at = :now, lease_until = NULL,"
        f" error_code = NULL, error_reason = NULL, updated_at = :now FROM ({source}) AS v"
        " WHERE outbox.id = v.id AND outbox.claimed_by = v.worker AND outbox.status IN ('sending', 'dispatching')",
        params)


def record_failure(
    conn: Connection, now: datetime, *, row: Claimed, worker: str, error: SendError, retry_at: datetime | None,
    rules: Rules | None, opt_out: CarrierOptOut | None = None,
) -> None:
    """Record a failed send: back to pending for a retry, or failed; 21610 also opts the phone out (`opt_out`)."""
    values: dict[str, Any] = {
        "error_code": error.code, "error_reason": str(error)[:500], "now": now, "id": row.id, "worker": worker,
        "status": OutboxStatus.PENDING.value if retry_at is not None else OutboxStatus.FAILED.value,
        "next": retry_at,
    }
    raw = Raw(conn)
    raw.execute(
        "UPDATE outbox SET status = :status, next_attempt_at = COALESCE(:next, next_attempt_at), error_code ="
        " :error_code, error_reason = :error_reason, lease_until = NULL, updated_at = :now"
        " WHERE id = :id AND claimed_by = :worker AND status IN ('sending', 'dispatching')",
        values,
    )
    if retry_at is not None:
        # A stop that landed while this send was in flight could not cancel it then: it does now.
        raw.execute(f"UPDATE outbox SET status = 'cancelled', error_reason = :reason, updated_at = :now"
                    f" WHERE id = :id AND status = 'pending' AND NOT {_STILL_ALLOWED}",
                    {"id": row.id, "now": now, "reason": CANCELLED_BY_OPT_OUT})
    if opt_out is not None and error.opted_out and row.brand and row.phone:
        opt_out(conn, now, rules=rules, brand=row.brand, phone=row.phone,
                        to=row.from_number, service_id=row.service_id, code=error.code)


def backlog(conn: Connection) -> list[tuple[str, str, int, datetime | None]]:
    """(channel, status, rows, earliest due time) of the rows still to send: one GROUP BY on the due index."""
    # A pending row is due at next_attempt_at; a claimed one again when its lease runs out.
    due = sa.case((outbox.c.status == OutboxStatus.PENDING.value, outbox.c.next_attempt_at), else_=outbox.c.lease_until)
    query = (sa.select(outbox.c.channel, outbox.c.status, sa.func.count(), sa.func.min(due))
             .where(outbox.c.status.in_(QUEUED_STATES)).group_by(outbox.c.channel, outbox.c.status))
    return [(row[0], row[1], int(row[2]), row[3]) for row in conn.execute(query)]


def record_delivery(conn: Connection, now: datetime, *, message_id: str, status: DeliveryStatus, error_code: int | None) -> bool:
    """Apply a delivery report; reports arrive in any order and never move a row backwards."""
    raw = Raw(conn)
    current = raw.scalar("SELECT status FROM delivery_reports WHERE message_id = :m", {"m": message_id})
    params: dict[str, Any] = {"m": message_id, "status": status.value, "code": error_code, "now": now}
    if current is None:
        raw.execute("INSERT INTO delivery_reports (message_id, status, error_code, updated_at)"
                    " VALUES (:m, :status, :code, :now)", params)
    elif status.advances(DeliveryStatus(current)):
        raw.execute("UPDATE delivery_reports SET status = :status, error_code = :code, updated_at = :now"
                    " WHERE message_id = :m", params)
    else:
        return False
    behind = [row_status.value for row_status, d in _TO_DELIVERY.items() if d.rank < status.rank]
    params["row_status"] = _FROM_DELIVERY[status].value
    raw.execute(
        "UPDATE outbox SET status = :row_status, error_code = :code, updated_at = :now"
        f" WHERE provider_message_id = :m AND status IN {in_list('b', behind, params)}",
        params,
    )
    return True


_UNDECIDED = object()  # a row `_deliver` must decide itself


@dataclass(frozen=True)
class _DispatchFailed:
    """The batch's dispatch job failed (the database): the row records a transient failure."""

    error: Exception


class OutboxSender:
    """Claims due rows, re-checks them, sends through the provider, records the outcome."""

    def __init__(
        self,
        *,
        writer: Writer,
        reader: Engine,
        providers: Providers,
        rules: Rules | None,
        public_url: str | None,
        lease_seconds: float = 60.0,
        concurrency: int = 8,
        deadlines: Deadlines = Deadlines(),
        retry_base: float = 2.0,
        retry_cap: float = 600.0,
        poll_seconds: float = 0.5,
        clock: Callable[[], datetime],
        event_poster: Callable[[Claimed], None] | None = None,
        metrics: Metrics | None = None,
        carrier_opt_out: CarrierOptOut | None = None,
    ) -> None:
        self.writer = writer
        self.carrier_opt_out = carrier_opt_out  # applies a 21610 refusal's opt-out (app.carrier)
        self.reader = reader
        self.providers = providers
        self.rules = rules
        self.public_url = public_url  # delivery reports come back to {public_url}/webhooks/{provider}/status
        self.lease = timedelta(seconds=lease_seconds)
        self.concurrency = concurrency
        self.deadlines = deadlines
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.event_poster = event_poster
        self.metrics = metrics or Metrics()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:64]
        # Brand events get their own, smaller share of threads: a CRM that hangs must never
        # hold up a stop reply.
        self.event_concurrency = max(2, concurrency // 2)
        self._executor = ThreadPoolExecutor(max_workers=concurrency + self.event_concurrency,
                                            thread_name_prefix="optline-send")
        self._wakes = {CHANNEL_SMS: asyncio.Event(), CHANNEL_EVENT: asyncio.Event()}
        self._urgent = {CHANNEL_SMS: True, CHANNEL_EVENT: True}
        self._stopping = False
        self._unrecorded: set[int] = set()  # rows sent whose outcome is not recorded yet
        self._recording: set[asyncio.Task[None]] = set()  # outcomes being recorded
        self._together: list[tuple[Any, tuple[str, ...], asyncio.Future[None]]] = []
        self._flushes: set[asyncio.Future[None]] = set()
        self._next_lease_check: dict[str, float] = {}  # channel -> time.monotonic() of the next look
        self.sent = 0

    def wake(self, *, urgent: bool = True) -> None:
        """Ask the loops to look for due rows (call from the event loop thread); `urgent`: at once, not in a batch."""
        for channel, event in self._wakes.items():
            event.set()
            if urgent:
                self._urgent[channel] = True

    async def run(self) -> None:
        """Send until `stop()`; finishes the sends in flight before returning."""
        await asyncio.gather(self._pipeline(CHANNEL_SMS, self.concurrency),
                             self._pipeline(CHANNEL_EVENT, self.event_concurrency))

    async def _pipeline(self, channel: str, slots: int) -> None:
        """Keep up to `slots` rows of one channel in flight, claiming more as each finishes.

        A claimed batch is decided and sent by a task of its own, so the next claim does not
        wait for the previous batch's decision: claims, decisions and sends overlap.
        """
        batches: set[asyncio.Task[None]] = set()
        busy = 0  # rows claimed and not finished
        done = asyncio.Event()

        def finished(_row: Claimed) -> None:
            nonlocal busy
            busy -= 1
            done.set()

        hinted = True  # woken by a webhook, or the last claim found rows: claim without looking first
        urgent = True  # a stop reply (or a caller that cannot wait) is queued: claim at once
        woken = False  # a webhook queued a reply since the last claim
        # A claim for every reply queued, or for every send that finishes, would decide one row
        # a job. Unless a stop reply is waiting, a few milliseconds more make each claim, and its
        # decision, a batch: for a quarter of the slots to free, or for more replies to queue.
        batch = max(1, slots // 4)
        while not self._stopping:
            free = slots - busy
            if not urgent and 0 < free < batch and busy:
                done.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), BATCH_WAIT)
                free = slots - busy
            elif not urgent and woken and free > 0:
                await asyncio.sleep(BATCH_WAIT)
            rows: list[Claimed] = []
            if free > 0 and not hinted:
                # A poll: look on a reader connection first, so an idle sender never takes the
                # write lock (on SQLite it would queue behind the webhooks for nothing).
                try:
                    hinted = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._has_due, channel)
                except Exception:  # noqa: BLE001 - the claim below reports database trouble
                    hinted = True
            if free > 0 and hinted:
                # Rows a dead sender left leased: looked for every few seconds, not at every claim.
                # Two statements of about ten a claim; in `make bench` the claims of a busy
                # sender are many, and these found nothing unless a sender had crashed.
                expired = time.monotonic() >= self._next_lease_check.get(channel, 0.0)
                if expired:
                    self._next_lease_check[channel] = time.monotonic() + min(5.0, self.lease.total_seconds() / 4)
                try:
                    rows = await self.writer.run(lambda conn, now: claim(
                        conn, now, worker=self.worker_id, limit=free, lease=self.lease, channel=channel,
                        expired=expired))
                except DatabaseUnavailable as exc:
                    log.warning("outbox claim failed (%s); retrying", exc)
                except Exception:  # noqa: BLE001 - a database blip must not kill the sender
                    log.exception("outbox claim failed; retrying")
            woken = False  # what woke it is claimed now
            if rows:
                busy += len(rows)
                task = asyncio.create_task(self._run_batch(channel, rows, finished))
                batches.add(task)
                task.add_done_callback(batches.discard)
                if busy < slots:
                    continue  # there may be more due right now
            wake = self._wakes[channel]
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(done.wait())]
            await asyncio.wait(waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            hinted = wake.is_set() or done.is_set() or bool(rows)
            woken, urgent = wake.is_set(), self._urgent[channel]
            self._urgent[channel] = False
            done.clear()
            wake.clear()
        while batches:
            await asyncio.gather(*batches, return_exceptions=True)
        await self.recorded()

    async def _run_batch(self, channel: str, rows: list[Claimed], finished: Callable[[Claimed], None]) -> None:
        """Decide a claimed batch (texts: in one job), then send each row; `finished` as each one ends."""
        decisions = await self._dispatch_batch(rows) if channel == CHANNEL_SMS else {}

        async def one(row: Claimed) -> None:
            try:
                await self._deliver(row, decisions.get(row.id, _UNDECIDED))
            finally:
                finished(row)

        await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)

    def _has_due(self, channel: str) -> bool:
        """True when a row of `channel` is due or its lease has run out (a read, no lock)."""
        with self.reader.connect() as conn:
            return Raw(conn).scalar(
                "SELECT 1 FROM outbox WHERE channel = :channel AND ((status = 'pending' AND next_attempt_at <= :now)"
                " OR (status IN ('sending', 'dispatching') AND lease_until < :now)) LIMIT 1",
                {"channel": channel, "now": self.clock()},
            ) is not None

    def stop(self) -> None:
        """Stop claiming; `run` returns once the sends in flight are recorded."""
        self._stopping = True
        self.wake()

    def close(self) -> None:
        """Release the send threads."""
        self._executor.shutdown(wait=True)

    async def run_once(self) -> int:
        """Claim one batch, send it, record every outcome; returns how many rows were claimed."""
        rows = await self.writer.run(
            lambda conn, now: claim(conn, now, worker=self.worker_id, limit=self.concurrency * 4, lease=self.lease)
        )
        if rows:
            sem = asyncio.Semaphore(self.concurrency)

            async def one(row: Claimed) -> None:
                async with sem:
                    await self._deliver(row)

            await asyncio.gather(*(one(row) for row in rows))
        await self.recorded()
        return len(rows)

    async def recorded(self) -> None:
        """Wait until every outcome sent so far is recorded."""
        while self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)

    async def send_now(self, row_id: int) -> bool:
        """Claim and send one pending row by id, now; False when it was not pending."""
        row = await self.writer.run(lambda conn, now: claim_row(conn, now, row_id=row_id, worker=self.worker_id,
                                                                lease=self.lease))
        if row is None:
            return False
        await self._deliver(row)
        await self.recorded()
        return True

    async def _deliver(self, row: Claimed, decided: float | None | object = _UNDECIDED) -> None:
        """Decide (unless the batch did: `decided`), send and have the outcome recorded; the slot frees once sent."""
        if row.id in self._unrecorded:
            # Sent by this process already; its outcome is still being recorded (the database was
            # away longer than the lease). Sending it again would text the phone twice.
            return
        outcome: SendResult | SendError | None = None
        try:
            if isinstance(decided, _DispatchFailed):
                raise decided.error
            wait = await self._dispatch(row) if decided is _UNDECIDED else decided  # type: ignore[assignment]
            while wait is not None and 0 < wait <= RATE_WAIT_IN_PLACE:
                await asyncio.sleep(wait)  # the sender's next slot is that close: still ours, try again
                wait = await self._dispatch(row)
        except Exception as exc:  # noqa: BLE001 - nothing was sent: a database blip is a reason to retry
            wait, outcome = None, SendError(f"database unavailable before sending: {type(exc).__name__}",
                                            transient=True)
        if wait:
            self.metrics.sent(row.channel, "rate_limited")  # back to pending, due when its sender has a slot
            return
        allowed = wait is not None and outcome is None
        if allowed:
            try:
                outcome = await self._send(row)
            except Exception as exc:  # noqa: BLE001 - an adapter bug is a permanent failure of this row
                log.exception("send of outbox row %s crashed", row.id)
                outcome = SendError(f"adapter error: {exc!r}"[:200])
        if outcome is None:
            self.metrics.sent(row.channel, "cancelled")
            return
        if isinstance(outcome, SendResult):
            self.sent += 1
            self.metrics.sent(row.channel, "sent")
            self._record_later(SentRecord(row.id, self.worker_id, outcome, self.rules, self.carrier_opt_out),
                               row, locks=[row.phone] if row.phone else (), sent=True)
            return
        retry_at = None
        if outcome.transient:
            now = self.clock()
            deadline = row.deadline_at or row.created_at + self.deadlines.budget(row.channel, row.purpose)
            wait = backoff(row.attempts, base=self.retry_base, cap=self.retry_cap)
            if outcome.retry_after is not None:
                wait = max(wait, outcome.retry_after)  # the provider said when (429 Retry-After)
            if now < deadline:
                # The last retry lands on the deadline rather than giving up early.
                retry_at = min(now + timedelta(seconds=wait), deadline)
        self.metrics.sent(row.channel, "opted_out" if outcome.opted_out else "retry" if retry_at else "failed", outcome)
        log.warning("send of outbox row %s to %s failed: %s%s", row.id, mask(row.phone), outcome,
                    " (will retry)" if retry_at else "")
        self._record_later(lambda c, now: record_failure(c, now, row=row, worker=self.worker_id, error=outcome,
                                                         retry_at=retry_at, rules=self.rules,
                                                         opt_out=self.carrier_opt_out),
                           row, locks=[row.phone] if outcome.opted_out and row.phone else (), sent=False)

    def _record_later(self, job: Any, row: Claimed, *, locks: list[str] | tuple[str, ...], sent: bool) -> None:
        """Record an outcome in the background: the send's slot is free for the next row meanwhile.

        Until it is recorded, `_unrecorded` keeps this process from sending the row again.
        """
        if sent:
            self._unrecorded.add(row.id)
        task = asyncio.create_task(self._record(job, row, locks=locks, sent=sent))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, job: Any, row: Claimed, *, locks: list[str] | tuple[str, ...], sent: bool) -> None:
        """Record a send's outcome, retrying through a database outage: a lost record of a sent text means a second send.

        A text the provider accepted (`sent`) is retried for minutes, and until it is recorded
        this process does not send the row again even if its lease runs out and a claim hands
        it back (see `_deliver`); another process could, after the lease. A failure is retried
        while the lease lasts: if it is lost, the row is simply tried again after its lease.
        """
        deadline = time.monotonic() + (RECORD_PATIENCE if sent else self.lease.total_seconds() / 2)
        pause = 0.2
        if sent:
            self._unrecorded.add(row.id)
        try:
            while True:
                try:
                    await self._write_together(job, locks)
                    return
                except Exception:  # noqa: BLE001 - a database blip; the row stays ours meanwhile
                    if time.monotonic() + pause > deadline or self._stopping:
                        log.exception("could not record the outcome of outbox row %s; it is retried after its lease",
                                      row.id)
                        return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        finally:
            self._unrecorded.discard(row.id)

    async def _write_together(self, job: Any, locks: Iterable[str]) -> None:
        """Run `job` in one writer job with the others submitted in this turn of the loop.

        Recording a batch of sends as one job, not one each, saves the writer's per-job cost.
        When the shared job fails, each job runs again on its own, so one bad row fails alone.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._together.append((job, tuple(locks), future))
        if len(self._together) == 1:
            loop.call_soon(self._start_flush)
        await future

    def _start_flush(self) -> None:
        # The loop keeps only a weak reference to a task: this set keeps it alive until done.
        task = asyncio.ensure_future(self._flush_together())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_together(self) -> None:
        batch, self._together = self._together, []
        jobs = [job for job, _locks, _future in batch if not isinstance(job, SentRecord)]
        # Accepted sends are recorded together, in two statements (see record_sent_many).
        sent = [job for job, _locks, _future in batch if isinstance(job, SentRecord)]
        locks = sorted({lock for _job, locks, _future in batch for lock in locks})
        try:
            await self.writer.run(lambda conn, now: [record_sent_many(conn, now, sent),
                                                     *(job(conn, now) for job in jobs)], locks=locks)
        except Exception as exc:  # noqa: BLE001 - find out which: each on its own
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
                return
            for job, job_locks, future in batch:
                try:
                    await self.writer.run(job, locks=job_locks)
                except Exception as exc:  # noqa: BLE001 - handed to the waiter
                    future.set_exception(exc)
                else:
                    future.set_result(None)
            return
        for _job, _locks, future in batch:
            future.set_result(None)

    async def _dispatch_batch(self, rows: list[Claimed]) -> dict[int, Any]:
        """Decide a claimed batch of texts in one writer job (see `dispatch_many`); on failure, each row learns why."""
        limits = {row.id: limit for row in rows if (limit := self._rate_of(row)) is not None}
        locks = {row.phone for row in rows if row.phone} | {f"sender:{limit.sender}" for limit in limits.values()}
        try:
            return await self.writer.run(  # type: ignore[no-any-return]
                lambda conn, now: dispatch_many(conn, now, rows=rows, worker=self.worker_id, limits=limits),
                locks=sorted(locks))
        except Exception as exc:  # noqa: BLE001 - nothing was sent: each row records a transient failure
            return {row.id: _DispatchFailed(exc) for row in rows}

    async def _dispatch(self, row: Claimed) -> float | None:
        """The cancel rule and the sender's rate, decided as late as possible under the phone's lock (see `dispatch`)."""
        if row.channel != CHANNEL_SMS:
            return 0.0  # a brand event is not a text to the phone: a stop does not cancel it
        limit = self._rate_of(row)
        locks = [row.phone] if row.phone else []
        if limit is not None:
            # Every process takes this sender's slots in one order with its phones (sorted
            # advisory locks on PostgreSQL), so two batches cannot deadlock on the rate row.
            locks.append(f"sender:{limit.sender}")
        return await self.writer.run(  # type: ignore[no-any-return]
            lambda conn, now: dispatch(conn, now, row_id=row.id, worker=self.worker_id, limit=limit), locks=locks)

    def _rate_of(self, row: Claimed) -> SendRate | None:
        """The rate limit of the row's sender; None for the console provider, which sends nothing."""
        config = self.rules.sender_config(row.service_id or row.from_number or "") if self.rules is not None else None
        if config is None or self.providers.name_for(self.rules, row.from_number, row.service_id) == "console":
            return None
        # Up to a hundredth of a second's worth back to back (one for a long code): a batch from
        # a fast sender goes out together, and no second holds more than 1 % over the rate.
        burst = max(1.0, config.rate / 100)
        return SendRate(sender=config.id, rate=config.rate, burst=burst + 1 if row.purpose == "stop" else burst)

    async def _send(self, row: Claimed) -> SendResult | SendError:
        """Send one row: a text through its sender's provider (awaited), a brand event on a thread."""
        started = time.perf_counter()
        try:
            if row.channel == CHANNEL_EVENT:
                if self.event_poster is None:
                    raise SendError("no brand event delivery configured")
                await asyncio.get_running_loop().run_in_executor(self._executor, self.event_poster, row)
                return SendResult(message_id=f"event-{row.id}", status="delivered")
            assert row.phone is not None
            name = self.providers.name_for(self.rules, row.from_number, row.service_id)
            callback = f"{self.public_url}/webhooks/{name}/status" if self.public_url else None
            return await self.providers.send(name, OutboundSms(
                to=row.phone, body=row.body, from_number=None if row.service_id else row.from_number,
                service_id=row.service_id, status_callback=callback), self._executor)
        except SendError as exc:
            return exc
        finally:
            self.metrics.send_seconds.labels(row.channel).observe(time.perf_counter() - started)
