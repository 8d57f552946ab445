"""Every read the console makes, in SQLAlchemy Core; the routes and templates hold no SQL.

Each function takes a connection and the signed-in user's brand, and never returns
another brand's rows.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.auth import ApiKeyInfo
from app.models import api_keys, consent_events, inbound_messages, outbox, subscriptions
from app.subscriptions import Status

LEDGER_PAGE = 100
TIMELINE_LIMIT = 500  # per kind of row: a phone with more shows its newest
CSV_BATCH = 1000
# A spreadsheet runs a cell that starts with one of these as a formula; a text's body is
# whatever the sender typed (OWASP "CSV injection"), so such cells get a leading apostrophe.
# A spreadsheet whose locale separates fields with ";" (most of Europe) splits
# `STOP;=cmd|' /C calc'!A0` into two cells, the second a formula: every piece after a ";"
# or "," that would start with one gets its apostrophe too.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_PIECE = re.compile(r"([;,])(\s*)(?=[=+\-@\t\r])")
_FREE_TEXT = frozenset({"raw_text", "keyword", "reason", "consent_source", "consent_proof"})
LEDGER_COLUMNS = tuple(c.name for c in consent_events.columns)  # as `optline export consent` writes them


@dataclass(frozen=True)
class TimelineItem:
    """One row of a phone's timeline: a text in, a text out, or a consent event."""

    kind: str  # "inbound" | "outbound" | "consent"
    at: datetime
    id: int
    program: str | None
    row: dict[str, Any]  # the columns of its table (for consent events, api_key_prefix too)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def timeline(conn: Connection, *, brand: str, phone: str,
             limit: int = TIMELINE_LIMIT) -> tuple[list[TimelineItem], bool]:
    """The phone's texts and consent events with this brand, oldest first; True when older rows were left out."""
    inbound = conn.execute(
        sa.select(inbound_messages).where(inbound_messages.c.from_phone == phone, inbound_messages.c.brand == brand)
        .order_by(inbound_messages.c.id.desc()).limit(limit + 1)
    ).mappings().all()
    sent = conn.execute(
        sa.select(outbox).where(outbox.c.brand == brand, outbox.c.phone == phone, outbox.c.channel == "sms")
        .order_by(outbox.c.id.desc()).limit(limit + 1)
    ).mappings().all()
    events = conn.execute(
        sa.select(consent_events, api_keys.c.prefix.label("api_key_prefix"))
        .select_from(consent_events.outerjoin(api_keys, api_keys.c.id == consent_events.c.api_key_id))
        .where(consent_events.c.brand == brand, consent_events.c.phone == phone)
        .order_by(consent_events.c.id.desc()).limit(limit + 1)
    ).mappings().all()
    truncated = any(len(rows) > limit for rows in (inbound, sent, events))
    items = [TimelineItem("inbound", _aware(r["received_at"]), r["id"], r["program"], dict(r)) for r in inbound[:limit]]
    items += [TimelineItem("outbound", _aware(r["created_at"]), r["id"], r["program"], dict(r)) for r in sent[:limit]]
    items += [TimelineItem("consent", _aware(r["created_at"]), r["id"], r["program"], dict(r)) for r in events[:limit]]
    # A text comes before the consent event and the reply it caused, which share its instant or follow it.
    order = {"inbound": 0, "consent": 1, "outbound": 2}
    items.sort(key=lambda item: (item.at, order[item.kind], item.id))
    return items, truncated


@dataclass(frozen=True)
class LedgerFilter:
    """What the ledger page and its CSV are narrowed to; None means any."""

    phone: str | None = None
    program: str | None = None
    event: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def _ledger_where(brand: str, where: LedgerFilter) -> list[sa.ColumnElement[bool]]:
    clauses = [consent_events.c.brand == brand]
    if where.phone is not None:
        clauses.append(consent_events.c.phone == where.phone)
    if where.program is not None:
        clauses.append(consent_events.c.program == where.program)
    if where.event is not None:
        clauses.append(consent_events.c.event == where.event)
    if where.since is not None:
        clauses.append(consent_events.c.created_at >= where.since)
    if where.until is not None:
        clauses.append(consent_events.c.created_at < where.until)
    return clauses


def ledger_page(conn: Connection, *, brand: str, where: LedgerFilter, before_id: int | None = None,
                limit: int = LEDGER_PAGE) -> tuple[list[dict[str, Any]], int | None]:
    """The newest events matching `where` (older than `before_id`), and the id to page on from, or None at the end."""
    clauses = _ledger_where(brand, where)
    if before_id is not None:
        clauses.append(consent_events.c.id < before_id)
    rows = conn.execute(
        sa.select(consent_events, api_keys.c.prefix.label("api_key_prefix"))
        .select_from(consent_events.outerjoin(api_keys, api_keys.c.id == consent_events.c.api_key_id))
        .where(*clauses).order_by(consent_events.c.id.desc()).limit(limit + 1)
    ).mappings().all()
    more = len(rows) > limit
    page = [dict(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if more and page else None)


def csv_cell(column: str, value: Any) -> str:
    """One ledger value as CSV text: times in ISO 8601, JSON as JSON, nothing as empty.

    Free text a phone or a client wrote never opens a spreadsheet formula: a cell starting
    with one of = + - @ tab CR gets a leading apostrophe, and so does every piece after a ";"
    or "," inside it, because a spreadsheet whose locale separates with ";" splits
    `STOP;=cmd|' /C calc'!A0` into a second cell, quotes or not (the writers quote every
    cell all the same).
    """
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    if column in _FREE_TEXT:
        return neutralise(text)
    return text


def neutralise(text: str) -> str:
    """Free text made safe for a spreadsheet: no cell, nor piece after a ; or , separator, starts a formula."""
    text = _FORMULA_PIECE.sub(r"\1\2'", text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def ledger_csv(engine: Engine, *, brand: str, where: LedgerFilter) -> Iterator[str]:
    """The matching ledger as CSV text chunks, oldest first, read in batches on one connection.

    A generator: the web layer runs each step in a thread, so the rows never pass through
    the event loop, and memory stays one batch whatever the ledger's size.
    """
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)  # see csv_cell
    writer.writerow(LEDGER_COLUMNS)
    yield out.getvalue()
    query = sa.select(consent_events).where(*_ledger_where(brand, where)).order_by(consent_events.c.id)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=CSV_BATCH).execute(query)
        for batch in result.partitions():
            out.seek(0)
            out.truncate()
            for row in batch:
                values = row._mapping
                writer.writerow([csv_cell(c, values[c]) for c in LEDGER_COLUMNS])
            yield out.getvalue()


def brand_keys(conn: Connection, *, brand: str) -> list[ApiKeyInfo]:
    """The brand's API keys, newest first."""
    rows = conn.execute(sa.select(api_keys).where(api_keys.c.brand == brand).order_by(api_keys.c.id.desc()))
    return [ApiKeyInfo(r.id, r.brand, r.name, r.prefix, r.created_at, r.revoked_at) for r in rows]


def key_brand(conn: Connection, *, prefix: str) -> str | None:
    """The brand of the key with this prefix, or None."""
    return conn.execute(sa.select(api_keys.c.brand).where(api_keys.c.prefix == prefix)).scalar()


FLAGGED_LIMIT = 200


@dataclass(frozen=True)
class FlaggedText:
    """One flagged text awaiting a person's decision."""

    id: int
    phone: str | None
    address: str | None  # the sender's address when it is not a phone (messenger:…)
    received_at: datetime
    body: str
    program: str | None
    channel: str


    to: str = ""  # the number (or service) it was sent to
    service_id: str | None = None
    resolution: str | None = None  # "opted_out" | "dismissed" once decided
    resolved_at: datetime | None = None
    resolved_by: str | None = None


def _flagged(rows: Any) -> list[FlaggedText]:
    return [FlaggedText(r.id, r.from_phone, r.from_address, _aware(r.received_at), r.body, r.program, r.channel, r.to,
                        r.service_id, r.flag_resolution,
                        _aware(r.flag_resolved_at) if r.flag_resolved_at else None, r.flag_resolved_by)
            for r in rows]


def flagged_texts(conn: Connection, *, brand: str, limit: int = FLAGGED_LIMIT) -> list[FlaggedText]:
    """The brand's unresolved flagged texts, newest first."""
    m = inbound_messages.c
    return _flagged(conn.execute(
        sa.select(inbound_messages).where(m.brand == brand, m.flagged == sa.true(), m.flag_resolution.is_(None))
        .order_by(m.id.desc()).limit(limit)
    ))


def flag_decisions(conn: Connection, *, brand: str, limit: int = 50) -> list[FlaggedText]:
    """The brand's most recently decided flagged texts, with who decided what and when (newest texts first)."""
    m = inbound_messages.c
    # Walks the (brand, flagged, id) index from the newest; decided texts are the flagged ones with a resolution.
    return _flagged(conn.execute(
        sa.select(inbound_messages).where(m.brand == brand, m.flagged == sa.true(), m.flag_resolution.is_not(None))
        .order_by(m.id.desc()).limit(limit)
    ))


def flagged_phone(conn: Connection, *, brand: str, message_id: int) -> tuple[bool, str | None]:
    """(found, phone) of the brand's unresolved flagged text with this id; found is False for any other row."""
    m = inbound_messages.c
    row = conn.execute(
        sa.select(m.from_phone).where(m.id == message_id, m.brand == brand, m.flagged == sa.true(),
                                      m.flag_resolution.is_(None))
    ).first()
    return (row is not None, row.from_phone if row is not None else None)


@dataclass(frozen=True)
class ProgramLine:
    """One line of a phone's header: where it stands in one program and how it got there."""

    program: str
    status: str
    since: datetime | None  # when it entered that status
    how: str | None  # "keyword JOIN", "API with proof", "import", "console", …
    how_detail: str | None  # the consent source, proof or text behind it
    joined_at: datetime | None
    last_opt_out: dict[str, Any] | None  # the latest opt-out event: created_at, source, event, reason, consent_source


def _how(event: dict[str, Any]) -> tuple[str, str | None]:
    """How a phone came to join, from the consent event that made it join."""
    source, kind = event["source"], event["event"]
    if kind.startswith("api_opt_in"):
        proof = event.get("consent_proof") or {}
        detail = ", ".join(str(v) for v in [event.get("consent_source"), *proof.values()] if v)
        return ("API with proof" if proof or event.get("consent_source") else "API"), detail or None
    if source == "import":
        return "import", event.get("consent_source")
    if source == "console":
        return "console", event.get("consent_source")
    if event.get("keyword"):
        channel = "" if source == "sms" else f" ({source})"
        return f"keyword {event['keyword']}{channel}", event.get("raw_text")
    return source, event.get("raw_text")


_ACTIVE = (Status.SUBSCRIBED.value, Status.PENDING.value)
HEADER_EVENTS = 5000  # a phone with more consent events with one brand has its header read from the newest


def phone_header(conn: Connection, *, brand: str, phone: str) -> list[ProgramLine]:
    """Per program the phone has a subscription in: status, since when, how it joined, its last opt-out."""
    subs = conn.execute(sa.select(subscriptions).where(subscriptions.c.brand == brand, subscriptions.c.phone == phone)
                        .order_by(subscriptions.c.program)).mappings().all()
    events = conn.execute(
        sa.select(consent_events).where(consent_events.c.brand == brand, consent_events.c.phone == phone)
        .order_by(consent_events.c.id.desc()).limit(HEADER_EVENTS)
    ).mappings().all()
    lines = []
    for sub in subs:
        mine = [e for e in events if e["program"] == sub["program"]]  # newest first
        joined = next((e for e in mine if e["to_status"] in _ACTIVE and e["from_status"] not in _ACTIVE), None)
        confirmed = next((e for e in mine if e["to_status"] == Status.SUBSCRIBED.value
                          and e["from_status"] != Status.SUBSCRIBED.value), None)
        entered = next((e for e in mine if e["to_status"] == sub["status"] and e["from_status"] != sub["status"]), None)
        left = next((e for e in mine if e["to_status"] == Status.UNSUBSCRIBED.value
                     and e["from_status"] != Status.UNSUBSCRIBED.value), None) or \
            next((e for e in mine if e["to_status"] == Status.UNSUBSCRIBED.value), None)
        how, detail = _how(dict(joined)) if joined is not None else (None, None)
        if confirmed is not None and joined is not None and confirmed["id"] != joined["id"] and \
                sub["status"] == Status.SUBSCRIBED.value:
            how = f"{how}, confirmed by {'keyword ' + confirmed['keyword'] if confirmed['keyword'] else confirmed['source']}"
        since = _aware(entered["created_at"]) if entered is not None else (
            _aware(sub["updated_at"]) if sub["updated_at"] else None)
        lines.append(ProgramLine(sub["program"], sub["status"], since, how, detail,
                                 _aware(joined["created_at"]) if joined is not None else None,
                                 dict(left) if left is not None else None))
    return lines
