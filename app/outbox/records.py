"""A send's outcome recorded on its row: accepted (`record_sent`, or a batch in `record_sent_many`) or failed.

A 21610-style refusal (or a report of one that came before the acceptance) opts the phone
out through the `CarrierOptOut` the caller hands in: consent changes are not the queue's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.holds import hold_retry
from app.keywords.schema import Rules
from app.outbox.queue import CANCELLED_BY_OPT_OUT, CANCELLED_REASON, STILL_ALLOWED, Claimed, OutboxStatus
from app.outbox.reports import FROM_DELIVERY
from app.providers.base import DeliveryStatus, SendError, SendResult
from app.providers.twilio import ERROR_UNSUBSCRIBED
from app.sql import Array, Raw

# Applies a carrier's opt-out (21610 and the like) in the caller's transaction: app.carrier's
# `carrier_opt_out`, handed in by whoever builds the sender, since consent changes are not the
# queue's to make (and the consent room already depends on this one).
CarrierOptOut = Callable[..., object]


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
        status = FROM_DELIVERY[DeliveryStatus(report[0])]
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
    rules: Rules | None, opt_out: CarrierOptOut | None = None, deadline: datetime | None = None,
) -> None:
    """Record a failed send: back to pending for a retry, or failed; 21610 also opts the phone out (`opt_out`).

    A retry of a text quiet hours may hold (an API prompt) waits for the recipient's window
    again, as its first try did; one the window would push past its `deadline` fails.
    """
    held = None
    if retry_at is not None and rules is not None:
        held = hold_retry(conn, retry_at, rules=rules, brand=row.brand, program=row.program, phone=row.phone,
                          purpose=row.purpose)
        if held is not None and deadline is not None and held.until > deadline:
            retry_at, held = None, None
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
    if held is not None:
        raw.execute("UPDATE outbox SET next_attempt_at = :until, held_until = :until, held_reason = :reason"
                    " WHERE id = :id AND status = 'pending'", {"id": row.id, "until": held.until, "reason": held.reason})
    if retry_at is not None:
        # A stop that landed while this send was in flight could not cancel it then: it does now.
        raw.execute(f"UPDATE outbox SET status = 'cancelled', error_reason = {CANCELLED_REASON}, updated_at = :now"
                    f" WHERE id = :id AND status = 'pending' AND NOT {STILL_ALLOWED}",
                    {"id": row.id, "now": now, "reason": CANCELLED_BY_OPT_OUT})
    if opt_out is not None and error.opted_out and row.brand and row.phone:
        opt_out(conn, now, rules=rules, brand=row.brand, phone=row.phone,
                        to=row.from_number, service_id=row.service_id, code=error.code)
