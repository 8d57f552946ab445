"""How many subscriptions each brand's program has in each status, kept exact without counting them.

A (brand, program, status) count is the sum of its rows in `subscription_counts`. Whatever
writes a subscription's status adds signed rows in its own transaction (`add`: called by
`app.consent.Writes.flush` and by the opt-out import's bulk insert, the only two writers of
the column), so a count commits or rolls back with the rows it describes.

Rows are added, never updated: writers on PostgreSQL never wait for one another on a shared
counter row (nor deadlock over two of them). `compact` folds each key's rows into one now
and then (every serve process, beside the analytics rollup); `read` sums in one statement,
so it sees one snapshot whatever is being added or folded meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.models import subscription_counts
from app.sql import Raw

Key = tuple[str, str, str]  # brand, program, status
_COLUMNS = ("brand", "program", "status", "n")


def add(conn: Connection, deltas: Mapping[Key, int]) -> None:
    """Record changes to the counts (+1 a subscription entered the status, −1 it left), in the caller's
    transaction."""
    rows = [{"brand": b, "program": p, "status": s, "n": n} for (b, p, s), n in sorted(deltas.items()) if n]
    if rows:
        Raw(conn).insert_rows("subscription_counts", _COLUMNS, rows)


def changes(before: str | None, after: str, *, brand: str, program: str, into: Counter[Key]) -> None:
    """Add to `into` what one subscription going from `before` (None: a new row) to `after` does to the counts."""
    if before == after:
        return
    if before is not None:
        into[(brand, program, before)] -= 1
    into[(brand, program, after)] += 1


def read(conn: Connection, *, brand: str) -> dict[str, dict[str, int]]:
    """program -> status -> how many subscriptions of `brand` are in it (statuses with none left out)."""
    c = subscription_counts.c
    rows = conn.execute(sa.select(c.program, c.status, sa.func.sum(c.n)).where(c.brand == brand)
                        .group_by(c.program, c.status))
    counts: dict[str, dict[str, int]] = {}
    for program, status, n in rows:
        if n:
            counts.setdefault(program, {})[status] = int(n)
    return counts


def compact(conn: Connection) -> int:
    """Fold every key's rows into one (a writer job); how many rows went."""
    if conn.dialect.name == "postgresql":
        # One statement: it deletes the rows it can see and adds back exactly their sum, so rows
        # that other transactions add meanwhile (invisible to it) are left for the next time.
        # Only keys with more than one row are touched. A zero sum leaves no row.
        moved = conn.execute(sa.text(
            "WITH gone AS (DELETE FROM subscription_counts WHERE (brand, program, status) IN ("
            " SELECT brand, program, status FROM subscription_counts GROUP BY brand, program, status"
            " HAVING count(*) > 1) RETURNING brand, program, status, n),"
            " summed AS (SELECT brand, program, status, sum(n) AS n, count(*) AS k FROM gone"
            " GROUP BY brand, program, status),"
            " kept AS (INSERT INTO subscription_counts (brand, program, status, n)"
            " SELECT brand, program, status, n FROM summed WHERE n <> 0)"
            " SELECT coalesce(sum(k), 0) FROM summed")).scalar()
        return int(moved or 0)
    # SQLite: the writer holds the database's only write lock, so nothing is added meanwhile.
    upto = conn.execute(sa.text("SELECT max(id) FROM subscription_counts")).scalar()
    if upto is None:
        return 0
    many = ("(brand, program, status) IN (SELECT brand, program, status FROM subscription_counts"
            " WHERE id <= :upto GROUP BY brand, program, status HAVING count(*) > 1)")
    conn.execute(sa.text(
        "INSERT INTO subscription_counts (brand, program, status, n) SELECT brand, program, status, sum(n)"
        f" FROM subscription_counts WHERE id <= :upto AND {many} GROUP BY brand, program, status"
        " HAVING sum(n) <> 0"), {"upto": upto})
    gone = conn.execute(sa.text(f"DELETE FROM subscription_counts WHERE id <= :upto AND {many}"), {"upto": upto})
    return int(gone.rowcount)


def recount(conn: Connection) -> None:
    """Replace the counts with a COUNT(*) of the subscriptions (the migration's backfill, and after a bulk
    load that bypassed `add`)."""
    conn.execute(sa.text("DELETE FROM subscription_counts"))
    conn.execute(sa.text("INSERT INTO subscription_counts (brand, program, status, n)"
                         " SELECT brand, program, status, count(*) FROM subscriptions GROUP BY brand, program, status"))


__all__ = ["Key", "add", "changes", "compact", "read", "recount"]
