"""Delivery reports on the parts of a long text, settled into one status for the text the outbox sent.

A provider may split a long text and report each part on its own (Plivo: `PartInfo` "2 of 3",
`ParentMessageUUID` the id the send was answered with). The rule:

- a text is **failed** (or **undelivered**) as soon as any of its parts is, with that part's
  error code: the person did not get the whole text, and no later report can mend that;
- it is **delivered** only when every part is;
- until then it is as far along as its least advanced part (a part not reported yet counts as
  queued), and a row never moves backwards (app.outbox.reports.record_delivery).

Each part's own report is kept in `delivery_reports` as `<text id>#<part>`, so reports in any
order, and a provider's retries, settle to the same status.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from app.outbox.reports import record_delivery
from app.providers.base import DeliveryStatus
from app.sql import Raw, in_list

# When parts disagree, the one that decides the text: a failure before an undelivery (it never left).
_FAILURES = (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED)


def part_id(message_id: str, part: int) -> str:
    """The delivery report id of one part of the text `message_id`."""
    return f"{message_id}#{part}"


def settle(statuses: dict[int, tuple[DeliveryStatus, int | None]], parts: int) -> tuple[DeliveryStatus, int | None]:
    """The (status, error code) of a text in `parts` parts from the reports of its parts (part → report)."""
    for failure in _FAILURES:
        for part in sorted(statuses):
            status, code = statuses[part]
            if status is failure:
                return status, code
    ranks = [statuses[part][0] if part in statuses else DeliveryStatus.QUEUED for part in range(1, parts + 1)]
    return min(ranks, key=lambda status: status.rank), None


def record_part_delivery(conn: Connection, now: datetime, *, message_id: str, part: int, parts: int,
                         status: DeliveryStatus, error_code: int | None) -> bool:
    """Keep one part's report and move the text `message_id` to what its parts say; True when the text moved."""
    record_delivery(conn, now, message_id=part_id(message_id, part), status=status, error_code=error_code)
    params: dict[str, object] = {}
    ids = in_list("p", [part_id(message_id, n) for n in range(1, parts + 1)], params)
    rows = Raw(conn).execute(f"SELECT message_id, status, error_code FROM delivery_reports WHERE message_id IN {ids}",
                             params).fetchall()
    reports = {int(row[0].rpartition("#")[2]): (DeliveryStatus(row[1]), row[2]) for row in rows}
    settled, code = settle(reports, parts)
    return record_delivery(conn, now, message_id=message_id, status=settled, error_code=code)
