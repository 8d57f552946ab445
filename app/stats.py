"""Read-only figures about a brand's subscribers (GET /v1/programs, the console)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

from app.sql import Raw
from app.subscriptions import Status


def status_counts(conn: Connection, *, brand: str, programs: Iterable[str]) -> dict[str, dict[str, int]]:
    """program -> status -> how many phones, every status present (0 when none), for each of `programs`."""
    counts = {program: {status.value: 0 for status in Status} for program in programs}
    rows = Raw(conn).rows(
        "SELECT program, status, COUNT(*) AS n FROM subscriptions WHERE brand = :brand GROUP BY program, status",
        {"brand": brand},
    )
    for row in rows:
        # A program removed from keywords.yaml keeps its rows; it is not listed.
        if row["program"] in counts and row["status"] in counts[row["program"]]:
            counts[row["program"]][row["status"]] = int(row["n"])
    return counts


__all__ = ["status_counts"]
