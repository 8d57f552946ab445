"""Delivery reports: a provider's status callbacks, in any order, applied so a row never moves backwards.

A report may come before the send is recorded (`delivery_reports` keeps it; app.outbox.records
merges it then).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.outbox.queue import OutboxStatus
from app.providers.base import DeliveryStatus
from app.sql import Raw, in_list

# Delivery statuses as stored on the row (the provider's "sending" must not collide with ours).
FROM_DELIVERY = {
    DeliveryStatus.QUEUED: OutboxStatus.QUEUED,
    DeliveryStatus.SENDING: OutboxStatus.PROVIDER_SENDING,
    DeliveryStatus.SENT: OutboxStatus.SENT,
    DeliveryStatus.DELIVERED: OutboxStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED: OutboxStatus.UNDELIVERED,
    DeliveryStatus.FAILED: OutboxStatus.FAILED,
}
_TO_DELIVERY = {v: k for k, v in FROM_DELIVERY.items()}


def record_delivery(conn: Connection, now: datetime, *, message_id: str, status: DeliveryStatus, error_code: int | None) -> bool:
    """Apply a delivery report; reports arrive in any order and never move a row backwards."""
    raw = Raw(conn)
    current = raw.scalar("SELECT status FROM delivery_reports WHERE message_id = :m", {"m": message_id})
    params: dict[str, Any] = {"m": message_id, "status": status.value, "code": error_code, "now": now}
    if current is None:
        raw.execute("INSERT INTO delivery_reports (message_id, status, error_code, updated_at)"
                    " VALUES (:m, :status, :code, :now)", params)
    elif status.advances(DeliveryStatus(current)):
        raw.execute("UPDATE delivery_reports SET status = :status, error_code = :code, updated_at = :now"
                    " WHERE message_id = :m", params)
    else:
        return False
    behind = [row_status.value for row_status, d in _TO_DELIVERY.items() if d.rank < status.rank]
    params["row_status"] = FROM_DELIVERY[status].value
    raw.execute(
        "UPDATE outbox SET status = :row_status, error_code = :code, updated_at = :now"
        f" WHERE provider_message_id = :m AND status IN {in_list('b', behind, params)}",
        params,
    )
    return True
