"""Sealing the ledger (a checkpoint, told to each brand it covers) and the periodic proof work of serve and worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.db import Writer
from app.erasure import expire_bodies
from app.events import EVENT_COLUMNS, event_row
from app.keywords import Rules
from app.ledger import Checkpoint, checkpoint_brands, key_from, write_checkpoint
from app.settings import Settings
from app.signing import secret_key
from app.sql import Raw

log = logging.getLogger("optline.proof")

LEDGER_CHECKPOINT = "ledger.checkpoint"  # the brand event that carries a checkpoint's hash


def ledger_key(settings: Settings) -> bytes:
    """The ledger's HMAC key for these settings (OPTLINE_LEDGER_KEY, else derived from the secret key)."""
    return key_from(settings.ledger_key, secret_key(settings))


def seal(conn: Connection, now: datetime, *, rules: Rules) -> Checkpoint | None:
    """Write a checkpoint over the heads that moved, and tell each brand it covers (its events URL); None if none moved."""
    checkpoint = write_checkpoint(conn, now)
    if checkpoint is None:
        return None
    rows = []
    for key in checkpoint_brands(conn, checkpoint.id):
        brand = rules.brands.get(key)
        if brand is not None:
            row = event_row(now, brand=brand, type=LEDGER_CHECKPOINT, data=checkpoint.json())
            if row is not None:
                rows.append(row)
    if rows:
        Raw(conn).insert_rows("outbox", EVENT_COLUMNS, rows)
    log.info("ledger checkpoint %d sealed %d chain heads: %s", checkpoint.id, checkpoint.heads, checkpoint.hash)
    return checkpoint


async def seal_forever(writer: Writer, rules: Callable[[], Rules], *, every: float,
                       retention_days: int | None, wake: Callable[[], Any] | None = None) -> None:
    """Every `every` seconds: a checkpoint, and (with a retention) blank the bodies past it."""
    while True:
        await asyncio.sleep(every)
        try:
            checkpoint = await writer.run(lambda conn, now: seal(conn, now, rules=rules()))
            if checkpoint is not None and wake is not None:
                wake()  # its brand events are queued
            if retention_days is not None:
                blanked = total = 0
                while True:  # in slices: no transaction holds the writer long
                    blanked = await writer.run(lambda conn, now: expire_bodies(conn, now, days=retention_days))
                    total += blanked
                    if not blanked:
                        break
                if total:
                    log.info("retention: blanked %d message bodies older than %d days", total, retention_days)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round tries again
            log.warning("ledger checkpoint failed; retrying in %.0f s", every, exc_info=True)


__all__ = ["LEDGER_CHECKPOINT", "ledger_key", "seal", "seal_forever"]
