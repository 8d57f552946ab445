"""Opt-out lists in and out: import a brand's suppression list, export it.

An import (`POST /v1/opt-outs/import`, `optline import opt-outs FILE --brand B`) reads a JSON
array of objects or a CSV file, streamed, row by row: `phoneNumber` (required), `optedOutAt`
(RFC 3339 with offset; default: now) and `program` (default: every program of the brand).
Each row opts the phone out of those programs with a consent event of source `import`,
naming the batch (`imp_…`) and the row's line; the given time is the opt-out's time. A row
whose phone is already opted out changes nothing, so importing the same list twice changes
nothing the second time; a row older than the phone's own later join does not undo that
join. Bad rows are reported by line and the rest applied. Rows are applied in chunks, each
one writer transaction with its phones locked, a few statements a chunk (app.consent.Writes).

`GET /v1/opt-outs?since=` pages the suppression list: every (phone, program) whose status is
unsubscribed, by the time of the opt-out.
"""

from __future__ import annotations

import base64
import codecs
import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from app import status_counts
from app.consent import Proof, Sub, Writes, apply_event
from app.errors import InvalidInput
from app.events import EVENT_COLUMNS, event_row, iso
from app.holds import per_phone
from app.keywords import Brand
from app.metrics import note_transition
from app.models import new_id
from app.outbox.queue import cancel_queued
from app.phone import to_e164
from app.sql import Raw
from app.subscriptions import CLOCK_SKEW, Event, Source, Status

# Rows a writer transaction. Each row's phone is locked for the transaction; on PostgreSQL that is an
# advisory lock in the shared lock table, which a default server sizes for 6,400 locks across every
# session (max_locks_per_transaction 64 x max_connections 100): a 10,000-row chunk ran it out of
# shared memory while other sessions held locks. 2,000 leaves room, and keeps SQLite's single
# writer free for inbound texts between chunks.
CHUNK = 2000
MAX_ROWS = 1_000_000
MAX_ERRORS = 1000  # bad rows reported (all are counted)
OPT_OUTS_IMPORTED = "opt_outs.imported"  # brand event: one per import, with its counts
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANP = re.compile(r"\+1[2-9]\d{9}")
_PHONE_NAMES = ("phonenumber", "phone_number", "phone", "number")
_TIME_NAMES = ("optedoutat", "opted_out_at", "at", "date")
_PROGRAM_NAMES = ("program",)


@dataclass(frozen=True)
class Row:
    """One valid row: a phone (E.164), the programs it leaves, when, and its line."""

    line: int
    phone: str
    programs: tuple[str, ...]
    at: datetime


@dataclass
class Tally:
    """What an import did so far."""

    batch_id: str
    rows: int = 0
    applied: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    rejected: int = 0

    def reject(self, line: int, message: str) -> None:
        """Count a bad row (and keep the first MAX_ERRORS for the report)."""
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((line, message))

    def as_json(self) -> dict[str, Any]:
        """The API's answer (OptOutImportOut)."""
        return {"batchId": self.batch_id, "rows": self.rows, "applied": self.applied, "unchanged": self.unchanged,
                "rejected": self.rejected, "errors": [{"line": line, "message": m} for line, m in self.errors]}


# --- reading ----------------------------------------------------------------------------------


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> Any:
    for key, value in record.items():
        if isinstance(key, str) and key.strip().lower() in names:
            return value
    return None


def parse_record(brand: Brand, line: int, record: Any, now: datetime) -> Row | str:
    """One row as read (a JSON object, or a CSV row as a dict): a Row, or why it is refused."""
    if not isinstance(record, dict):
        return "a row must be an object with phoneNumber"
    phone_raw = _pick(record, _PHONE_NAMES)
    if not isinstance(phone_raw, str) or not phone_raw.strip():
        return "phoneNumber is missing"
    phone_raw = phone_raw.strip()
    if _NANP.fullmatch(phone_raw):
        phone = phone_raw
    else:
        try:
            phone = to_e164(phone_raw, brand.default_region)
        except InvalidInput as exc:
            return f"phoneNumber: {exc.message}"
    at = now
    when = _pick(record, _TIME_NAMES)
    if when not in (None, ""):
        if not isinstance(when, str):
            return "optedOutAt must be an RFC 3339 time with an offset"
        try:
            at = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
        except ValueError:
            return f"optedOutAt: {when!r} is not an RFC 3339 time"
        if at.tzinfo is None:
            return "optedOutAt needs an offset (Z or +hh:mm)"
        try:
            at = at.astimezone(UTC)
        except OverflowError:
            return "optedOutAt is out of range"
        if at < EPOCH or at - now > CLOCK_SKEW:
            return "optedOutAt is before 1970 or in the future"
    program = _pick(record, _PROGRAM_NAMES)
    if program in (None, ""):
        programs = tuple(brand.programs)
    elif not isinstance(program, str) or program.strip() not in brand.programs:
        return f"unknown program {program!r}"
    else:
        programs = (program.strip(),)
    return Row(line=line, phone=phone, programs=programs, at=at)


class Bad(str):
    """Why the reader could not read a row (a CSV line with too many fields): reported by line, never applied."""


class Reader:
    """Rows of a JSON array or a CSV file fed in chunks of bytes (streamed): `feed` then `close`, each yielding
    (line, record | error message)."""

    def __init__(self, kind: str) -> None:
        if kind not in ("json", "csv"):
            raise ValueError(kind)
        self.kind = kind
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._text = ""
        self._line = 0
        self._header: list[str] | None = None
        self._started = False  # JSON: the opening [ was read
        self._ended = False  # JSON: the closing ] was read
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> Iterator[tuple[int, Any]]:
        """Rows completed by this chunk."""
        try:
            self._text += self._decoder.decode(data)
        except UnicodeDecodeError:
            raise InvalidInput("the file is not UTF-8 text", field="body") from None
        yield from (self._csv_lines(final=False) if self.kind == "csv" else self._json_items(final=False))

    def close(self) -> Iterator[tuple[int, Any]]:
        """The last rows; InvalidInput if the file ended mid-way."""
        self._text += self._decoder.decode(b"", final=True)
        yield from (self._csv_lines(final=True) if self.kind == "csv" else self._json_items(final=True))

    def _csv_lines(self, *, final: bool) -> Iterator[tuple[int, Any]]:
        # Parse everything up to the last line break where the quotes balance (a quoted field
        # may hold a newline), in one csv.reader pass; keep the rest for the next chunk.
        text = self._text
        cut = len(text) if final else text.rfind("\n") + 1
        while cut > 0 and text.count('"', 0, cut) % 2:
            if final:
                raise InvalidInput(f"a quoted field after line {self._line} is not closed", field="body")
            cut = text.rfind("\n", 0, cut - 1) + 1
        if cut <= 0:
            return
        self._text = text[cut:]
        # newline="": the reader sees the line breaks as written (a lone CR ends a line too), as
        # the csv module wants; what it still cannot read is a 400 naming where, never a 500.
        reader = csv.reader(io.StringIO(text[:cut], newline=""))
        base = self._line
        start = base + 1
        for values in _csv_rows(reader, base):
            line, start = start, base + reader.line_num + 1
            if not values or not any(v.strip() for v in values):
                continue
            if self._header is None:
                self._header = [v.strip() for v in values]
                if not any(h.lower() in _PHONE_NAMES for h in self._header):
                    raise InvalidInput("the CSV header must name a phoneNumber column", field="body")
                continue
            if len(values) > len(self._header):
                yield line, Bad(f"{len(values)} fields, the header has {len(self._header)}")
                continue
            yield line, dict(zip(self._header, values, strict=False))
        self._line = base + reader.line_num

    def _json_items(self, *, final: bool) -> Iterator[tuple[int, Any]]:
        text = self._text
        pos = 0
        n = len(text)

        def skip(p: int) -> int:
            while p < n and text[p] in " \t\r\n":
                p += 1
            return p

        pos = skip(pos)
        if not self._started:
            if pos >= n:
                self._text = text[pos:]
                if final:
                    raise InvalidInput("the body is empty: send a JSON array of rows", field="body")
                return
            if text[pos] != "[":
                raise InvalidInput("the body must be a JSON array of rows", field="body")
            self._started = True
            pos = skip(pos + 1)
        while pos < n and not self._ended:
            if text[pos] == "]":
                self._ended = True
                pos += 1
                break
            if text[pos] == ",":
                if self._line == 0:
                    raise InvalidInput("the JSON array starts with a comma", field="body")
                pos = skip(pos + 1)
                if pos >= n:
                    break
            try:
                value, end = self._json.raw_decode(text, pos)
            except json.JSONDecodeError:
                if final or n - pos > 1_000_000:
                    raise InvalidInput(f"row {self._line + 1} is not valid JSON", field="body") from None
                break  # the value continues in the next chunk
            except RecursionError:
                raise InvalidInput(f"row {self._line + 1} is nested too deep", field="body") from None
            if end == n and not final and isinstance(value, (int, float)):
                break  # a number may continue in the next chunk
            self._line += 1
            yield self._line, value
            pos = skip(end)
        self._text = text[pos:]
        if final:
            if not self._ended:
                raise InvalidInput("the JSON array is not closed", field="body")
            if self._text.strip():
                raise InvalidInput("text after the JSON array", field="body")


# --- applying ---------------------------------------------------------------------------------


def start(conn: Connection, now: datetime, *, brand: str, origin: str, api_key_id: int | None) -> str:
    """Record a new import; its batch id."""
    batch_id = new_id("imp_")
    Raw(conn).insert_rows("opt_out_imports", ("id", "brand", "origin", "api_key_id", "rows", "applied", "unchanged",
                                              "rejected", "created_at"),
                          [{"id": batch_id, "brand": brand, "origin": origin, "api_key_id": api_key_id, "rows": 0,
                            "applied": 0, "unchanged": 0, "rejected": 0, "created_at": now}])
    return batch_id


_SUB_COLUMNS = ("id", "brand", "program", "phone", "status", "unsubscribed_at", "opted_out_at", "created_at",
                "updated_at")
_EVENT_COLUMNS = ("subscription_id", "brand", "program", "phone", "event", "from_status", "to_status", "source",
                  "api_key_id", "consent_source", "consent_proof", "consented_at", "created_at")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# RFC 4648 base32 → Crockford's, digit for digit: 10 random bytes are exactly 16 characters.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def _new_ids(prefix: str, n: int, now: datetime) -> list[str]:
    """`n` ids shaped like app.models.new_id (48-bit ms time in 10 characters, then 80 random bits in 16)."""
    ms = int(now.timestamp() * 1000)
    head = prefix + "".join(_CROCKFORD[(ms >> (5 * k)) & 31] for k in range(9, -1, -1))
    noise = os.urandom(10 * n)
    return [head + base64.b32encode(noise[10 * i:10 * i + 10]).translate(_TO_CROCKFORD).decode() for i in range(n)]


def _bulk_insert(raw: Raw, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Insert many rows: COPY on PostgreSQL (several times faster than INSERT for a chunk of thousands)."""
    if not raw.pg:
        raw.insert_rows(table, columns, rows)
        return
    with raw.cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(tuple(json.dumps(v) if isinstance(v, dict) else v for v in (row[c] for c in columns)))


def apply_rows(conn: Connection, now: datetime, *, brand: Brand, rows: list[Row], batch_id: str,
               api_key_id: int | None) -> tuple[int, int]:
    """Opt each row's phone out of its programs (with the phones locked); (applied, unchanged) rows.

    A (phone, program) never seen before (most of a first import) is written straight as an
    unsubscribed row and its event, a few statements for the chunk; one that exists goes
    through the transition table like any other opt-out (app.consent.apply_event).
    """
    raw = Raw(conn)
    phones = sorted({row.phone for row in rows})
    # What decides a row (status, the latest join) first; the whole row only for those that change.
    stored: dict[tuple[str, str], Sub] = {
        (r["phone"], r["program"]): Sub(values=r)
        for r in per_phone(raw, brand.key, phones, "phone, program, status, joined_at", "subscriptions")}
    live = sorted({p for (p, _program), sub in stored.items() if sub.status != Status.UNSUBSCRIBED.value})
    if live:
        stored.update({(r["phone"], r["program"]): Sub(values=r)
                       for r in per_phone(raw, brand.key, live, "*", "subscriptions")})
    writes = Writes()
    fresh: list[tuple[Row, str]] = []
    applied = unchanged = 0
    touched: set[str] = set()
    for row in rows:
        changed = False
        for program in row.programs:
            sub = stored.get((row.phone, program))
            if sub is None:
                fresh.append((row, program))
                # Later rows of this chunk see it opted out.
                stored[(row.phone, program)] = Sub(values={"status": Status.UNSUBSCRIBED.value, "joined_at": None})
                changed = True
                continue
            if sub.status == Status.UNSUBSCRIBED.value:
                continue  # already opted out: nothing changes
            if sub.joined_at is not None and sub.joined_at > row.at:
                continue  # the phone joined after this opt-out: a stale list does not undo it
            proof = Proof(source=Source.IMPORT, api_key_id=api_key_id, consent_source="import", consented_at=row.at,
                          consent_proof={"batchId": batch_id, "line": row.line})
            # brand=None: one opt_outs.imported event for the batch, not one per row.
            apply_event(writes, sub, Event.IMPORT_OPT_OUT, now=row.at, proof=proof, brand=None)
            sub.set(updated_at=now)
            changed = True
        if changed:
            applied += 1
            touched.add(row.phone)
        else:
            unchanged += 1
    writes.flush(conn)
    if fresh:
        ids = _new_ids("sub_", len(fresh), now)
        event, none, unsub = Event.IMPORT_OPT_OUT.value, Status.NONE.value, Status.UNSUBSCRIBED.value
        _bulk_insert(raw, "subscriptions", _SUB_COLUMNS, [
            {"id": sub_id, "brand": brand.key, "program": program, "phone": row.phone, "status": unsub,
             "unsubscribed_at": row.at, "opted_out_at": row.at, "created_at": now, "updated_at": now}
            for sub_id, (row, program) in zip(ids, fresh, strict=True)])
        _bulk_insert(raw, "consent_events", _EVENT_COLUMNS, [
            {"subscription_id": sub_id, "brand": brand.key, "program": program, "phone": row.phone, "event": event,
             "from_status": none, "to_status": unsub, "source": Source.IMPORT.value, "api_key_id": api_key_id,
             "consent_source": "import", "consent_proof": {"batchId": batch_id, "line": row.line},
             "consented_at": row.at, "created_at": row.at}
            for sub_id, (row, program) in zip(ids, fresh, strict=True)])
        for _row, program in fresh:
            note_transition(conn, brand=brand.key, program=program, event=event, from_status=none, to_status=unsub)
        status_counts.add(conn, Counter((brand.key, program, unsub) for _row, program in fresh))
    # Texts still queued to these phones are cancelled (only phones that have one: few, one query).
    queued = per_phone(raw, brand.key, sorted(touched), "DISTINCT phone", "outbox",
                       "channel = 'sms' AND status IN ('pending', 'sending')") if touched else []
    if queued:
        cancel_queued(conn, [{"brand": brand.key, "phone": r["phone"], "now": now} for r in queued], programs=None)
    return applied, unchanged


def finish(conn: Connection, now: datetime, *, brand: Brand, tally: Tally) -> None:
    """Record the import's counts, and tell the brand's CRM once."""
    Raw(conn).execute("UPDATE opt_out_imports SET rows = :rows, applied = :applied, unchanged = :unchanged,"
                      " rejected = :rejected, finished_at = :now WHERE id = :id",
                      {"rows": tally.rows, "applied": tally.applied, "unchanged": tally.unchanged,
                       "rejected": tally.rejected, "now": now, "id": tally.batch_id})
    event = event_row(now, brand=brand, type=OPT_OUTS_IMPORTED, data={
        "brand": brand.key, "batchId": tally.batch_id, "rows": tally.rows, "applied": tally.applied,
        "unchanged": tally.unchanged, "rejected": tally.rejected, "occurredAt": iso(now)})
    if event is not None:
        Raw(conn).insert_rows("outbox", EVENT_COLUMNS, [event])


def chunks(brand: Brand, tally: Tally, records: Iterable[tuple[int, Any]], now: datetime) -> Iterator[list[Row]]:
    """Valid rows in chunks of CHUNK, counting and reporting the bad ones in `tally`."""
    chunk: list[Row] = []
    for line, record in records:
        tally.rows += 1
        if tally.rows > MAX_ROWS:
            raise InvalidInput(f"an import holds at most {MAX_ROWS:,} rows", field="body")
        row = record if isinstance(record, Bad) else parse_record(brand, line, record, now)
        if isinstance(row, str):
            tally.reject(line, row)
            continue
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def stream_records(reader: Reader, body: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, Any]]:
    """Rows as the body arrives."""
    async for data in body:
        for item in reader.feed(data):
            yield item
    for item in reader.close():
        yield item


# --- exporting --------------------------------------------------------------------------------


def export_page(conn: Connection, *, brand: str, since: datetime | None, after: tuple[datetime, str] | None,
                limit: int) -> list[dict[str, Any]]:
    """Up to `limit` opted-out (phone, program) of the brand by (opted_out_at, id), after a position."""
    params: dict[str, Any] = {"brand": brand, "limit": limit, "unsub": Status.UNSUBSCRIBED.value}
    where = "brand = :brand AND status = :unsub AND opted_out_at IS NOT NULL"
    if since is not None:
        where += " AND opted_out_at >= :since"
        params["since"] = since
    if after is not None:
        where += " AND (opted_out_at > :at OR (opted_out_at = :at AND id > :id))"
        params.update(at=after[0], id=after[1])
    rows = Raw(conn).rows(f"SELECT id, phone, program, opted_out_at FROM subscriptions WHERE {where}"
                          " ORDER BY opted_out_at, id LIMIT :limit", params)
    if not rows:
        return rows
    # The source of each opt-out: the latest opt-out event of each (phone, program), one probe a phone.
    events = per_phone(Raw(conn), brand, sorted({r["phone"] for r in rows}), "id, phone, program, source",
                       "consent_events", "event IN ('stop', 'api_opt_out', 'carrier_opt_out', 'import_opt_out')")
    source = {(e["phone"], e["program"]): e["source"] for e in sorted(events, key=lambda e: e["id"])}
    for r in rows:
        r["source"] = source.get((r["phone"], r["program"]))
    return rows


def _csv_rows(reader: Any, base: int) -> Iterator[list[str]]:
    """The reader's rows; InvalidInput naming the line the csv module cannot read."""
    try:
        yield from reader
    except csv.Error as exc:
        raise InvalidInput(f"line {base + reader.line_num} is not CSV: {exc}", field="body") from None
