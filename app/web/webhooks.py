"""Provider webhooks: verify signature → decode into typed structs → act (app.receive, app.signals) → answer.

Thin on purpose: what a webhook does to the database (its texts, delivery reports and opt-out
signals) lives in the service rooms below, which the spool's drain calls too.

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

import logging
import time
from collections.abc import Awaitable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from app.errors import DatabaseUnavailable, InvalidPayload
from app.phone import mask
from app.providers.base import FORM, ExplainsRefusals, InboundSms, WebhookRequest, parse_form
from app.providers.twilio import PROVIDER, SIGNATURE_SETTINGS_HEADER, FormPairs, parse_inbound, parse_status
from app.receive import apply_events, receive_twilio_text
from app.signals import apply_status
from app.spool import Record, SpoolError
from app.web.problems import problem
from app.web.state import AppState

log = logging.getLogger("optline.webhooks")

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_BODY = 64 * 1024


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
        sms, result = await receive_twilio_text(state, sms)
    except DatabaseUnavailable as exc:
        return await _spool_form(state, "inbound", pairs, received_at, str(exc))
    if log.isEnabledFor(logging.INFO):
        log.info("inbound %s from %s: %s%s", sms.message_id, mask(sms.from_phone or sms.from_address), result.kind,
                 " (duplicate)" if result.duplicate else "")
    state.metrics.inbound(result)
    if result.outbox_id is not None:
        state.wake_sender(urgent=result.kind == "stop")  # other replies may go out in a batch
    return _twiml()


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


def _event_record(provider: str, body: str, content_type: str, received_at: datetime) -> Record:
    return Record(kind="event", provider=provider, received_at=received_at, form=(), body=body,
                  content_type=content_type)
