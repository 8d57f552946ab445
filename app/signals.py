"""What providers report besides texts: delivery reports and their own opt-out signals, applied.

A delivery report moves our outbox row forward (app.outbox.reports; a long text's parts,
app.delivery_parts). Twilio's 21610 report, or another provider's `OptOutSignal`, is the
carrier telling us a phone opted out there: app.carrier applies it as a carrier opt-out.
The web layer (app.web.webhooks) and the spool's drain (app.receive) both call these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.carrier import carrier_opt_out
from app.db import Writer
from app.delivery_parts import record_part_delivery
from app.keywords.schema import Rules
from app.models import outbox
from app.outbox.reports import record_delivery
from app.phone import mask
from app.providers.base import OptOutSignal, StatusUpdate
from app.providers.twilio import ERROR_UNSUBSCRIBED, PROVIDER

# The lines of a webhook's steps keep the logger operators filter webhooks by.
log = logging.getLogger("optline.webhooks")

T = TypeVar("T")


class Store(Protocol):
    """What these steps need of the running process (app.web.state.AppState has it)."""

    @property
    def rules(self) -> Rules: ...

    @property
    def writer(self) -> Writer: ...

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only query on a reader connection, off the event loop."""
        ...


async def apply_status(state: Store, update: StatusUpdate, provider: str = PROVIDER) -> None:
    """Record a delivery report; Twilio's 21610 also opts the phone out (other providers send an OptOutSignal)."""
    if update.part is not None and update.parts is not None:
        # One part of a long text: the text is delivered when every part is, failed when any is.
        await state.writer.run(partial(record_part_delivery, message_id=update.message_id, part=update.part,
                                       parts=update.parts, status=update.status, error_code=update.error_code))
    else:
        await state.writer.run(partial(record_delivery, message_id=update.message_id, status=update.status,
                                       error_code=update.error_code))
    if provider == PROVIDER and update.error_code == ERROR_UNSUBSCRIBED:
        # The carrier refused delivery because the phone opted out there: honour it everywhere.
        row = await state.read(lambda conn: conn.execute(
            sa.select(outbox.c.brand, outbox.c.phone, outbox.c.from_number, outbox.c.service_id)
            .where(outbox.c.provider_message_id == update.message_id)).first())
        if row is not None and row.brand and row.phone:
            await state.writer.run(
                lambda conn, now: carrier_opt_out(conn, now, rules=state.rules, brand=row.brand, phone=row.phone,
                                                  to=row.from_number, service_id=row.service_id,
                                                  code=update.error_code, message_id=update.message_id),
                locks=[row.phone],
            )


async def apply_opt_out_signal(state: Store, signal: OptOutSignal) -> None:
    """A provider's own report that a phone opted out: a carrier opt-out from every program on that sender.

    The sender comes from the signal, else from the text of ours it refused. A START signal
    changes nothing: the provider lifted its block, but consent to our programs needs a join.
    """
    if signal.kind != "STOP":
        log.info("%s reports %s opted back in (%s); consent needs a join, nothing changes", signal.provider,
                 mask(signal.phone), signal.kind)
        return
    rules = state.rules
    brand: str | None = None
    to, service_id = signal.sender, None
    hosted = rules.for_sender(to) if to else None
    if hosted is not None:
        brand = hosted.brand.key
    elif signal.message_id is not None:
        row = await state.read(lambda conn: conn.execute(
            sa.select(outbox.c.brand, outbox.c.from_number, outbox.c.service_id)
            .where(outbox.c.provider_message_id == signal.message_id)).first())
        if row is not None:
            brand, to, service_id = row.brand, row.from_number, row.service_id
    if brand is None:
        log.warning("%s reports an opt-out of %s from %s, which is none of our senders; nothing to change",
                    signal.provider, mask(signal.phone), signal.sender or "an unnamed sender")
        return
    await state.writer.run(
        lambda conn, now: carrier_opt_out(conn, now, rules=rules, brand=brand, phone=signal.phone, to=to,
                                          service_id=service_id, code=signal.error_code,
                                          message_id=signal.message_id),
        locks=[signal.phone],
    )
