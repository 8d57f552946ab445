"""The evidence pack of one phone in one brand: per program, every consent event with its proof.

For each event: the inbound text that caused it (provider, message id, time, text), the reply
sent with it (its text, the outbox row and the provider's delivery receipt), the API proof
(key, consent source, proof such as an IP address or form URL, consent time), the opt-out's
reason, and the keywords.yaml sha256 in force; then the chain's verification for the phone.
Works for an erased number too (found by its keyed hash), without what the erasure removed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.erasure import is_erased
from app.ledger import phone_key, pseudonym
from app.ledger_verify import verify
from app.sql import Raw, in_list
from app.subscriptions import OPT_OUT_EVENTS

_OPT_OUTS = frozenset(e.value for e in OPT_OUT_EVENTS)


def _iso(value: datetime | str | None) -> str | None:
    if isinstance(value, str):  # a renamed column read back from SQLite: the stored text
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def evidence(conn: Connection, *, brand: str, phone: str, programs: list[str]) -> dict[str, Any]:
    """The pack as the API returns it (the console prints the same)."""
    raw = Raw(conn)
    key = phone_key(phone)
    numbers = {"phone": phone, "alias": pseudonym(key), "brand": brand}
    subs = {r["program"]: r for r in raw.rows(
        "SELECT program, status, subscribed_at, unsubscribed_at, opted_out_at, consent_source, consented_at"
        " FROM subscriptions WHERE brand = :brand AND phone IN (:phone, :alias)", numbers)}
    events = raw.rows(
        "SELECT e.*, k.prefix AS api_key_prefix FROM consent_events e LEFT JOIN api_keys k ON k.id = e.api_key_id"
        " WHERE e.brand = :brand AND e.phone_key = :key ORDER BY e.chain_seq, e.id", {"brand": brand, "key": key})
    params: dict[str, Any] = {"brand": brand}
    message_ids = sorted({e["provider_message_id"] for e in events if e["provider_message_id"]})
    inbound: dict[str, dict[str, Any]] = {}
    if message_ids:
        inbound = {r["message_id"]: r for r in raw.rows(
            "SELECT provider, message_id, \"to\", body, received_at, channel FROM inbound_messages"
            f" WHERE brand = :brand AND message_id IN {in_list('m', message_ids, params)}", params)}
    sent = raw.rows(
        "SELECT o.id, o.program, o.purpose, o.body, o.status, o.from_number, o.provider_message_id, o.created_at,"
        " o.sent_at, o.error_code, d.status AS receipt_status, d.updated_at AS receipt_at,"
        " d.error_code AS receipt_error FROM outbox o LEFT JOIN delivery_reports d ON d.message_id = o.provider_message_id"
        " WHERE o.brand = :brand AND o.phone IN (:phone, :alias) AND o.channel = 'sms' ORDER BY o.id", numbers)
    check = verify(conn, brand=brand, phone=phone)
    by_program: dict[str, list[dict[str, Any]]] = {}
    used: set[int] = set()
    for e in events:
        by_program.setdefault(e["program"], []).append(_event(e, inbound, sent, used))
    order = [p for p in programs if p in by_program or p in subs] + sorted(
        (set(by_program) | set(subs)) - set(programs))
    out = []
    for program in order:
        history = by_program.get(program, [])
        sub = subs.get(program)
        out.append({
            "program": program or None,
            "status": sub["status"] if sub else "none",
            "subscribedAt": _iso(sub["subscribed_at"]) if sub else None,
            "optedOutAt": _iso(sub["opted_out_at"]) if sub else None,
            "events": history,
            "optOuts": [{"eventId": h["id"], "event": h["event"], "at": h["at"], "source": h["source"],
                         "keyword": h["keyword"], "reason": h["reason"]} for h in history if h["event"] in _OPT_OUTS],
            "otherTexts": [_text(s) for s in sent if s["id"] not in used and (s["program"] or "") == program],
        })
    erased_at = is_erased(conn, brand=brand, phone=phone)
    return {"brand": brand, "phoneNumber": phone, "phoneKey": key, "erasedAt": _iso(erased_at), "programs": out,
            "verification": check.json()}


def _text(row: dict[str, Any]) -> dict[str, Any]:
    return {"outboxId": row["id"], "purpose": row["purpose"], "text": row["body"], "from": row["from_number"],
            "status": row["status"], "providerMessageId": row["provider_message_id"],
            "queuedAt": _iso(row["created_at"]), "sentAt": _iso(row["sent_at"]),
            "receipt": None if row["receipt_status"] is None else {
                "status": row["receipt_status"], "at": _iso(row["receipt_at"]), "errorCode": row["receipt_error"]}}


def _event(e: dict[str, Any], inbound: dict[str, dict[str, Any]], sent: list[dict[str, Any]],
           used: set[int]) -> dict[str, Any]:
    text = inbound.get(e["provider_message_id"] or "")
    reply = None
    if e["reply_purpose"] is not None:
        # The reply was queued in the event's own transaction: same program (or the brand's), purpose and time.
        row = next((s for s in sent if s["id"] not in used and s["purpose"] == e["reply_purpose"]
                    and s["created_at"] == e["created_at"]), None)
        if row is not None:
            used.add(row["id"])
        reply = {"purpose": e["reply_purpose"], "text": e["reply_text"], "sha256": e["reply_sha256"],
                 "sent": _text(row) if row is not None else None}
    return {
        "id": e["id"], "seq": e["chain_seq"], "event": e["event"], "fromStatus": e["from_status"],
        "toStatus": e["to_status"], "source": e["source"], "at": _iso(e["created_at"]), "keyword": e["keyword"],
        "reason": e["reason"], "rulesSha256": e["rules_sha256"], "hash": e["hash"], "prevHash": e["prev_hash"],
        "inbound": None if not e["provider_message_id"] else {
            "providerMessageId": e["provider_message_id"], "text": e["raw_text"], "textSha256": e["raw_text_sha256"],
            "provider": text["provider"] if text else None, "to": text["to"] if text else None,
            "channel": text["channel"] if text else None, "receivedAt": _iso(text["received_at"]) if text else None},
        "api": None if e["api_key_id"] is None and e["consent_source"] is None else {
            "apiKeyId": e["api_key_id"], "apiKeyPrefix": e["api_key_prefix"], "consentSource": e["consent_source"],
            "consentProof": e["consent_proof"], "consentedAt": _iso(e["consented_at"])},
        "reply": reply,
    }


__all__ = ["evidence"]
