"""Read-only figures about a brand's subscribers (GET /v1/programs, the console)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

from app.status_counts import read as counts_of
from app.subscriptions import Status


def status_counts(conn: Connection, *, brand: str, programs: Iterable[str]) -> dict[str, dict[str, int]]:
    """program -> status -> how many phones, every status present (0 when none), for each of `programs`."""
    counts = {program: {status.value: 0 for status in Status} for program in programs}
    # Kept up by every status write (app.status_counts): a few rows, not a count of the subscriptions.
    for program, by_status in counts_of(conn, brand=brand).items():
        for status, n in by_status.items():
            # A program removed from keywords.yaml keeps its rows; it is not listed.
            if program in counts and status in counts[program]:
                counts[program][status] = n
    return counts


__all__ = ["status_counts"]
