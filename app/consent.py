"""Stored subscriptions and the consent ledger: apply a transition, write its proof.

Callers own the transaction (and hold the phone's lock, see app.db.lock_phones); nothing
here commits. `apply_event` writes at once when handed a connection; handed a `Writes`, it
only records the rows, and `Writes.flush` writes everything recorded in a few statements
(the inbound webhook applies a whole batch of texts that way).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from app import status_counts
from app.events import EVENT_COLUMNS, SUBSCRIPTION_UPDATED, event_row, subscription_event
from app.keywords import Brand
from app.ledger import CHAIN_COLUMNS, link
from app.metrics import note_transition
from app.models import new_id, subscriptions
from app.sql import Raw, update_sql
from app.subscriptions import (JOIN_EVENTS, OPT_OUT_EVENTS, PHONE_JOIN_EVENTS, PHONE_SOURCES, Event, Source, Status,
                               Transition, transition)

_COLUMNS = tuple(c.name for c in subscriptions.columns)
_CONSENT_COLUMNS = ("subscription_id", "brand", "program", "phone", "event", "from_status", "to_status", "source",
                    "keyword", "provider_message_id", "raw_text", "api_key_id", "consent_source", "consent_proof",
                    "consented_at", "reason", "created_at", *CHAIN_COLUMNS)


@dataclass
class Sub:
    """A subscription row being worked on: its values, and which of them changed."""

    values: dict[str, Any]
    new: bool = False
    changes: dict[str, Any] = field(default_factory=dict)
    # The status the database holds (None: no row yet), so the flush knows what the write does
    # to the counts of app.status_counts.
    stored_status: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.stored_status = None if self.new else self.values.get("status")

    @classmethod
    def blank(cls, *, brand: str, program: str, phone: str, now: datetime) -> Sub:
        """A subscription that does not exist yet (status none)."""
        values = dict.fromkeys(_COLUMNS)
        values.update(
            id=new_id("sub_"), brand=brand, program=program, phone=phone,
            status=Status.NONE.value, created_at=now, updated_at=now,
        )
        return cls(values=values, new=True)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def status_enum(self) -> Status:
        """The status as a Status."""
        return Status(self.values["status"])

    def set(self, **values: Any) -> None:
        """Change columns (remembered for the next flush)."""
        for key, value in values.items():
            if self.values.get(key) != value or self.new:
                self.values[key] = value
                self.changes[key] = value


class Writes:
    """Subscription rows, consent events and brand events recorded now and written together by `flush`.

    A subscription is written once, with its final values: inserted if it was new, else
    updated in the columns that changed. Events keep the order they were recorded in.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._subs: dict[int, Sub] = {}  # by identity, in the order first touched
        self._consents: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._transitions: list[tuple[str, str, str, str]] = []

    def sub(self, sub: Sub) -> None:
        """Write `sub` (if it is new or has changed) at the flush."""
        self._subs.setdefault(id(sub), sub)

    def consent(self, row: dict[str, Any]) -> None:
        """Append one consent event row (columns _CONSENT_COLUMNS) to the ledger."""
        self._consents.append(row)
        self._transitions.append((row["program"], row["event"], row["from_status"], row["to_status"]))

    def reply(self, purpose: str, body: str, *, message_id: str | None = None) -> None:
        """Record the text of the reply sent with the consent events recorded so far (of that inbound text, if named)."""
        for row in self._consents:
            if row.get("reply_purpose") is None and (message_id is None or row["provider_message_id"] == message_id):
                row.update(reply_purpose=purpose, reply_text=body)

    def event(self, row: dict[str, Any] | None) -> None:
        """Queue one brand event row (app.events.event_row; None for a brand without events)."""
        if row is not None:
            self._events.append(row)

    def flush(self, conn: Connection) -> None:
        """Write what was recorded, in the caller's transaction, and forget it."""
        raw = Raw(conn)
        subs = list(self._subs.values())
        new = [sub.values for sub in subs if sub.new]
        if new:
            raw.insert_rows("subscriptions", _COLUMNS, new)
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for sub in subs:
            if not sub.new and sub.changes:
                updates.setdefault(tuple(sorted(sub.changes)), []).append({**sub.changes, "id": sub.values["id"]})
        for columns, rows in updates.items():
            raw.executemany(update_sql("subscriptions", columns), rows)
        counts: Counter[status_counts.Key] = Counter()
        for sub in subs:
            if sub.new or sub.changes:
                status_counts.changes(sub.stored_status, sub.values["status"], brand=sub.values["brand"],
                                      program=sub.values["program"], into=counts)
            sub.new = False
            sub.changes = {}
            sub.stored_status = sub.values["status"]
        status_counts.add(conn, counts)
        if self._consents:
            link(conn, self._consents, self._consents[-1]["created_at"])  # the tamper-evident chain, app.ledger
            raw.insert_rows("consent_events", _CONSENT_COLUMNS, self._consents)
        if self._events:
            raw.insert_rows("outbox", EVENT_COLUMNS, self._events)
        for row in self._consents:
            note_transition(conn, brand=row["brand"], program=row["program"], event=row["event"],
                            from_status=row["from_status"], to_status=row["to_status"])
        self._clear()


def load_subs(conn: Connection, *, brand: str, phone: str, programs: Iterable[str] | None = None) -> dict[str, Sub]:
    """The phone's stored subscriptions in this brand (optionally only these programs), by program."""
    wanted = None if programs is None else set(programs)
    rows = Raw(conn).rows("SELECT * FROM subscriptions WHERE brand = :brand AND phone = :phone",
                          {"brand": brand, "phone": phone})
    return {row["program"]: Sub(values=row) for row in rows if wanted is None or row["program"] in wanted}


@dataclass(frozen=True)
class Proof:
    """Where a consent event came from: the SMS that caused it, or the API call and its proof."""

    source: Source
    keyword: str | None = None
    message_id: str | None = None
    raw_text: str | None = None
    api_key_id: int | None = None
    consent_source: str | None = None
    consent_proof: Mapping[str, Any] | None = None
    consented_at: datetime | None = None
    reason: str | None = None  # why a text was read as an opt-out (the rule and the words that fired)


@dataclass(frozen=True)
class Applied:
    """What applying an event did."""

    before: Status
    after: Status
    rule: Transition

    @property
    def changed(self) -> bool:
        """True when the status moved."""
        return self.before != self.after


def apply_event(
    out: Connection | Writes,
    sub: Sub,
    event: Event,
    *,
    now: datetime,
    proof: Proof,
    brand: Brand | None,
    doi_expires_after: timedelta | None = None,
    language: str | None = None,
    sender: str | None = None,
    always_record: bool = False,
) -> Applied:
    """Move `sub` by the transition table, write it, and write a consent event when the status changed.

    `out` is the connection to write to now, or the `Writes` to record the rows in.

    `brand` is where `subscription.updated` goes (None only where the brand is unknown).
    `always_record` writes the event even without a change (an API opt-in re-stating consent
    with new proof is evidence worth keeping).
    """
    before = sub.status_enum
    rule = transition(before, event)
    after = rule.to if rule.to is not None else Status(sub.status_before_doi or Status.NONE.value)
    updates: dict[str, Any] = {"status": after.value, "updated_at": now}
    if after is Status.PENDING:
        if before is not Status.PENDING:
            updates["status_before_doi"] = before.value
        assert doi_expires_after is not None, "a DOI needs its expiry"
        updates.update(doi_requested_at=now, doi_expires_at=now + doi_expires_after, doi_expired_at=None)
    elif event is Event.EXPIRE:
        updates.update(doi_expires_at=None, doi_expired_at=now, status_before_doi=None)
    elif after is Status.SUBSCRIBED and before is not Status.SUBSCRIBED:
        updates.update(subscribed_at=now, unsubscribed_at=None, doi_expires_at=None, status_before_doi=None, doi_expired_at=None)
    elif after is Status.UNSUBSCRIBED and before is not Status.UNSUBSCRIBED:
        updates.update(unsubscribed_at=now, doi_expires_at=None, status_before_doi=None)
    if after is Status.UNSUBSCRIBED:
        # An opt-out also ends any "your request expired" conversation: nothing but the stop
        # reply may follow it.
        updates["doi_expired_at"] = None
    if event in OPT_OUT_EVENTS:
        # Every opt-out counts, even one that changes nothing: consent given before it is stale.
        updates["opted_out_at"] = now
        if proof.source in PHONE_SOURCES:
            # The phone closed it: only the phone reopens it (app.optin refuses the API, 409).
            updates.update(phone_opted_out_at=now, phone_opted_out_source=proof.source.value)
    elif event in JOIN_EVENTS and after in (Status.PENDING, Status.SUBSCRIBED):
        updates["joined_at"] = now
        if event in PHONE_JOIN_EVENTS and proof.source is Source.SMS:
            updates.update(phone_opted_out_at=None, phone_opted_out_source=None)
        if sender and event is not Event.CONFIRM:
            updates["joined_via"] = sender
    if proof.keyword and event not in (Event.STOP, Event.CARRIER_OPT_OUT, Event.API_OPT_OUT, Event.EXPIRE):
        updates["keyword"] = proof.keyword
    if language:
        updates["language"] = language
    if sender:
        updates["sender"] = sender
    if proof.source is Source.API and event in (Event.API_OPT_IN, Event.API_OPT_IN_DOI):
        updates.update(consent_source=proof.consent_source, consented_at=proof.consented_at)
    sub.set(**updates)
    writes = out if isinstance(out, Writes) else Writes()
    writes.sub(sub)
    applied = Applied(before=before, after=after, rule=rule)
    if applied.changed or always_record:
        record(writes, sub, event, before=before, after=after, now=now, proof=proof, brand=brand)
    if writes is not out:
        writes.flush(out)  # type: ignore[arg-type]
    return applied


def record(writes: Writes, sub: Sub, event: Event, *, before: Status, after: Status, now: datetime, proof: Proof,
           brand: Brand | None) -> None:
    """Append one consent event (the ledger is never updated or deleted) and tell the brand's CRM."""
    writes.consent({
        "subscription_id": sub.id, "brand": sub.brand, "program": sub.program, "phone": sub.phone,
        "event": event.value, "from_status": before.value, "to_status": after.value, "source": proof.source.value,
        "keyword": proof.keyword, "provider_message_id": proof.message_id, "raw_text": proof.raw_text,
        "api_key_id": proof.api_key_id, "consent_source": proof.consent_source,
        "consent_proof": dict(proof.consent_proof) if proof.consent_proof is not None else None,
        "consented_at": proof.consented_at, "reason": proof.reason, "created_at": now,
        "rules_sha256": brand.rules_sha256 or None if brand is not None else None,
    })
    if brand is not None and brand.events_url is not None:
        writes.event(event_row(now, brand=brand, type=SUBSCRIPTION_UPDATED, data=subscription_event(
            brand=sub.brand, program=sub.program, phone=sub.phone, subscription_id=sub.id, event=event,
            from_status=before, to_status=after, source=proof.source, occurred_at=now,
            keyword=proof.keyword, provider_message_id=proof.message_id)))
