"""A person's decision on a flagged text: treat it as an opt-out, or dismiss it.

Writer jobs (the phone locked by the caller); they never commit.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.consent import Proof
from app.errors import NotFound
from app.keywords import Brand, Rules
from app.models import inbound_messages
from app.optin import opt_out
from app.subscriptions import Event, Source


class Resolution(StrEnum):
    """What became of a flagged text (inbound_messages.flag_resolution)."""

    OPTED_OUT = "opted_out"
    DISMISSED = "dismissed"


def _claim(conn: Connection, now: datetime, *, brand: str, message_id: int, resolution: Resolution,
           by: str) -> str | None:
    """Mark the brand's unresolved flagged text resolved and return its body; NotFound for any other row."""
    m = inbound_messages.c
    body = conn.execute(
        sa.update(inbound_messages)
        .where(m.id == message_id, m.brand == brand, m.flagged == sa.true(), m.flag_resolution.is_(None))
        .values(flag_resolution=resolution.value, flag_resolved_at=now, flag_resolved_by=by)
        .returning(m.body)
    ).scalar()
    if body is None:
        raise NotFound(f"no unresolved flagged text {message_id}")
    return body  # type: ignore[no-any-return]


def console_opt_out(conn: Connection, now: datetime, *, rules: Rules, brand: Brand, programs: list[str], phone: str,
                    email: str, reason: str, raw_text: str | None = None) -> None:
    """Opt `phone` out of `programs` as a person in the console: event console_opt_out, source console,
    the person's email and their reason in the ledger; the stop reply goes out as for an API opt-out."""
    proof = Proof(source=Source.CONSOLE, consent_source=f"console:{email}", raw_text=raw_text, reason=reason)
    opt_out(conn, now, rules=rules, brand=brand, programs=programs, phone=phone, notify=True, actor=None,
            proof=proof, event=Event.CONSOLE_OPT_OUT)


def treat_as_opt_out(conn: Connection, now: datetime, *, rules: Rules, brand: Brand, message_id: int, phone: str,
                     email: str, reason: str) -> None:
    """Resolve the flagged text as an opt-out and unsubscribe `phone` from every program of the brand."""
    body = _claim(conn, now, brand=brand.key, message_id=message_id, resolution=Resolution.OPTED_OUT, by=email)
    console_opt_out(conn, now, rules=rules, brand=brand, programs=list(brand.programs), phone=phone, email=email,
                    reason=f"a flagged text treated as an opt-out in the console: {reason}", raw_text=body)


def dismiss(conn: Connection, now: datetime, *, brand: Brand, message_id: int, email: str) -> None:
    """Resolve the flagged text as not an opt-out; nothing else changes."""
    _claim(conn, now, brand=brand.key, message_id=message_id, resolution=Resolution.DISMISSED, by=email)


__all__ = ["Resolution", "console_opt_out", "dismiss", "treat_as_opt_out"]
