"""A verified webhook's events applied: its texts through app.inbound, its reports and signals through app.signals.

The web layer (app.web.webhooks) verifies and parses a webhook, then calls these; the
spool's drain calls `apply_spooled` with the webhooks the database could not take in time,
each applied as of when it was received. Nothing here knows HTTP: the answer is the web
layer's to render.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from app.errors import DatabaseUnavailable, InvalidPayload
from app.inbound import InboundJob, InboundResult
from app.matching import Kind
from app.metrics import Metrics
from app.models import inbound_messages
from app.phone import mask, whatsapp_user_id
from app.providers.base import FORM, InboundSms, OptOutSignal, StatusUpdate, WebhookRequest, parse_form
from app.providers.registry import Providers
from app.providers.twilio import parse_inbound, parse_status
from app.settings import Settings
from app.signals import Store, apply_opt_out_signal, apply_status
from app.spool import Record, Spool

# The lines of a webhook's steps keep the logger operators filter webhooks by.
log = logging.getLogger("optline.webhooks")


class Receiver(Store, Protocol):
    """What applying webhooks needs of the running process (app.web.state.AppState has it)."""

    @property
    def providers(self) -> Providers: ...

    @property
    def spool(self) -> Spool: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def settings(self) -> Settings: ...

    def wake_sender(self, *, urgent: bool = True) -> None:
        """Tell the in-process sender a reply is waiting."""
        ...


def phone_locks(phone: str | None) -> list[str]:
    """The writer locks of a job about one phone (none for a text without one)."""
    return [phone] if phone else []


async def receive_twilio_text(state: Receiver, sms: InboundSms) -> tuple[InboundSms, InboundResult]:
    """One text Twilio posted: a WhatsApp user id tied to its phone (`tie_whatsapp_user`), then app.inbound.

    Returns the text as applied (with the phone it was tied to) and what it did.
    """
    sms = await tie_whatsapp_user(state, sms)
    return sms, await state.writer.run(InboundJob(sms, state.rules), locks=phone_locks(sms.from_phone))


async def tie_whatsapp_user(state: Receiver, sms: InboundSms) -> InboundSms:
    """A WhatsApp opt-out from a business-scoped user id alone, tied to the phone last seen with that id.

    Meta may withhold a user's number and name them by an id scoped to the business. Consent
    is per channel, so such a text joins or confirms nothing; an opt-out is not, and must end
    the brand's SMS subscriptions of the phone behind the id. Twilio posts the id beside the
    phone when it knows both (stored as the text's address), so the phone last seen with the
    id in this brand is the one; an id never seen with a phone has nothing to end: the text
    is stored and the line logged. Only opt-outs are looked up (a brand-scoped scan, newest first).
    """
    if sms.from_phone is not None or sms.channel != "whatsapp" or whatsapp_user_id(sms.from_address) is None:
        return sms
    sender = state.rules.for_sender(sms.to, sms.service_id)
    if sender is None or sender.match(sms.body, sms.opt_out_type).kind is not Kind.STOP:
        return sms
    brand, address = sender.brand.key, sms.from_address
    try:
        phone = await state.read(lambda conn: conn.execute(
            sa.select(inbound_messages.c.from_phone)
            .where(inbound_messages.c.brand == brand, inbound_messages.c.from_address == address,
                   inbound_messages.c.from_phone.is_not(None))
            .order_by(inbound_messages.c.id.desc()).limit(1)).scalar())
    except SQLAlchemyError as exc:  # the database is away: the caller spools the text
        raise DatabaseUnavailable(f"the database did not answer: {type(exc).__name__}") from exc
    if phone is None:
        log.info("WhatsApp opt-out %s from the business-scoped user id %s, never seen with a phone number: stored, "
                 "no subscription to end", sms.message_id, mask(address))
        return sms
    log.info("WhatsApp opt-out %s from the business-scoped user id %s, last seen with %s: ending that phone's "
             "subscriptions", sms.message_id, mask(address), mask(phone))
    return replace(sms, from_phone=phone)


async def apply_spooled(state: Receiver, records: list[Record]) -> None:
    """Apply spooled webhooks in order, each as of when it was received (the spool's drain task calls this)."""
    jobs: list[tuple[Record, Awaitable[object]]] = []
    for record in records:
        try:
            if record.kind == "inbound":
                sms = await tie_whatsapp_user(state, parse_inbound(dict(record.form)))
                jobs.append((record, state.writer.run(InboundJob(sms, state.rules, received_at=record.received_at),
                                                      locks=phone_locks(sms.from_phone))))
            elif record.kind == "event":
                adapter = state.providers.webhook(record.provider)
                if adapter is None:
                    # Spooled by a process that ran this provider; this one does not (yet): keep it.
                    raise DatabaseUnavailable(f"provider {record.provider} is not enabled in this process")
                events = adapter.parse(_spooled_request(state, record))
                jobs.append((record, apply_events(state, record.provider, events, received_at=record.received_at)))
            else:
                jobs.append((record, apply_status(state, parse_status(dict(record.form)))))
        except InvalidPayload as exc:  # it was verified and parsed before it was spooled: a bug, not input
            state.spool.reject(record, f"no longer parses: {exc.message}")
    # Handed to the writer together, in order: it applies them as one batch, oldest first.
    results = await asyncio.gather(*(job for _record, job in jobs), return_exceptions=True)
    unavailable = next((r for r in results if isinstance(r, (DatabaseUnavailable, SQLAlchemyError))), None)
    if unavailable is not None:
        raise unavailable  # the database is still away: the drain tries the whole chunk again later
    for (record, _job), result in zip(jobs, results, strict=True):
        if isinstance(result, BaseException):
            # A record the database refuses for itself would block every later text if it were
            # retried for ever: it is set aside, whole, for a person to look at.
            state.spool.reject(record, f"{type(result).__name__}: {result}")
        elif isinstance(result, InboundResult):
            state.metrics.inbound(result)
            if result.outbox_id is not None:
                state.wake_sender()
        elif isinstance(result, list):
            for one in result:
                state.metrics.inbound(one)
            if any(one.outbox_id is not None for one in result):
                state.wake_sender()


async def apply_events(state: Receiver, provider: str, events: list[InboundSms | StatusUpdate | OptOutSignal],
                       *, received_at: datetime | None = None) -> list[InboundResult]:
    """Act on the events of one webhook, in order; returns the inbound texts' results."""
    results: list[InboundResult] = []
    for event in events:
        if isinstance(event, InboundSms):
            results.append(await state.writer.run(InboundJob(event, state.rules, received_at=received_at),
                                                  locks=phone_locks(event.from_phone)))
        elif isinstance(event, StatusUpdate):
            await apply_status(state, event, provider)
        else:
            await apply_opt_out_signal(state, event)
    return results


def _spooled_request(state: Receiver, record: Record) -> WebhookRequest:
    """The request a spooled record was verified as, for its adapter to parse again."""
    body = record.body or ""
    form = tuple(parse_form(body)) if record.content_type == FORM else None
    return WebhookRequest(url=state.settings.public_url, headers={"content-type": record.content_type or ""},
                          body=body.encode(), form=form)
