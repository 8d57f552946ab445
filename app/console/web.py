"""What every console route shares: templates, the signed-in request (`Ctx`), the `page` wrapper
that checks the session, the role and the CSRF token, and small form helpers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.console.accounts import ConsoleUser, user_by_id
from app.console.roles import Role, allows
from app.console.sessions import Session, SessionCodec
from app.errors import InvalidInput
from app.keywords import Brand
from app.web.state import AppState

log = logging.getLogger("optline.console")

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
MAX_REASON = 500


@dataclass(frozen=True)
class NavItem:
    """One link of the navigation: a route name, its label, and the role it needs."""

    route: str
    label: str
    needs: Role = Role.VIEWER


NAV = (
    NavItem("console:programs", "Programs"),
    NavItem("console:phone", "Phone"),
    NavItem("console:ledger", "Consent ledger"),
    NavItem("console:analytics", "Analytics"),
    NavItem("console:operations", "Operations"),
    NavItem("console:playground", "Playground"),
    NavItem("console:flagged", "Flagged texts"),
    NavItem("console:keywords", "Keywords"),
    NavItem("console:keys", "API keys", Role.OWNER),
    NavItem("console:account", "Account"),
)


def parse_day(raw: str, field: str) -> date | None:
    """A YYYY-MM-DD day from a filter field, None when empty; InvalidInput naming the field otherwise."""
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{field} must be a date like 2026-11-26", field=field) from None


def when(value: datetime | None) -> str:
    """A time as the console shows it (UTC, to the second)."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    """A time for a <time datetime=…> attribute."""
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Console:
    """The parts every console request shares, made on first use: templates and the session codec."""

    def __init__(self, state: AppState):
        self.codec = SessionCodec(state.settings)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters["when"] = when
        self.env.filters["iso"] = iso

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """The template rendered as a console page (app.console.headers adds the security headers)."""
        context.setdefault("user", None)
        context.setdefault("csrf", "")
        context.setdefault("brand", None)
        user = context["user"]
        nav = [item for item in NAV if user is not None and allows(user.role, item.needs)]
        html = self.env.get_template(template).render(
            request=request, nav=nav, current=route_name(request), url=request.app.url_path_for,
            can=lambda needed: user is not None and allows(user.role, Role(needed)), **context,
        )
        return HTMLResponse(html, status_code=status)


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

    def url(self, name: str, **query: Any) -> str:
        """The path of a console route, with a query string when given."""
        path = self.request.app.url_path_for(name)
        return path + ("?" + urlencode(query) if query else "")

    def form(self) -> FormData:
        """The POST's form (read and CSRF-checked by `page`)."""
        return self.request.state.form  # type: ignore[no-any-return]


def state_of(request: Request) -> AppState:
    """The app's state."""
    return request.app.state.optline  # type: ignore[no-any-return]


def console_of(request: Request) -> Console:
    """The console's shared parts, made on first use."""
    console = getattr(request.app.state, "console", None)
    if console is None:
        console = request.app.state.console = Console(state_of(request))
    return console  # type: ignore[no-any-return]


def route_name(request: Request) -> str | None:
    """The route name of the request's endpoint (set by `page`)."""
    endpoint = request.scope.get("endpoint")
    return getattr(endpoint, "route_name", None)


def redirect(url: str) -> RedirectResponse:
    """A 303 to `url` (after a POST: the browser GETs it, so a refresh never posts again)."""
    return RedirectResponse(url, status_code=303)


async def read_form(request: Request) -> FormData:
    """The request's form, bounded; InvalidInput when too large."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise InvalidInput("form too large")
    return await request.form(max_files=0, max_fields=30, max_part_size=MAX_FORM_BYTES)


def text(form: FormData, name: str) -> str:
    """A form field's text, stripped ('' when missing)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def csrf_refused(request: Request, console: Console) -> Response:
    """The page for a form that did not carry its session's token."""
    log.warning("console form refused: missing or invalid CSRF token on %s", request.url.path)
    return console.render(request, "error.html", 403, title="Form refused",
                          message="This form was not sent from the console page (its security token is missing or "
                                  "stale). Reload the page and try again.")


Handler = Callable[[Ctx], Awaitable[Response]]


def page(name: str, needs: Role = Role.VIEWER) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler: sign-in required (GET goes to the sign-in page, anything else 403), the role
    `needs` required (403 naming it), CSRF on POST."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            state, console = state_of(request), console_of(request)
            session = console.codec.read(request, now=state.clock())
            user = await state.read(lambda c: user_by_id(c, user_id=session.user_id)) if session else None
            if session is None or not console.codec.still_valid(session, user):
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    response: Response = redirect(request.app.url_path_for("console:login") + "?"
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
            brand = state.rules.brand(user.brand)
            csrf = console.codec.csrf_token(session.nonce)
            if not allows(user.role, needs):
                log.warning("console: user %d (%s) refused %s %s: needs %s", user.id, user.role, request.method,
                            request.url.path, needs.value)
                return console.render(request, "error.html", 403, user=user, brand=brand, csrf=csrf,
                                      title="Not allowed for your role",
                                      message=f"This needs the {needs.value} role; your account is {user.role}. "
                                              "Ask the brand's owner.")
            if request.method == "POST":
                try:
                    form = await read_form(request)
                except InvalidInput as exc:
                    return console.render(request, "error.html", 413, title="Form refused", message=exc.message)
                if not console.codec.csrf_ok(text(form, "csrf"), session.nonce):
                    return csrf_refused(request, console)
                request.state.form = form
            return await handler(Ctx(request, state, console, user, session, brand, csrf))

        endpoint.route_name = name  # type: ignore[attr-defined]
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


async def not_found(scope: Any, receive: Any, send: Any) -> None:
    """The console's own 404 page for a path under /console that is no page."""
    request = Request(scope, receive)
    response = console_of(request).render(request, "error.html", 404, title="Not found",
                                          message="There is no console page at this address.")
    await response(scope, receive, send)


__all__ = ["NAV", "Console", "Ctx", "page", "redirect", "text"]
