"""The console's sign-in throttle: it slows whoever guesses, never locks the owner out.

Failures are counted per (email, client address), and per address whatever the email, in
`console_sign_in_attempts`, so every `serve` process on the database sees the same counts.
A few failures are free; past them each try must wait twice as long as the one before
(1 s, 2 s, 4 s, … up to `MAX_WAIT`), measured from that try. It is a delay, not a lock: the
right password is let in as soon as the wait is over, and the same email from another
address is not slowed at all, so an attacker hammering the owner's email from elsewhere
costs the owner nothing. A correct password clears the email's count for that address.

Each try is counted *before* its password is checked, in one transaction with the check
of the wait (the row locked on PostgreSQL, the file's write lock on SQLite): a hundred
guesses sent at once get the same treatment as a hundred sent one after another.

IPv6 clients are counted by their /64 network (one host usually holds the whole /64 and
can pick any address in it). Behind a reverse proxy the client address is the proxy's
unless the server is told to trust its forwarded headers (docs/console.md).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.db import UtcDateTime
from app.models import console_sign_in_attempts as attempts

FREE_PER_ACCOUNT = 5  # failures of one email from one address before any wait
FREE_PER_ADDRESS = 20  # failures from one address, all emails together
FIRST_WAIT = 1.0  # seconds, after the free failures; doubled by each further failure
MAX_WAIT = 15 * 60.0
FORGET_AFTER = timedelta(days=1)  # a count untouched this long starts again from zero
ANY_ACCOUNT = "*"
MAX_ADDRESS = 64


def client_key(host: str | None) -> str:
    """The address a client is counted under: the IP (IPv6: its /64 network), or the raw text."""
    if not host:
        return "-"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:MAX_ADDRESS]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def wait_after(failures: int, free: int) -> float:
    """Seconds the next try waits after `failures` failures of which `free` cost nothing."""
    extra = failures - free
    if extra <= 0:
        return 0.0
    return min(MAX_WAIT, FIRST_WAIT * 2 ** min(extra - 1, 32))


@dataclass(frozen=True)
class Verdict:
    """What the throttle says about one try: go ahead (wait 0), or wait this many seconds."""

    wait: float

    @property
    def retry_after(self) -> int:
        """The wait as a Retry-After header value (whole seconds, at least 1 when waiting)."""
        return max(1, math.ceil(self.wait)) if self.wait > 0 else 0


def _keys(email: str, address: str) -> list[tuple[str, str, int]]:
    # Always in this order, so two tries lock their rows in the same order and never deadlock.
    return [(email[:254], address, FREE_PER_ACCOUNT), (ANY_ACCOUNT, address, FREE_PER_ADDRESS)]


def begin_try(conn: Connection, now: datetime, *, email: str, address: str) -> Verdict:
    """Check the wait for a sign-in and, when it may go ahead, count it as failed until it succeeds.

    A writer job: runs in the caller's transaction, never commits.
    """
    keys = _keys(email, address)
    rows = {}
    for account, addr, _free in keys:
        conn.execute(_insert_missing(conn), {"account": account, "address": addr, "now": now})
        rows[account] = conn.execute(
            sa.select(attempts.c.failures, attempts.c.last_failed_at, attempts.c.blocked_until)
            .where(attempts.c.account == account, attempts.c.address == addr).with_for_update()
        ).one()
    wait = max(((row.blocked_until - now).total_seconds() for row in rows.values()
                if row.blocked_until is not None and row.blocked_until > now), default=0.0)
    if wait > 0:
        return Verdict(wait)
    for account, addr, free in keys:
        row = rows[account]
        failures = (0 if row.last_failed_at < now - FORGET_AFTER else row.failures) + 1
        pause = wait_after(failures, free)
        conn.execute(attempts.update().where(attempts.c.account == account, attempts.c.address == addr).values(
            failures=failures, last_failed_at=now, blocked_until=now + timedelta(seconds=pause) if pause else None))
    # Rows nobody has failed from for a day are forgotten (their count would start again anyway).
    conn.execute(attempts.delete().where(attempts.c.last_failed_at < now - FORGET_AFTER))
    return Verdict(0.0)


def succeeded(conn: Connection, now: datetime, *, email: str, address: str) -> None:
    """The password was right: forget the email's failures from this address and take back this try's count."""
    (account, addr, _f), (_any, _a, free) = _keys(email, address)
    conn.execute(attempts.delete().where(attempts.c.account == account, attempts.c.address == addr))
    row = conn.execute(sa.select(attempts.c.failures).where(attempts.c.account == ANY_ACCOUNT,
                                                            attempts.c.address == addr).with_for_update()).first()
    if row is not None:
        failures = max(row.failures - 1, 0)
        pause = wait_after(failures, free)
        conn.execute(attempts.update().where(attempts.c.account == ANY_ACCOUNT, attempts.c.address == addr).values(
            failures=failures, blocked_until=now + timedelta(seconds=pause) if pause else None))


def forget_account(conn: Connection, *, email: str) -> None:
    """Clear an email's failures from every address (its password was just reset)."""
    conn.execute(attempts.delete().where(attempts.c.account == email))


def _insert_missing(_conn: Connection) -> sa.TextClause:
    # The same text on both engines: a first failure and a concurrent one meet on the primary key.
    return sa.text("INSERT INTO console_sign_in_attempts (account, address, failures, last_failed_at)"
                   " VALUES (:account, :address, 0, :now) ON CONFLICT (account, address) DO NOTHING"
                   ).bindparams(sa.bindparam("now", type_=UtcDateTime))
