"""Twilio webhooks: verify signature → decode into a typed struct → act. Thin on purpose.

The signature is checked first, against OPTLINE_PUBLIC_URL + path + query (never the Host
header, which a proxy rewrites), over every parameter received. Nothing is stored for a
request that fails it. The answer is sent only after the writer committed the text.
"""

from __future__ import annotations

import logging
from functools import partial
from urllib.parse import unquote_plus

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from app.errors import InvalidPayload
from app.inbound import InboundJob
from app.models import outbox
from app.outbox import carrier_opt_out, record_delivery
from app.phone import mask
from app.providers.twilio import ERROR_UNSUBSCRIBED, FormPairs, parse_inbound, parse_status
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


async def _verified_form(request: Request, state: AppState) -> dict[str, str] | Response:
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
                                                            request.headers.get("x-twilio-signature")):
        return problem(403, "missing or invalid X-Twilio-Signature")
    # Repeated keys were all signed; past the signature, the last value of each counts.
    return dict(pairs)


async def twilio_inbound(request: Request) -> Response:
    """POST /webhooks/twilio: one inbound text."""
    state: AppState = request.app.state.optline
    form = await _verified_form(request, state)
    if isinstance(form, Response):
        return form
    try:
        sms = parse_inbound(form)
    except InvalidPayload as exc:
        return problem(400, exc.message, errors=exc.errors)
    result = await state.writer.run(InboundJob(sms, state.rules), locks=[sms.from_phone])
    if log.isEnabledFor(logging.INFO):
        log.info("inbound %s from %s: %s%s", sms.message_id, mask(sms.from_phone), result.kind,
                 " (duplicate)" if result.duplicate else "")
    state.metrics.inbound(result)
    if result.outbox_id is not None:
        state.wake_sender()
    return Response(EMPTY_TWIML, media_type="text/xml")


async def twilio_status(request: Request) -> Response:
    """POST /webhooks/twilio/status: a delivery report for a text we sent."""
    state: AppState = request.app.state.optline
    form = await _verified_form(request, state)
    if isinstance(form, Response):
        return form
    try:
        update = parse_status(form)
    except InvalidPayload as exc:
        return problem(400, exc.message, errors=exc.errors)
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
    return Response(EMPTY_TWIML, media_type="text/xml")
