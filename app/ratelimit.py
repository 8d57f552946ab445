"""Each sender's send rate, kept together by every process on the database.

Carriers and providers let a sender send only so fast: a long code one text a second, a
toll-free number three, a short code or a Messaging Service a hundred. Several `serve` and
`worker` processes send from the same numbers, so where a sender stands lives in the
database, one row per sender in `sender_rates`, and `take` asks it for a slot right before
a send.

The rule is GCRA (the generic cell rate algorithm, in its virtual-scheduling form). Each
sender has a theoretical arrival time (TAT): when its next message would be due if it had
always sent at exactly `rate`. With the emission interval T = 1/rate, a message at `now` is
allowed when max(TAT, now) + T - now ≤ burst·T (the tolerance, `burst`/rate), and then TAT
becomes max(TAT, now) + T. So after an idle spell `burst` messages may go back to back, and
over any window of W seconds at most rate·W + burst go out. Refused, the caller learns how
long until the next slot: TAT - (now + burst·T - T). One number per sender, whatever the
rate, and no background refill: idleness is simply a TAT in the past.

The TAT is stored as whole microseconds since the Unix epoch in a BIGINT. Integers add and
compare exactly and alike on SQLite and PostgreSQL (a float of seconds would round, and a
timestamp is text on SQLite); a microsecond is the resolution of `datetime`, so `now`
converts exactly. T is rounded up to the microsecond, so a sender never goes faster than
its rate (3/s becomes one text every 333,334 µs).

Concurrency. A slot is taken with one statement, an upsert whose update is conditional:

    INSERT … ON CONFLICT (sender) DO UPDATE SET tat_us = … WHERE <slot free> RETURNING tat_us

A row back means the slot is ours and recorded; no row means it was refused, and a second
statement reads the TAT to say how long to wait. We chose this over SELECT … FOR UPDATE
because the granted path, the common one, is one round trip and needs no row to exist
first (FOR UPDATE locks nothing when the sender's row is missing, so two first takes would
both insert or one would fail on the key).
- PostgreSQL: ON CONFLICT DO UPDATE locks the conflicting row and evaluates SET and WHERE
  against its latest committed version, even under READ COMMITTED and even when WHERE turns
  out false. Two processes taking for one sender queue on that row lock: the second sees
  the first's TAT once it commits, so they can never both get one slot. Two first takes
  meet on the primary key: one inserts, the other waits for it and then takes the update
  path. The refused path's SELECT runs while we hold the row lock, so it reads the TAT the
  upsert judged. The lock is held until the caller commits: keep the transaction short, and
  when one transaction takes for several senders, take them in one fixed order (or lock
  them first, as `app.db.lock_phones` does phones), else two transactions may deadlock.
- SQLite: one write lock guards the whole file, and a write transaction holds it until it
  commits; the writers of all processes sharing the file (one connection each, beginning
  IMMEDIATE) queue on it, so their transactions are serial and the same statements are
  correct as they are. (A transaction that read before writing on a stale snapshot gets
  SQLITE_BUSY rather than a second slot.)
Clocks: `now` is the caller's. Processes on several hosts should keep their clocks in step
(NTP): a host whose clock runs ahead spends slots early, one behind waits longer.

Cost, the median of 2,000 takes each in its own transaction, timing the call alone (commit
excluded), on 2 shared cores under load: SQLite 3.40 (WAL file) ≈ 30 µs granted, ≈ 15 µs
refused (the upsert writes nothing); PostgreSQL 15 on 127.0.0.1 ≈ 130–200 µs granted (one
round trip), ≈ 200–280 µs refused (two).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection

from app.sql import Raw

MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# A new sender starts at `next`; a known one moves its TAT on by one interval, from now if
# it has been idle, but only while `tat_us <= latest` (the slot is free).
_TAKE = (
    "INSERT INTO sender_rates (sender, tat_us, updated_at) VALUES (:sender, :next, :now)"
    " ON CONFLICT (sender) DO UPDATE SET"
    " tat_us = CASE WHEN sender_rates.tat_us > :now_us THEN sender_rates.tat_us + :interval ELSE :next END,"
    " updated_at = :now"
    " WHERE sender_rates.tat_us <= :latest"
    " RETURNING tat_us"
)
_TAT = "SELECT tat_us FROM sender_rates WHERE sender = :sender"


def take(conn: Connection, now: datetime, *, sender: str, rate: float, burst: float = 1.0) -> float:
    """Take one send slot of `sender` at `now`: 0.0 when taken (and recorded), else the seconds until one frees.

    Runs in the caller's transaction and never commits. `rate` is messages a second,
    `burst` how many may go back to back after an idle spell (at least 1).
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of messages a second, not {rate!r}")
    if not (burst >= 1 and math.isfinite(burst)):
        raise ValueError(f"burst must be at least 1, not {burst!r}")
    interval = math.ceil(MICROS / rate)
    now_us = (now - _EPOCH) // _MICROSECOND  # exact; raises on a naive `now`
    # A TAT up to `latest` leaves room for one more: max(TAT, now) + interval - now <= burst * interval.
    latest = now_us + int(burst * interval) - interval
    raw = Raw(conn)
    params = {"sender": sender, "now": now, "now_us": now_us, "interval": interval, "next": now_us + interval,
              "latest": latest}
    if raw.execute(_TAKE, params).fetchone() is not None:
        return 0.0
    tat = raw.scalar(_TAT, {"sender": sender})
    # The upsert refused because tat > latest; the row is ours (locked or serialised) meanwhile.
    return max(int(tat) - latest, 1) / MICROS
