"""One program's subscribers: filtered, searched, paged by keyset (never OFFSET), and as streamed CSV.

The list walks the subscriptions of (brand, program) in phone order, on the unique
(brand, program, phone) index, or on (brand, program, status, phone) when a status is
chosen; a page starts after the last phone of the previous one, so page 10,000 costs what
page 1 does. A number search is a range of that same index (a prefix of the E.164 number).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.console.queries import csv_cell
from app.models import subscriptions

PAGE = 50
CSV_BATCH = 2000
SOURCES = ("keyword", "api")  # how the phone joined: by texting a keyword, or by the API with proof
CSV_COLUMNS = ("phone", "status", "keyword", "consent_source", "consented_at", "joined_at", "subscribed_at",
               "unsubscribed_at", "opted_out_at", "sender", "language", "updated_at")
_FREE_TEXT_COLUMNS = frozenset({"keyword", "consent_source"})


@dataclass(frozen=True)
class SubscriberFilter:
    """What a program's list is narrowed to; None means any."""

    status: str | None = None
    source: str | None = None  # one of SOURCES
    keyword: str | None = None
    number: str | None = None  # digits the E.164 number starts with, "+" included
    joined_since: datetime | None = None  # inclusive
    joined_until: datetime | None = None  # exclusive
    left_since: datetime | None = None
    left_until: datetime | None = None


def _where(brand: str, program: str, f: SubscriberFilter) -> list[sa.ColumnElement[bool]]:
    s = subscriptions.c
    clauses: list[sa.ColumnElement[bool]] = [s.brand == brand, s.program == program]
    if f.status is not None:
        clauses.append(s.status == f.status)
    if f.source == "api":
        clauses.append(s.consent_source.is_not(None))
    elif f.source == "keyword":
        clauses.extend([s.keyword.is_not(None), s.consent_source.is_(None)])
    if f.keyword is not None:
        clauses.append(s.keyword == f.keyword)
    if f.number is not None:
        # A prefix as a range, so the phone index serves it (no LIKE, nothing to escape).
        clauses.extend([s.phone >= f.number, s.phone < f.number + "\U0010ffff"])
    for column, since, until in ((s.joined_at, f.joined_since, f.joined_until),
                                 (s.unsubscribed_at, f.left_since, f.left_until)):
        if since is not None:
            clauses.append(column >= since)
        if until is not None:
            clauses.append(column < until)
    return clauses


def subscriber_page(conn: Connection, *, brand: str, program: str, where: SubscriberFilter, after: str | None = None,
                    limit: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the program's subscriptions in phone order after phone `after`; and the phone to go on from."""
    clauses = _where(brand, program, where)
    if after is not None:
        clauses.append(subscriptions.c.phone > after)
    rows = conn.execute(sa.select(subscriptions).where(*clauses).order_by(subscriptions.c.phone).limit(limit + 1)
                        ).mappings().all()
    page = [dict(r) for r in rows[:limit]]
    return page, (page[-1]["phone"] if len(rows) > limit and page else None)


def subscribers_csv(engine: Engine, *, brand: str, program: str, where: SubscriberFilter) -> Iterator[str]:
    """Every matching subscription as CSV text chunks, in phone order, read in keyset batches.

    Batches on fresh short reads (never one long transaction holding a snapshot or a
    connection for the whole download), each starting after the last phone sent.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    after: str | None = None
    while True:
        with engine.connect() as conn:
            rows, after = subscriber_page(conn, brand=brand, program=program, where=where, after=after,
                                          limit=CSV_BATCH)
        out.seek(0)
        out.truncate()
        for row in rows:
            writer.writerow([csv_cell(c if c in _FREE_TEXT_COLUMNS else "_", row[c]) for c in CSV_COLUMNS])
        yield out.getvalue()
        if after is None:
            return
