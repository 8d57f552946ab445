"""Provider webhooks: verify signature → decode into typed structs → act. Thin on purpose.

Twilio posts forms to `/webhooks/twilio` and `/webhooks/twilio/status`, answered with empty
TwiML. Every other enabled provider posts to `/webhooks/{provider}` (and its delivery reports
to `/webhooks/{provider}/status`, where optline's sends point them); its adapter verifies the
signature over the exact body and parses it into InboundSms, StatusUpdate and OptOutSignal
events, answered with an empty 200.

The signature is checked first, against OPTLINE_PUBLIC_URL + path + query (never the Host
header, which a proxy rewrites), over every parameter received. Nothing is stored for a
request that fails it. The answer is sent only after the writer committed the text, or, when
the database cannot take it within its deadline (down, or SQLite's write lock held by another
process), after the verified form is in the durable spool (app.spool), which applies it as
soon as the database answers. Only when the spool cannot be written either is the answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime
from functools import partial
from urllib.parse import unquote_plus

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from app.carrier import carrier_opt_out
from app.delivery_parts import record_part_delivery
from app.errors import DatabaseUnavailable, InvalidPayload
from app.inbound import InboundJob, InboundResult
from app.keywords import Kind
from app.models import inbound_messages, outbox
from app.outbox.reports import record_delivery
from app.phone import mask, whatsapp_user_id
from app.providers.base import ExplainsRefusals, InboundSms, OptOutSignal, StatusUpdate, WebhookRequest
from app.providers.twilio import (
    ERROR_UNSUBSCRIBED,
    PROVIDER,
    SIGNATURE_SETTINGS_HEADER,
    FormPairs,
    parse_inbound,
    parse_status,
)
from app.spool import Record, SpoolError
from app.web.problems import problem
from app.web.state import AppState

log = logging.getLogger("optline.webhooks")

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_BODY = 64 * 1024
FORM = "application/x-www-form-urlencoded"


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _TooLarge
    return bytes(body)


def parse_form(text: str) -> list[tuple[str, str]]:
    """`application/x-www-form-urlencoded` → (key, value) pairs, as `parse_qsl(text, keep_blank_values=True)`.

    Most of Twilio's fields need no decoding; unquoting only those with `%` or `+` makes
    this five times cheaper than parse_qsl on a webhook.
    """
    pairs = []
    for field in text.split("&"):
        if not field:
            continue
        key, _, value = field.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        pairs.append((key, value))
    return pairs


async def _verified_form(request: Request, state: AppState) -> list[tuple[str, str]] | Response:
    """The form Twilio signed, or the 4xx response that refuses the request."""
    if not state.settings.serves_twilio_webhooks:
        return problem(404, "no provider 'twilio' is enabled here (OPTLINE_PROVIDERS)")
    try:
        body = await _read_body(request)
    except _TooLarge:
        return problem(413, f"body over {MAX_BODY} bytes")
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM:
        return problem(415, f"expected {FORM}")
    try:
        pairs = parse_form(body.decode("utf-8"))
    except UnicodeDecodeError:
        return problem(400, "body is not UTF-8")
    # The route's own path (never a proxy's Host); starlette's request.url costs a URL parse.
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = state.settings.public_url + request.scope["path"] + (f"?{query}" if query else "")
    if state.signature is None or not state.signature.valid(url, FormPairs(pairs),
                                                            request.headers.get("x-twilio-signature"),
                                                            request.headers.get(SIGNATURE_SETTINGS_HEADER)):
        shared = bool(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        _refused(url, "no TWILIO_AUTH_TOKEN is set" if state.signature is None else
                 "missing X-Twilio-Signature" if not request.headers.get("x-twilio-signature") else
                 "X-Twilio-Signature does not match the Webhook Setting's shared key (TWILIO_WEBHOOK_SHARED_KEY)"
                 if shared else "X-Twilio-Signature does not match")
        return problem(403, "missing or invalid X-Twilio-Signature")
    return pairs


_REFUSAL_LOG_EVERY = 60.0  # seconds: a flood of forged webhooks must not flood the log
_last_refusal_log = 0.0
_refusals_since = 0


def _refused(url: str, why: str, status: int = 403) -> None:
    """Log a refused webhook, with the URL it was checked against, at most once a minute (with a count)."""
    global _last_refusal_log, _refusals_since
    _refusals_since += 1
    now = time.monotonic()
    if now - _last_refusal_log >= _REFUSAL_LOG_EVERY:
        log.warning("webhook refused (%d): %s; checked against %s (OPTLINE_PUBLIC_URL + path); %d refused since "
                    "the last such line", status, why, url, _refusals_since)
        _last_refusal_log, _refusals_since = now, 0


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


async def _spool(state: AppState, record: Record, why: str) -> Response:
    """Keep a verified webhook in the durable spool and answer 200; 503 only when the spool cannot take it."""
    try:
        await state.spool.append(record)
    except SpoolError as exc:
        log.error("%s; answering 503 (%s)", exc, why)
        return problem(503, "the database and the spool are both unavailable; retry later",
                       headers={"Retry-After": "5"})
    log.warning("spooled a %s %s webhook: %s", record.provider, record.kind, why)
    if state.spool_wake is not None:
        state.spool_wake.set()
    return _twiml() if record.provider == PROVIDER else Response(status_code=200)


def _spool_form(state: AppState, kind: str, pairs: list[tuple[str, str]], received_at: datetime,
                why: str) -> Awaitable[Response]:
    return _spool(state, Record(kind=kind, provider=PROVIDER, received_at=received_at, form=tuple(pairs)), why)


async def twilio_inbound(request: Request) -> Response:
    """POST /webhooks/twilio: one inbound text."""
    state: AppState = request.app.state.optline
    pairs = await _verified_form(request, state)
    if isinstance(pairs, Response):
        return pairs
    try:
        # Repeated keys were all signed; past the signature, the last value of each counts.
        sms = parse_inbound(dict(pairs))
    except InvalidPayload as exc:
        return problem(400, exc.message, errors=exc.errors)
    received_at = state.clock()
    if state.spool.pending:
        # Texts spooled earlier are not applied yet: this one waits its turn behind them.
        return await _spool_form(state, "inbound", pairs, received_at, "earlier texts are still spooled")
    try:
        sms = await tie_whatsapp_user(state, sms)
        result = await state.writer.run(InboundJob(sms, state.rules), locks=_locks(sms.from_phone))
    except DatabaseUnavailable as exc:
        return await _spool_form(state, "inbound", pairs, received_at, str(exc))
    if log.isEnabledFor(logging.INFO):
        log.info("inbound %s from %s: %s%s", sms.message_id, mask(sms.from_phone or sms.from_address), result.kind,
                 " (duplicate)" if result.duplicate else "")
    state.metrics.inbound(result)
    if result.outbox_id is not None:
        state.wake_sender(urgent=result.kind == "stop")  # other replies may go out in a batch
    return _twiml()


def _locks(phone: str | None) -> list[str]:
    return [phone] if phone else []


async def tie_whatsapp_user(state: AppState, sms: InboundSms) -> InboundSms:
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


async def twilio_status(request: Request) -> Response:
    """POST /webhooks/twilio/status: a delivery report for a text we sent."""
    state: AppState = request.app.state.optline
    pairs = await _verified_form(request, state)
    if isinstance(pairs, Response):
        return pairs
    try:
        update = parse_status(dict(pairs))
    except InvalidPayload as exc:
        return problem(400, exc.message, errors=exc.errors)
    received_at = state.clock()
    if state.spool.pending:
        return await _spool_form(state, "status", pairs, received_at, "earlier webhooks are still spooled")
    try:
        await apply_status(state, update)
    except (DatabaseUnavailable, SQLAlchemyError) as exc:
        return await _spool_form(state, "status", pairs, received_at, str(exc))
    return _twiml()


async def apply_spooled(state: AppState, records: list[Record]) -> None:
    """Apply spooled webhooks in order, each as of when it was received (the spool's drain task calls this)."""
    jobs: list[tuple[Record, Awaitable[object]]] = []
    for record in records:
        try:
            if record.kind == "inbound":
                sms = await tie_whatsapp_user(state, parse_inbound(dict(record.form)))
                jobs.append((record, state.writer.run(InboundJob(sms, state.rules, received_at=record.received_at),
                                                      locks=_locks(sms.from_phone))))
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


async def apply_status(state: AppState, update: StatusUpdate, provider: str = PROVIDER) -> None:
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


# --- every other provider ----------------------------------------------------------------------


async def provider_webhook(request: Request) -> Response:
    """POST /webhooks/{provider}[/status]: whatever an enabled provider posts, verified and parsed by its adapter."""
    state: AppState = request.app.state.optline
    name = request.path_params["provider"]
    adapter = state.providers.webhook(name)
    if adapter is None:
        return problem(404, f"no provider {name!r} is enabled here (OPTLINE_PROVIDERS)")
    try:
        body = await _read_body(request)
    except _TooLarge:
        return problem(413, f"body over {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "body is not UTF-8")
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = state.settings.public_url + request.scope["path"] + (f"?{query}" if query else "")
    webhook = WebhookRequest(url=url, headers=dict(request.headers.items()), body=body,
                             form=tuple(parse_form(text)) if content_type == FORM else None)
    if request.method != "POST" or not adapter.verify(webhook):
        # A provider set up for another of its APIs (Vonage's SMS API, which GETs by default)
        # never passes: say what to change, in the answer and the log, rather than "signature".
        why = adapter.refusal(webhook) if isinstance(adapter, ExplainsRefusals) else None
        if why is not None:
            _refused(url, why, 400)
            return problem(400, why)
        if request.method != "POST":
            return problem(405, "webhooks are POSTed", headers={"Allow": "POST"})
        missing = state.settings.missing_webhook_secret(name)
        _refused(url, f"{missing} is not set" if missing else f"the {name} signature is missing or does not match")
        return problem(403, f"missing or invalid {name} signature")
    try:
        events = adapter.parse(webhook)
    except InvalidPayload as exc:
        return problem(400, exc.message, errors=exc.errors)
    received_at = state.clock()
    if events and state.spool.pending:
        return await _spool(state, _event_record(name, text, content_type, received_at),
                            "earlier webhooks are still spooled")
    try:
        results = await apply_events(state, name, events)
    except (DatabaseUnavailable, SQLAlchemyError) as exc:
        return await _spool(state, _event_record(name, text, content_type, received_at), str(exc))
    texts = [event for event in events if isinstance(event, InboundSms)]
    for sms, result in zip(texts, results, strict=True):
        if log.isEnabledFor(logging.INFO):
            log.info("inbound %s via %s: %s%s", sms.message_id, name, result.kind,
                     " (duplicate)" if result.duplicate else "")
        state.metrics.inbound(result)
    if any(result.outbox_id is not None for result in results):
        state.wake_sender(urgent=any(result.kind == "stop" for result in results))
    return Response(status_code=200)


async def apply_events(state: AppState, provider: str, events: list[InboundSms | StatusUpdate | OptOutSignal],
                       *, received_at: datetime | None = None) -> list[InboundResult]:
    """Act on the events of one webhook, in order; returns the inbound texts' results."""
    results: list[InboundResult] = []
    for event in events:
        if isinstance(event, InboundSms):
            results.append(await state.writer.run(InboundJob(event, state.rules, received_at=received_at),
                                                  locks=_locks(event.from_phone)))
        elif isinstance(event, StatusUpdate):
            await apply_status(state, event, provider)
        else:
            await apply_opt_out_signal(state, event)
    return results


async def apply_opt_out_signal(state: AppState, signal: OptOutSignal) -> None:
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


def _event_record(provider: str, body: str, content_type: str, received_at: datetime) -> Record:
    return Record(kind="event", provider=provider, received_at=received_at, form=(), body=body,
                  content_type=content_type)


def _spooled_request(state: AppState, record: Record) -> WebhookRequest:
    """The request a spooled record was verified as, for its adapter to parse again."""
    body = record.body or ""
    form = tuple(parse_form(body)) if record.content_type == FORM else None
    return WebhookRequest(url=state.settings.public_url, headers={"content-type": record.content_type or ""},
                          body=body.encode(), form=form)
