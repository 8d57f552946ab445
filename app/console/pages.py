"""The console's routes: sign-in, programs, a phone's timeline, the consent ledger, the keyword
playground, flagged texts, API keys.

Thin, like the API's: read the form or query, call `queries` (reads, off the event loop)
or a service through the writer (writes), render a template. Every page but sign-in needs
a session; every POST needs the session's CSRF token (403 without).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from functools import partial
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.auth import create_key, revoke_key
from app.console import chart, flags, queries
from app.console.accounts import (
    MAX_EMAIL, ConsoleUser, credentials, note_sign_in, password_matches, sign_out_everywhere, user_by_id,
)
from app.console.sessions import Session, SessionCodec, Throttle
from app.dryrun import DryRun, dry_run
from app.errors import InvalidInput, NotFound
from app.keywords import Brand
from app.phone import to_e164
from app.providers.base import InboundSms
from app.subscriptions import Event, Status
from app.web.state import AppState

log = logging.getLogger("optline.console")

HERE = Path(__file__).parent
CHART_DAYS = 30
MAX_FORM_BYTES = 16 * 1024
MAX_KEY_NAME = 200
MAX_PLAYGROUND_TEXT = 1600  # ten SMS segments: longer than any text a phone sends as one
# Failed sign-ins allowed per email and per client address in a quarter of an hour (per process).
EMAIL_FAILURES, ADDRESS_FAILURES, FAILURE_WINDOW = 10, 50, 900.0
STATUSES = tuple(s.value for s in Status)
SECURITY_HEADERS = {
    # Everything the console loads is its own: no CDN, no inline script, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    """One link of the navigation: a route name and its label (adding a page is one more of these)."""

    route: str
    label: str


NAV = (
    NavItem("console:programs", "Programs"),
    NavItem("console:phone", "Phone timeline"),
    NavItem("console:ledger", "Consent ledger"),
    NavItem("console:playground", "Keyword playground"),
    NavItem("console:flagged", "Flagged texts"),
    NavItem("console:keys", "API keys"),
)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Console:
    """The parts every console request shares, made on first use: templates, session codec, throttles."""

    def __init__(self, state: AppState):
        self.codec = SessionCodec(state.settings)
        self.by_email = Throttle(limit=EMAIL_FAILURES, window=FAILURE_WINDOW)
        self.by_address = Throttle(limit=ADDRESS_FAILURES, window=FAILURE_WINDOW)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["iso"] = _iso

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """The template rendered as a console page (security headers included)."""
        context.setdefault("user", None)
        context.setdefault("csrf", "")
        context.setdefault("brand", None)
        html = self.env.get_template(template).render(
            request=request, nav=NAV, current=_route_name(request), url=request.app.url_path_for, **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


@dataclass(frozen=True)
class Ctx:
    """A signed-in request: who, which brand, and the token its forms carry."""

    request: Request
    state: AppState
    console: Console
    user: ConsoleUser
    session: Session
    brand: Brand
    csrf: str

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page for this user."""
        return self.console.render(self.request, template, status, user=self.user, brand=self.brand, csrf=self.csrf,
                                   **context)


def _state(request: Request) -> AppState:
    return request.app.state.optline  # type: ignore[no-any-return]


def _console(request: Request) -> Console:
    console = getattr(request.app.state, "console", None)
    if console is None:
        console = request.app.state.console = Console(_state(request))
    return console  # type: ignore[no-any-return]


def _route_name(request: Request) -> str | None:
    endpoint = request.scope.get("endpoint")
    return getattr(endpoint, "route_name", None)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def _form(request: Request) -> FormData:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise InvalidInput("form too large")
    return await request.form(max_files=0, max_fields=20, max_part_size=MAX_FORM_BYTES)


Handler = Callable[[Ctx], Awaitable[Response]]


def page(name: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler: sign-in required (GET goes to the sign-in page, anything else 403), CSRF on POST."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            state, console = _state(request), _console(request)
            session = console.codec.read(request, now=state.clock())
            user = await state.read(lambda c: user_by_id(c, user_id=session.user_id)) if session else None
            if session is None or not console.codec.still_valid(session, user):
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    response: Response = _redirect(request.app.url_path_for("console:login") + "?"
                                                   + urlencode({"next": target}))
                else:
                    response = console.render(request, "error.html", 403, title="Signed out",
                                              message="Your session has ended. Sign in again.")
                if session is not None:
                    console.codec.clear(response)
                return response
            assert user is not None
            if user.brand not in state.rules.brands:
                return console.render(request, "error.html", 403, title="Brand not configured",
                                      message=f"The brand {user.brand} is no longer in keywords.yaml.")
            if request.method == "POST":
                try:
                    form = await _form(request)
                except InvalidInput as exc:
                    return console.render(request, "error.html", 413, title="Form refused", message=exc.message)
                if not console.codec.csrf_ok(_text(form, "csrf"), session.nonce):
                    return _csrf_refused(request, console)
                request.state.form = form
            ctx = Ctx(request, state, console, user, session, state.rules.brand(user.brand),
                      console.codec.csrf_token(session.nonce))
            return await handler(ctx)

        endpoint.route_name = name  # type: ignore[attr-defined]
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


def _csrf_refused(request: Request, console: Console) -> Response:
    log.warning("console form refused: missing or invalid CSRF token on %s", request.url.path)
    return console.render(request, "error.html", 403, title="Form refused",
                          message="This form was not sent from the console page (its security token is missing or "
                                  "stale). Reload the page and try again.")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# --- sign-in ------------------------------------------------------------------------------


def _safe_next(raw: str | None) -> str | None:
    # Only a path inside the console: never another site (//evil.example) or a scheme.
    if raw and raw.startswith("/console/") and not raw.startswith("//") and "\\" not in raw and len(raw) < 2000:
        return raw
    return None


async def login_form(request: Request) -> Response:
    """GET /console/login: the sign-in form."""
    state, console = _state(request), _console(request)
    session = console.codec.read(request, now=state.clock())
    if session is not None:
        user = await state.read(lambda c: user_by_id(c, user_id=session.user_id))
        if console.codec.still_valid(session, user):
            return _redirect(request.app.url_path_for("console:programs"))
    return _login_page(request, console)


def _login_page(request: Request, console: Console, *, status: int = 200, error: str | None = None,
                email: str = "", next_path: str | None = None, headers: dict[str, str] | None = None) -> Response:
    nonce, fresh = console.codec.pre_session(request)
    response = console.render(request, "login.html", status, csrf=console.codec.csrf_token(nonce), error=error,
                              email=email,
                              next_path=next_path or _safe_next(request.query_params.get("next")) or "")
    if fresh:
        console.codec.remember_pre_session(response, nonce)
    response.headers.update(headers or {})
    return response


async def login(request: Request) -> Response:
    """POST /console/login: check the password (off the event loop), then set the session cookie."""
    state, console = _state(request), _console(request)
    try:
        form = await _form(request)
    except InvalidInput as exc:
        return console.render(request, "error.html", 413, title="Form refused", message=exc.message)
    if not console.codec.csrf_ok(_text(form, "csrf"), console.codec.pre_session(request)[0]):
        return _csrf_refused(request, console)
    email = _text(form, "email").lower()[:MAX_EMAIL + 1]
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    next_path = _safe_next(_text(form, "next"))
    address = f"address:{request.client.host if request.client else '-'}"
    wait = max(console.by_email.retry_after(f"email:{email}"), console.by_address.retry_after(address))
    if wait:
        return _login_page(request, console, status=429, email=email, next_path=next_path,
                           error=f"Too many failed sign-ins. Try again in {(wait + 59) // 60} minutes.",
                           headers={"Retry-After": str(wait)})
    found = await state.read(lambda c: credentials(c, email=email)) if email else None
    ok = await run_in_threadpool(password_matches, found[1] if found else None, password)
    if not ok or found is None:
        console.by_email.failed(f"email:{email}")
        console.by_address.failed(address)
        return _login_page(request, console, status=401, email=email, next_path=next_path,
                           error="Wrong email or password.")
    user = found[0]
    if not user.active:
        return _login_page(request, console, status=403, email=email, next_path=next_path,
                           error="This account is disabled. Ask whoever runs optline to enable a new one.")
    console.by_email.succeeded(f"email:{email}")
    await state.writer.run(lambda c, now: note_sign_in(c, now, user_id=user.id))
    response = _redirect(next_path or request.app.url_path_for("console:programs"))
    console.codec.issue(response, user_id=user.id, now=state.clock())
    log.info("console sign-in: user %d of brand %s", user.id, user.brand)
    return response


@page("console:logout")
async def logout(ctx: Ctx) -> Response:
    """POST /console/logout: end every session of this account."""
    user_id = ctx.user.id
    await ctx.state.writer.run(lambda c, now: sign_out_everywhere(c, now, user_id=user_id))
    response = _redirect(ctx.request.app.url_path_for("console:login"))
    ctx.console.codec.clear(response)
    return response


async def home(request: Request) -> Response:
    """GET /console: the programs page."""
    return _redirect(request.app.url_path_for("console:programs"))


# --- pages --------------------------------------------------------------------------------


@page("console:programs")
async def programs(ctx: Ctx) -> Response:
    """GET /console/programs: counts per status and the 30-day chart."""
    brand = ctx.brand.key
    today = ctx.state.clock().astimezone(UTC).date()
    first = today - timedelta(days=CHART_DAYS - 1)

    def read(conn: Any) -> tuple[dict[str, dict[str, int]], list[tuple[date, int, int]]]:
        return (queries.status_counts(conn, brand=brand),
                queries.daily_changes(conn, brand=brand, first_day=first, days=CHART_DAYS))

    counts, days = await ctx.state.read(read)
    names = {key: program.name for key, program in ctx.brand.programs.items()}
    rows = [(key, names.get(key), {s: counts.get(key, {}).get(s, 0) for s in STATUSES})
            for key in [*names, *sorted(set(counts) - set(names))]]
    totals = {s: sum(r[2][s] for r in rows) for s in STATUSES}
    return ctx.render("programs.html", rows=rows, totals=totals, statuses=STATUSES, chart=chart.build(days),
                      days=days)


@page("console:phone")
async def phone(ctx: Ctx) -> Response:
    """GET /console/phone?number=: a phone's texts and consent events in time order."""
    raw = ctx.request.query_params.get("number", "").strip()
    if not raw:
        return ctx.render("phone.html", number="", phone=None, items=[], truncated=False, error=None)
    try:
        e164 = to_e164(raw, ctx.brand.default_region)
    except InvalidInput as exc:
        return ctx.render("phone.html", 400, number=raw, phone=None, items=[], truncated=False,
                          error=f"{raw!r} is {exc.message}." if exc.message.startswith("not") else exc.message)
    brand = ctx.brand.key
    items, truncated = await ctx.state.read(lambda c: queries.timeline(c, brand=brand, phone=e164))
    return ctx.render("phone.html", number=raw, phone=e164, items=items, truncated=truncated, error=None)


EVENTS = tuple(e.value for e in Event)


def _day(raw: str, field: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{field} must be a date like 2026-11-26", field=field) from None


def _ledger_filter(ctx: Ctx) -> tuple[queries.LedgerFilter, dict[str, str]]:
    """The ledger's filters from the query string (InvalidInput naming the bad one), and the raw values."""
    q = ctx.request.query_params
    raw = {name: q.get(name, "").strip() for name in ("phone", "program", "event", "since", "until")}
    phone_e164 = None
    if raw["phone"]:
        try:
            phone_e164 = to_e164(raw["phone"], ctx.brand.default_region)
        except InvalidInput as exc:
            raise InvalidInput(f"phone: {exc.message}", field="phone") from None
    if raw["program"] and raw["program"] not in ctx.brand.programs:
        raise InvalidInput(f"program: {ctx.brand.key} has no program {raw['program']!r}", field="program")
    if raw["event"] and raw["event"] not in EVENTS:
        raise InvalidInput(f"event: not one of {', '.join(EVENTS)}", field="event")
    since, until = _day(raw["since"], "since"), _day(raw["until"], "until")
    if since and until and until < since:
        raise InvalidInput("until is before since", field="until")
    where = queries.LedgerFilter(
        phone=phone_e164, program=raw["program"] or None, event=raw["event"] or None,
        since=datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None,
        # "until" names a day and includes it: everything before the next midnight (UTC).
        until=datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1) if until else None,
    )
    return where, raw


@page("console:ledger")
async def ledger(ctx: Ctx) -> Response:
    """GET /console/ledger: the consent ledger, newest first, with filters and a CSV link."""
    try:
        where, raw = _ledger_filter(ctx)
        before_raw = ctx.request.query_params.get("before", "")
        if before_raw and not (before_raw.isdigit() and len(before_raw) < 19):
            raise InvalidInput("before must be an event id", field="before")
    except InvalidInput as exc:
        raw = {n: ctx.request.query_params.get(n, "") for n in ("phone", "program", "event", "since", "until")}
        return ctx.render("ledger.html", 400, raw=raw, rows=[], older=None, error=exc.message, events=EVENTS,
                          query="", older_query="")
    brand = ctx.brand.key
    before = int(before_raw) if before_raw else None
    rows, older = await ctx.state.read(lambda c: queries.ledger_page(c, brand=brand, where=where, before_id=before))
    filters = {k: v for k, v in raw.items() if v}
    return ctx.render("ledger.html", raw=raw, rows=rows, older=older, error=None, events=EVENTS,
                      query=urlencode(filters), older_query=urlencode({**filters, "before": older}) if older else "")


@page("console:ledger_csv")
async def ledger_csv(ctx: Ctx) -> Response:
    """GET /console/ledger.csv: the filtered ledger as CSV (the columns of `optline export consent`)."""
    try:
        where, _raw = _ledger_filter(ctx)
    except InvalidInput as exc:
        return ctx.render("error.html", 400, title="Bad filter", message=exc.message)
    stamp = ctx.state.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="consent-{ctx.brand.key}-{stamp}.csv"'}
    # A sync generator: Starlette runs each step in a thread, so the reads stay off the event loop.
    return StreamingResponse(queries.ledger_csv(ctx.state.reader, brand=ctx.brand.key, where=where),
                             media_type="text/csv; charset=utf-8", headers=headers)


async def _keys_page(ctx: Ctx, status: int = 200, *, new_key: str | None = None, new_prefix: str | None = None,
                     error: str | None = None, notice: str | None = None) -> Response:
    brand = ctx.brand.key
    keys = await ctx.state.read(lambda c: queries.brand_keys(c, brand=brand))
    return ctx.render("keys.html", status, keys=keys, new_key=new_key, new_prefix=new_prefix, error=error,
                      notice=notice)


@page("console:keys")
async def keys(ctx: Ctx) -> Response:
    """GET /console/keys: the brand's API keys."""
    revoked = ctx.request.query_params.get("revoked", "")
    notice = f"Key {revoked} is revoked: the API refuses it from now on." if revoked.isalnum() and len(revoked) <= 16 \
        else None
    return await _keys_page(ctx, notice=notice)


@page("console:create_key")
async def create_key_page(ctx: Ctx) -> Response:
    """POST /console/keys: make a key for the brand and show it once."""
    name = _text(ctx.request.state.form, "name") or None
    if name is not None and len(name) > MAX_KEY_NAME:
        return await _keys_page(ctx, 400, error=f"The name must have at most {MAX_KEY_NAME} characters.")
    brand = ctx.brand.key
    info, key = await ctx.state.writer.run(lambda c, now: create_key(c, now, brand=brand, name=name))
    log.info("console: user %d created API key %s for brand %s", ctx.user.id, info.prefix, brand)
    return await _keys_page(ctx, 201, new_key=key, new_prefix=info.prefix)


@page("console:revoke_key")
async def revoke_key_page(ctx: Ctx) -> Response:
    """POST /console/keys/revoke: revoke one of the brand's keys, at once."""
    prefix = _text(ctx.request.state.form, "prefix")
    brand = ctx.brand.key

    def revoke(conn: Any, now: datetime) -> None:
        # Another brand's key is answered like a missing one: a user learns nothing about other brands.
        if queries.key_brand(conn, prefix=prefix) != brand:
            raise NotFound(f"no key with prefix {prefix}")
        revoke_key(conn, now, key_or_prefix=prefix)

    try:
        await ctx.state.writer.run(revoke)
    except NotFound:
        return await _keys_page(ctx, 404, error=f"This brand has no key {prefix}.")
    log.info("console: user %d revoked API key %s of brand %s", ctx.user.id, prefix, brand)
    return _redirect(ctx.request.app.url_path_for("console:keys") + "?" + urlencode({"revoked": prefix}))


def _senders(brand: Brand) -> list[str]:
    """The brand's receiving numbers and Messaging Services, each once, in keywords.yaml's order."""
    return list(dict.fromkeys(sender for program in brand.programs.values() for sender in program.senders))


def _playground_page(ctx: Ctx, status: int = 200, *, text: str = "", number: str = "", to: str = "",
                     error: str | None = None, field: str | None = None, phone: str | None = None,
                     report: DryRun | None = None) -> Response:
    return ctx.render("playground.html", status, text=text, number=number, to=to, senders=_senders(ctx.brand),
                      error=error, field=field, phone=phone, report=report, max_text=MAX_PLAYGROUND_TEXT)


@page("console:playground")
async def playground(ctx: Ctx) -> Response:
    """GET /console/playground: the form to try a text."""
    return _playground_page(ctx)


@page("console:try_text")
async def try_text(ctx: Ctx) -> Response:
    """POST /console/playground: what the text would do (the dry run of `optline simulate`), nothing written."""
    form = ctx.request.state.form
    raw_text = form.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    number, to = _text(form, "phone"), _text(form, "to")
    again = {"text": text, "number": number, "to": to}
    if not text.strip():
        return _playground_page(ctx, 422, **again, error="Type a text to try.", field="text")
    if "\x00" in text:  # no text a provider delivers holds one, and PostgreSQL cannot store it
        return _playground_page(ctx, 422, **again, error="The text must not contain NUL characters.", field="text")
    if len(text) > MAX_PLAYGROUND_TEXT:
        return _playground_page(ctx, 422, **again, error=f"The text must have at most {MAX_PLAYGROUND_TEXT} "
                                                         "characters.", field="text")
    if to not in _senders(ctx.brand):
        # Another brand's number is answered like an unknown one: a user learns nothing about other brands.
        return _playground_page(ctx, 422, **again, error=f"{ctx.brand.name} receives no texts on {to!r}: pick one "
                                                         "of its numbers.", field="to")
    try:
        e164 = to_e164(number, ctx.brand.default_region)
    except InvalidInput as exc:
        message = f"{number!r} is {exc.message}." if exc.message.startswith("not") else exc.message
        return _playground_page(ctx, 422, **again, error=message, field="phone")
    service = to if to.startswith("MG") else None
    sms = InboundSms(
        provider="playground", message_id="PLAY" + secrets.token_hex(16), account_id=None, from_phone=e164, to=to,
        service_id=service, body=text, num_media=0, opt_out_type=None, params={"From": e164, "To": to, "Body": text},
    )
    report = await ctx.state.writer.run(partial(dry_run, sms=sms, rules=ctx.state.rules), locks=[e164])
    return _playground_page(ctx, **again, phone=e164, report=report)


RESOLUTIONS = {"opt_out": flags.Resolution.OPTED_OUT, "dismiss": flags.Resolution.DISMISSED}
NOTICES = {
    flags.Resolution.OPTED_OUT.value: "The text was treated as an opt-out: the phone is unsubscribed from every "
                                      "program of this brand.",
    flags.Resolution.DISMISSED.value: "The text was dismissed: nothing else changed.",
}


async def _flagged_page(ctx: Ctx, status: int = 200, *, error: str | None = None,
                        notice: str | None = None) -> Response:
    brand = ctx.brand.key
    rows = await ctx.state.read(lambda c: queries.flagged_texts(c, brand=brand))
    return ctx.render("flagged.html", status, rows=rows, error=error, notice=notice, limit=queries.FLAGGED_LIMIT)


@page("console:flagged")
async def flagged(ctx: Ctx) -> Response:
    """GET /console/flagged: the brand's flagged texts awaiting a decision, newest first."""
    return await _flagged_page(ctx, notice=NOTICES.get(ctx.request.query_params.get("resolved", "")))


@page("console:resolve_flag")
async def resolve_flag(ctx: Ctx) -> Response:
    """POST /console/flagged: treat a flagged text as an opt-out, or dismiss it."""
    form = ctx.request.state.form
    raw_id, action = _text(form, "id"), _text(form, "action")
    resolution = RESOLUTIONS.get(action)
    if resolution is None or not (raw_id.isdigit() and len(raw_id) < 19):
        return await _flagged_page(ctx, 400, error="The form named no flagged text or no action.")
    message_id, brand, email = int(raw_id), ctx.brand, ctx.user.email
    found, phone = await ctx.state.read(lambda c: queries.flagged_phone(c, brand=brand.key, message_id=message_id))
    if not found:
        # Another brand's text is answered like a missing one, as is a text resolved meanwhile.
        return await _flagged_page(ctx, 404, error="This brand has no such flagged text awaiting a decision.")
    try:
        if resolution is flags.Resolution.DISMISSED:
            await ctx.state.writer.run(lambda c, now: flags.dismiss(c, now, brand=brand, message_id=message_id,
                                                                    email=email))
        elif phone is None:
            return await _flagged_page(ctx, 409, error="This text came from an address that is not a phone number: "
                                                       "there is no subscription to end. Dismiss it instead.")
        else:
            rules = ctx.state.rules
            await ctx.state.writer.run(
                lambda c, now: flags.treat_as_opt_out(c, now, rules=rules, brand=brand, message_id=message_id,
                                                      phone=phone, email=email),
                locks=[phone])
    except NotFound:
        return await _flagged_page(ctx, 404, error="This brand has no such flagged text awaiting a decision.")
    log.info("console: user %d resolved flagged text %d of brand %s as %s", ctx.user.id, message_id, brand.key,
             resolution.value)
    return _redirect(ctx.request.app.url_path_for("console:flagged") + "?"
                     + urlencode({"resolved": resolution.value}))


routes = [
    Route("/", home, name="home"),
    Route("/login", login_form, methods=["GET"], name="login"),
    Route("/login", login, methods=["POST"], name="login_post"),
    Route("/logout", logout, methods=["POST"], name="logout"),
    Route("/programs", programs, name="programs"),
    Route("/phone", phone, name="phone"),
    Route("/ledger", ledger, name="ledger"),
    Route("/ledger.csv", ledger_csv, name="ledger_csv"),
    Route("/playground", playground, methods=["GET"], name="playground"),
    Route("/playground", try_text, methods=["POST"], name="try_text"),
    Route("/flagged", flagged, methods=["GET"], name="flagged"),
    Route("/flagged", resolve_flag, methods=["POST"], name="resolve_flag"),
    Route("/keys", keys, methods=["GET"], name="keys"),
    Route("/keys", create_key_page, methods=["POST"], name="create_key"),
    Route("/keys/revoke", revoke_key_page, methods=["POST"], name="revoke_key"),
    Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
]


def mount() -> Mount:
    """The console, mounted at /console."""
    return Mount("/console", routes=routes, name="console")


__all__ = ["NAV", "mount", "routes"]
