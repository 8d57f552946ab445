"""Erasure that keeps the suppression, and the retention of message bodies.

An erasure (GDPR Art. 17) of a number from a brand removes what identifies the person: the
profile's personal fields, every inbound and sent text's body, and the number itself, which
each row keeps only as its pseudonym ("~" + 19 hex digits of the number's keyed hash,
app.ledger). What is kept, as the record of consent and opt-out a brand needs for legal
claims (Art. 17(3)(e)): each consent event's statuses, times, keywords, replies and API
proof, and the keyed hash in `erasures`. Nobody can read the number back from it; but when
the number is seen again (a text, an API call), `restore` finds its hash before anything
reads the number's consent and puts its subscriptions back under it: an opt-out made before
the erasure still refuses an opt-in whose consent is older than it.

Opt-outs are never purged: body retention blanks texts, never a consent event or a status.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from app.consent import Writes
from app.ledger import by_keys, phone_key, pseudonym
from app.sql import Raw
from app.subscriptions import Source

# Texts whose body no send needs any more (app.outbox.queue.OutboxStatus, written out here).
_SETTLED = ("queued", "sending_provider", "sent", "delivered", "undelivered", "failed", "cancelled")
ERASED = "erased"  # the consent event an erasure writes (one per subscription of the number)


def erase(conn: Connection, now: datetime, *, brand: str, phone: str, api_key_id: int | None = None) -> dict[str, int]:
    """Erase `phone` from `brand` (the caller holds the phone's lock); how many rows of each kind were erased."""
    raw = Raw(conn)
    key = phone_key(phone)
    alias = pseudonym(key)
    args = {"brand": brand, "phone": phone, "alias": alias, "now": now}
    counts: dict[str, int] = {}
    subs = raw.rows("SELECT id, program, status FROM subscriptions WHERE brand = :brand AND phone = :phone"
                    " ORDER BY program", args)
    # The erasure is itself an event of the number's chain: written first, under the number,
    # so it links like any other; then the number goes from every row.
    writes = Writes()
    source = Source.API if api_key_id is not None else Source.SYSTEM
    for sub in subs or [{"id": "", "program": "", "status": "none"}]:
        writes.consent({
            "subscription_id": sub["id"], "brand": brand, "program": sub["program"], "phone": phone, "event": ERASED,
            "from_status": sub["status"], "to_status": sub["status"], "source": source.value, "keyword": None,
            "provider_message_id": None, "raw_text": None, "api_key_id": api_key_id, "consent_source": None,
            "consent_proof": None, "consented_at": None, "reason": "erasure requested", "created_at": now,
        })
    writes.flush(conn)
    counts["consent_events"] = raw.rowcount(
        "UPDATE consent_events SET phone = :alias, raw_text = NULL WHERE brand = :brand AND phone = :phone", args)
    counts["subscriptions"] = raw.rowcount(
        "UPDATE subscriptions SET phone = :alias, profile_id = NULL, updated_at = :now"
        " WHERE brand = :brand AND phone = :phone", args)
    counts["profiles"] = raw.rowcount(
        "UPDATE profiles SET external_id = NULL, phone = NULL, email = NULL, first_name = NULL, last_name = NULL,"
        " timezone = NULL, attributes = :empty, deleted_at = :now, updated_at = :now"
        " WHERE brand = :brand AND phone = :phone AND deleted_at IS NULL", {**args, "empty": {}})
    counts["inbound_messages"] = raw.rowcount(
        "UPDATE inbound_messages SET from_phone = :alias, from_address = NULL, body = '', media = NULL, params = NULL"
        " WHERE brand = :brand AND from_phone = :phone", args)
    # Texts not yet sent are cancelled (the number is going); sent ones keep their status and
    # receipt, without their body. Brand events about the number lose their payload.
    raw.execute("UPDATE outbox SET status = 'cancelled', error_reason = 'erased', updated_at = :now"
                " WHERE brand = :brand AND phone = :phone AND status = 'pending'", args)
    counts["outbox"] = raw.rowcount(
        "UPDATE outbox SET phone = :alias, body = '', payload = NULL WHERE brand = :brand AND phone = :phone", args)
    raw.execute("INSERT INTO erasures (brand, phone_key, erased_at) VALUES (:brand, :key, :now)"
                " ON CONFLICT (phone_key, brand) DO UPDATE SET erased_at = excluded.erased_at",
                {"brand": brand, "key": key, "now": now})
    return counts


def restore(conn: Connection, phones: Sequence[str]) -> None:
    """Put an erased number's subscriptions back under it before anything reads them (the writer calls this).

    One indexed lookup for the whole batch; the numbers' locks are held.
    """
    numbers = [p for p in set(phones) if p.startswith("+")]
    if not numbers:
        return
    raw = Raw(conn)
    keys = {phone_key(p): p for p in numbers}
    for row in by_keys(raw, "erasures", "brand, phone_key", sorted(keys)):
        # A program the number has joined again by a path that bypassed this keeps its new row.
        raw.execute("UPDATE subscriptions SET phone = :phone WHERE brand = :brand AND phone = :alias AND NOT EXISTS ("
                    " SELECT 1 FROM subscriptions s WHERE s.brand = :brand AND s.phone = :phone"
                    " AND s.program = subscriptions.program)",
                    {"phone": keys[row["phone_key"]], "brand": row["brand"], "alias": pseudonym(row["phone_key"])})


def is_erased(conn: Connection, *, brand: str, phone: str) -> datetime | None:
    """When `phone` was erased from `brand`, or None."""
    rows = Raw(conn).rows("SELECT erased_at FROM erasures WHERE brand = :brand AND phone_key = :key",
                          {"brand": brand, "key": phone_key(phone)})
    return rows[0]["erased_at"] if rows else None


def expire_bodies(conn: Connection, now: datetime, *, days: int, limit: int = 5000) -> int:
    """Blank the bodies of texts older than `days` (at most `limit` rows a table a call); how many were blanked.

    The consent ledger is not touched: each event keeps the text that caused it (only an
    erasure removes it, keeping its hash) and every opt-out stays, whatever the retention.
    """
    cutoff = now - timedelta(days=days)
    raw = Raw(conn)
    n = raw.rowcount(
        "UPDATE inbound_messages SET body = '', media = NULL WHERE id IN (SELECT id FROM inbound_messages"
        " WHERE received_at < :cutoff AND (body <> '' OR media IS NOT NULL) ORDER BY id LIMIT :limit)",
        {"cutoff": cutoff, "limit": limit})
    n += raw.rowcount(
        "UPDATE outbox SET body = '' WHERE id IN (SELECT id FROM outbox WHERE channel = 'sms' AND created_at < :cutoff"
        " AND body <> '' AND status IN (" + ", ".join(f"'{s}'" for s in _SETTLED) + ") ORDER BY id LIMIT :limit)",
        {"cutoff": cutoff, "limit": limit})
    return n


__all__ = ["ERASED", "erase", "expire_bodies", "is_erased", "restore"]
