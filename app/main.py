"""create_app(settings) -> Starlette: routes, lifespan, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp

from app.auth import KeyCache
from app import dialects
from app.console import pages as console_pages
from app import erasure, ledger, receive
from app.console import rollup
from app.console.headers import ConsoleHeaders
from app.carrier import carrier_opt_out
from app.db import Writer, make_engine, utcnow
from app.proof import ledger_key
from app.errors import DatabaseUnavailable
from app.events import EventPoster, event_environ
from app.inbound import due_for_expiry, expire_due
from app.http_protocol import configure as configure_http
from app.keywords import Rules, load_rules
from app.logs import setup_logging
from app.holds import held_counts
from app.metrics import Metrics
from app.migrate import current_revision, head_revision
from app.outbox.queue import Deadlines, backlog
from app.outbox.sender import OutboxSender
from app.providers.base import Provider, WebhookProvider
from app.providers.registry import Providers, check_senders, make_providers
from app.providers.twilio import TwilioSignature
from app.reload import RELOAD_SIGNAL, register, reload_rules, unregister
from app.retire import check_rules_keep_subscribers
from app.settings import Settings, load_settings
from app.spool import Spool, drain_forever
from app.web import api, api_profiles, api_proof, api_rules, api_subscriptions, openapi, webhooks
from app.web.idempotency import IdempotencyMiddleware
from app.web.problems import EXCEPTION_HANDLERS, problem
from app.web.request_id import RequestIdMiddleware
from app.web.state import AppState

log = logging.getLogger("optline")

SWEEP_SECONDS = 30.0


def deadlines(settings: Settings) -> Deadlines:
    """The retry deadlines the settings name."""
    return Deadlines(stop=timedelta(seconds=settings.deadline_stop_seconds),
                     text=timedelta(seconds=settings.deadline_text_seconds),
                     event=timedelta(seconds=settings.deadline_event_seconds))


def build_state(
    settings: Settings, *, provider: Provider | WebhookProvider | None = None, rules: Rules | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> AppState:
    """Engines, writer, providers and sender for one process (started by `start_background`).

    `provider` (tests, `optline simulate`): that one adapter sends every text, whatever
    OPTLINE_PROVIDERS says.
    """
    rules = rules or load_rules(settings.keywords)
    providers = Providers.single(provider) if provider is not None else make_providers(settings)
    check_senders(rules, providers)
    # Before any engine is opened: a brand's missing events secret stops start-up with one line.
    event_poster = EventPoster(rules, environ=event_environ())
    ledger.configure(ledger_key(settings))
    writer_engine = make_engine(settings.database_url, writer=True)
    reader = make_engine(settings.database_url) if settings.is_sqlite else writer_engine
    metrics = Metrics()
    metrics.watch(writer_engine)
    state = AppState(
        settings=settings, rules=rules, reader=reader, providers=providers,
        writer=Writer(writer_engine, clock=clock, deadline=settings.db_deadline_seconds, on_locked=erasure.restore),
        signature=TwilioSignature(settings.twilio_auth_token, settings.twilio_webhook_shared_key)
        if settings.twilio_auth_token or settings.twilio_webhook_shared_key else None,
        keys=KeyCache(reader), metrics=metrics, clock=clock, spool=Spool(settings.spool_dir, database=settings.database_url),
    )
    state.sender = OutboxSender(
        writer=state.writer, reader=reader, providers=providers, rules=rules,
        public_url=settings.public_url, lease_seconds=settings.lease_seconds,
        concurrency=settings.send_concurrency, deadlines=deadlines(settings),
        retry_base=settings.retry_base_seconds, retry_cap=settings.retry_cap_seconds,
        poll_seconds=settings.poll_seconds, clock=clock, event_poster=event_poster, metrics=metrics,
        carrier_opt_out=carrier_opt_out,
    )
    return state


async def sweep_forever(state: AppState, every: float = SWEEP_SECONDS) -> None:
    """Expire unconfirmed DOIs past their deadline, forever."""
    while True:
        try:
            now = state.clock()
            phones = await state.read(lambda conn: due_for_expiry(conn, now))
            if phones:
                count = await state.writer.run(lambda conn, now: expire_due(conn, now, phones=phones, rules=state.rules),
                                               locks=phones)
                log.info("expired %d pending double opt-ins", count)
        except Exception:  # noqa: BLE001 - keep sweeping after a database blip
            log.exception("DOI sweep failed")
        await asyncio.sleep(every)


async def start_background(state: AppState, *, sender: bool) -> None:
    """Start the writer and, when asked, the outbox sender and the DOI sweep."""
    state.writer.start()
    if sender and state.sender is not None:
        state.tasks.append(asyncio.create_task(state.sender.run(), name="optline-sender"))
        state.tasks.append(asyncio.create_task(sweep_forever(state), name="optline-sweep"))
        if state.settings.checkpoint_seconds > 0:
            state.tasks.append(asyncio.create_task(api_proof.seal_periodically(state), name="optline-seal"))


async def stop_background(state: AppState) -> None:
    """Finish in-flight sends, stop the background work, close the engines."""
    if state.sender is not None:
        state.sender.stop()
    for task in state.tasks:
        if task.get_name() == "optline-sender":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=30)
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    state.tasks.clear()
    if state.sender is not None:
        state.sender.close()
        poster = state.sender.event_poster
        if isinstance(poster, EventPoster):
            poster.close()
    state.writer.stop()
    state.spool.close()
    await state.providers.aclose()
    state.keys.close()
    state.writer.engine.dispose()
    state.reader.dispose()


def listen_for_reload(state: AppState, role: str) -> Path:
    """Reload the rules on SIGHUP (off the event loop) and register this process for `optline reload`."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(RELOAD_SIGNAL, lambda: loop.run_in_executor(None, reload_rules, state))
    return register(state.settings.run_dir, role)


async def healthz(_request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: database reachable, migrations at head, config loaded."""
    state: AppState = request.app.state.optline
    try:
        current = await state.read(lambda conn: current_revision(conn.engine))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is "not ready"
        return problem(503, f"database unreachable: {type(exc).__name__}")
    head = head_revision()
    if current != head:
        return problem(503, f"database at migration {current}, code expects {head}: run optline migrate")
    # The file's hash, not its brands: /readyz is often public, and the hash tells which file each process runs.
    rules = state.rules
    return JSONResponse({"status": "ready", "migration": current, "keywords": {"sha256": rules.sha256}})


async def metrics(request: Request) -> Response:
    """Prometheus metrics; the outbox gauges are read now, with one query."""
    state: AppState = request.app.state.optline
    now = state.clock()
    try:
        rows = await state.read(backlog)
        state.metrics.set_held(await state.read(lambda conn: held_counts(conn, now)))
    except Exception:  # noqa: BLE001 - the counters are still worth serving when the database is not
        log.warning("outbox gauges unavailable", exc_info=True)
        rows = None
    state.metrics.set_outbox(rows, now)
    await api_proof.observe_checkpoint(state)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


class _Optline(Starlette):
    """Starlette with the request id outside everything, so a 500 and its log line carry it too."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (server errors outermost) wrapped in RequestIdMiddleware."""
        return RequestIdMiddleware(ConsoleHeaders(super().build_middleware_stack()))


def create_app(
    settings: Settings | None = None, *, provider: Provider | None = None, rules: Rules | None = None,
    clock: Callable[[], datetime] = utcnow, state: AppState | None = None, reload_on_signal: bool = False,
) -> Starlette:
    """The optline web app; tests pass their own provider, rules and clock.

    `reload_on_signal` (a served process, on its main thread): reload keywords.yaml on SIGHUP
    and register the process for `optline reload`.
    """
    settings = settings or load_settings()
    state = state or build_state(settings, provider=provider, rules=rules, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Signatures fail closed: without its secret every webhook of a provider is refused (403).
        # Twilio's routes serve the twilio and console providers; the others', their own.
        served = ["twilio"] if settings.serves_twilio_webhooks else []
        for name in dict.fromkeys([*served, *(n for n in state.providers.names if state.providers.webhook(n))]):
            if missing := settings.missing_webhook_secret(name):
                log.warning("%s is not set: every %s webhook will be refused (403)", missing, name)
        await start_background(state, sender=settings.inprocess_worker)
        # Webhooks spooled while the database was away (here, or by a process that died since).
        state.spool_wake = asyncio.Event()
        state.tasks.append(asyncio.create_task(drain_forever(
            state.spool, partial(receive.apply_spooled, state), wake=state.spool_wake), name="optline-spool"))
        # The console's analytics counts, kept up from the ledger (app.console.rollup).
        state.tasks.append(asyncio.create_task(rollup.keep_up(state), name="optline-rollup"))
        pid_file = listen_for_reload(state, "serve") if reload_on_signal else None
        try:
            yield
        finally:
            unregister(pid_file)
            await stop_background(state)

    routes = [
        Route("/webhooks/twilio", webhooks.twilio_inbound, methods=["POST"]),
        Route("/webhooks/twilio/status", webhooks.twilio_status, methods=["POST"]),
        # GET too: only to tell a Vonage SMS API account (which GETs by default) what to switch.
        Route("/webhooks/{provider}", webhooks.provider_webhook, methods=["GET", "POST"]),
        Route("/webhooks/{provider}/status", webhooks.provider_webhook, methods=["GET", "POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi.openapi_json),
        Route("/docs", openapi.docs_page),
        Route("/v1/subscriptions", api.list_subscriptions),
        Route("/v1/consent-events", api.list_consent_events),
        *api_profiles.routes,
        *api_subscriptions.routes,
        *dialects.routes(),
        *api_proof.routes,
        *api_rules.routes,
        console_pages.mount(),
    ]
    app = _Optline(
        routes=routes, lifespan=lifespan, exception_handlers=dict(EXCEPTION_HANDLERS),  # type: ignore[arg-type]
        middleware=[Middleware(IdempotencyMiddleware, state=state, routes=routes)],
    )
    app.state.optline = state
    return app


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the environment (and JSON logs, also in `--workers` children)."""
    settings = load_settings()
    setup_logging(settings.log_level)
    configure_http(settings.header_timeout_seconds)  # in `--workers N` children too
    # The writer and sender threads drop the GIL on every database or socket call and must
    # wait for it to come back; Python's default 5 ms switch interval turns each of those
    # waits into a stall while the event loop is busy (a GIL convoy).
    sys.setswitchinterval(0.0005)
    # Until the lifespan listens for it, a SIGHUP (a reload) must not end the process.
    signal.signal(RELOAD_SIGNAL, signal.SIG_IGN)
    app = create_app(settings, reload_on_signal=True)
    # What start-up built (rules, models, routes, libraries) lives as long as the process:
    # move it out of the collector's sight, and collect the young generation less often.
    # The webhooks' objects are freed by reference counting; the full collections that
    # walked everything were the 99th percentile (50 ms at 16 connections, 18 ms without).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    return app


def check_database(settings: Settings, rules: Rules | None = None) -> None:
    """Fail with one clear line when the database is unreachable or not migrated, or when `rules` drop a brand,
    program or sender that still has subscribers (app.retire)."""
    engine = make_engine(settings.database_url)
    try:
        current = current_revision(engine)
        head = head_revision()
        if current != head:
            raise DatabaseUnavailable(f"the database is at migration {current}, not {head}: run `optline migrate`")
        if rules is not None:
            check_rules_keep_subscribers(rules, engine)
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        raise DatabaseUnavailable(f"cannot reach the database ({reason})") from None
    finally:
        engine.dispose()


__all__: list[Any] = ["app_from_env", "build_state", "create_app"]
