"""Twilio webhooks: verify signature → decode into a typed struct → act. Thin on purpose.

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
from datetime import datetime
from functools import partial
from urllib.parse import unquote_plus

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from app.errors import DatabaseUnavailable, InvalidPayload
from app.inbound import InboundJob, InboundResult
from app.models import outbox
from app.outbox import carrier_opt_out, record_delivery
from app.phone import mask
from app.providers.base import StatusUpdate
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


def _refused(url: str, why: str) -> None:
    """Log a signature refusal, with the URL it was checked against, at most once a minute (with a count)."""
    global _last_refusal_log, _refusals_since
    _refusals_since += 1
    now = time.monotonic()
    if now - _last_refusal_log >= _REFUSAL_LOG_EVERY:
        log.warning("webhook refused (403): %s; checked against %s (OPTLINE_PUBLIC_URL + path); %d refused since "
                    "the last such line", why, url, _refusals_since)
        _last_refusal_log, _refusals_since = now, 0


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


async def _spool(state: AppState, kind: str, pairs: list[tuple[str, str]], received_at: datetime,
                 why: str) -> Response:
    """Keep a verified webhook in the durable spool and answer 200; 503 only when the spool cannot take it."""
    try:
        await state.spool.append(Record(kind=kind, provider=PROVIDER, received_at=received_at, form=tuple(pairs)))
    except SpoolError as exc:
        log.error("%s; answering 503 (%s)", exc, why)
        return problem(503, "the database and the spool are both unavailable; retry later",
                       headers={"Retry-After": "5"})
    log.warning("spooled a %s webhook: %s", kind, why)
    if state.spool_wake is not None:
        state.spool_wake.set()
    return _twiml()


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
        return await _spool(state, "inbound", pairs, received_at, "earlier texts are still spooled")
    try:
        result = await state.writer.run(InboundJob(sms, state.rules), locks=_locks(sms.from_phone))
    except DatabaseUnavailable as exc:
        return await _spool(state, "inbound", pairs, received_at, str(exc))
    if log.isEnabledFor(logging.INFO):
        log.info("inbound %s from %s: %s%s", sms.message_id, mask(sms.from_phone or sms.from_address), result.kind,
                 " (duplicate)" if result.duplicate else "")
    state.metrics.inbound(result)
    if result.outbox_id is not None:
        state.wake_sender()
    return _twiml()


def _locks(phone: str | None) -> list[str]:
    return [phone] if phone else []


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
        return await _spool(state, "status", pairs, received_at, "earlier webhooks are still spooled")
    try:
        await apply_status(state, update)
    except (DatabaseUnavailable, SQLAlchemyError) as exc:
        return await _spool(state, "status", pairs, received_at, str(exc))
    return _twiml()


async def apply_spooled(state: AppState, records: list[Record]) -> None:
    """Apply spooled webhooks in order, each as of when it was received (the spool's drain task calls this)."""
    jobs: list[tuple[Record, Awaitable[object]]] = []
    for record in records:
        try:
            if record.kind == "inbound":
                sms = parse_inbound(dict(record.form))
                jobs.append((record, state.writer.run(InboundJob(sms, state.rules, received_at=record.received_at),
                                                      locks=_locks(sms.from_phone))))
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


async def apply_status(state: AppState, update: StatusUpdate) -> None:
    """Record a delivery report; Twilio's 21610 also opts the phone out."""
    await state.writer.run(partial(record_delivery, message_id=update.message_id, status=update.status,
                                   error_code=update.error_code))
    if update.error_code == ERROR_UNSUBSCRIBED:
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
