"""Signing in and out, the one-time password reset link, and changing one's own password."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from app.console import throttle
from app.console.accounts import (
    MAX_EMAIL, MAX_PASSWORD, change_password, check_password_rules, credentials, finish_reset, hash_password,
    note_sign_in, password_matches, reset_holder, sign_out_everywhere, user_by_id,
)
from app.console.web import Console, Ctx, console_of, csrf_refused, log, page, read_form, redirect, state_of, text
from app.errors import InvalidInput, NotFound


def _safe_next(raw: str | None) -> str | None:
    # Only a path inside the console: never another site (//evil.example) or a scheme.
    if raw and raw.startswith("/console/") and not raw.startswith("//") and "\\" not in raw and len(raw) < 2000:
        return raw
    return None


def _client(request: Request) -> str:
    return throttle.client_key(request.client.host if request.client else None)


async def login_form(request: Request) -> Response:
    """GET /console/login: the sign-in form."""
    state, console = state_of(request), console_of(request)
    session = console.codec.read(request, now=state.clock())
    if session is not None:
        user = await state.read(lambda c: user_by_id(c, user_id=session.user_id))
        if console.codec.still_valid(session, user):
            return redirect(request.app.url_path_for("console:programs"))
    return _login_page(request, console)


def _login_page(request: Request, console: Console, *, status: int = 200, error: str | None = None,
                email: str = "", next_path: str | None = None, headers: dict[str, str] | None = None,
                notice: str | None = None) -> Response:
    nonce, fresh = console.codec.pre_session(request)
    response = console.render(request, "login.html", status, csrf=console.codec.csrf_token(nonce), error=error,
                              email=email, notice=notice,
                              next_path=next_path or _safe_next(request.query_params.get("next")) or "")
    if fresh:
        console.codec.remember_pre_session(response, nonce)
    response.headers.update(headers or {})
    return response


def _wait_text(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{(seconds + 59) // 60} minutes"


async def login(request: Request) -> Response:
    """POST /console/login: the throttle, then the password (off the event loop), then the session cookie."""
    state, console = state_of(request), console_of(request)
    try:
        form = await read_form(request)
    except InvalidInput as exc:
        return console.render(request, "error.html", 413, title="Form refused", message=exc.message)
    if not console.codec.csrf_ok(text(form, "csrf"), console.codec.pre_session(request)[0]):
        return csrf_refused(request, console)
    email = text(form, "email").lower()[:MAX_EMAIL + 1]
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    next_path = _safe_next(text(form, "next"))
    address = _client(request)
    verdict = await state.writer.run(lambda c, now: throttle.begin_try(c, now, email=email, address=address))
    if verdict.wait:
        log.warning("console sign-in slowed: failures for an account from %s; next try in %d s", address,
                    verdict.retry_after)
        return _login_page(request, console, status=429, email=email, next_path=next_path,
                           error=f"Too many failed sign-ins from here. Try again in "
                                 f"{_wait_text(verdict.retry_after)}.",
                           headers={"Retry-After": str(verdict.retry_after)})
    found = await state.read(lambda c: credentials(c, email=email)) if email else None
    ok = await run_in_threadpool(password_matches, found[1] if found else None, password)
    if not ok or found is None:
        return _login_page(request, console, status=401, email=email, next_path=next_path,
                           error="Wrong email or password.")
    user = found[0]

    def signed_in(conn: Any, now: Any) -> None:
        throttle.succeeded(conn, now, email=email, address=address)
        if user.active:
            note_sign_in(conn, now, user_id=user.id)

    await state.writer.run(signed_in)
    if not user.active:
        return _login_page(request, console, status=403, email=email, next_path=next_path,
                           error="This account is disabled. Ask whoever runs optline to enable it "
                                 "(optline users enable).")
    response = redirect(next_path or request.app.url_path_for("console:programs"))
    console.codec.issue(response, user_id=user.id, now=state.clock())
    log.info("console sign-in: user %d of brand %s", user.id, user.brand)
    return response


@page("console:logout")
async def logout(ctx: Ctx) -> Response:
    """POST /console/logout: end every session of this account."""
    user_id = ctx.user.id
    await ctx.state.writer.run(lambda c, now: sign_out_everywhere(c, now, user_id=user_id))
    response = redirect(ctx.request.app.url_path_for("console:login"))
    ctx.console.codec.clear(response)
    return response


def _new_password(form: Any) -> str:
    """The new password typed twice; InvalidInput when they differ or break the rules."""
    first, again = form.get("new_password"), form.get("new_password_again")
    first = first if isinstance(first, str) else ""
    if first != (again if isinstance(again, str) else ""):
        raise InvalidInput("the two new passwords differ", field="new_password")
    check_password_rules(first)
    return first


# --- the one-time reset link (`optline users reset-password`) -----------------------------


def _reset_page(request: Request, console: Console, token: str, *, status: int = 200, error: str | None = None,
                email: str | None = None) -> Response:
    nonce, fresh = console.codec.pre_session(request)
    response = console.render(request, "reset.html", status, csrf=console.codec.csrf_token(nonce), token=token,
                              error=error, email=email)
    if fresh:
        console.codec.remember_pre_session(response, nonce)
    return response


_DEAD_LINK = "This reset link is unknown, already used or expired. Ask whoever runs optline for a new one."


async def reset_form(request: Request) -> Response:
    """GET /console/reset/{token}: the form to choose a new password, when the link is still good."""
    state, console = state_of(request), console_of(request)
    token = request.path_params["token"]
    now = state.clock()
    user = await state.read(lambda c: reset_holder(c, now, token=token))
    if user is None:
        return console.render(request, "error.html", 404, title="Reset link not valid", message=_DEAD_LINK)
    return _reset_page(request, console, token, email=user.email)


async def reset(request: Request) -> Response:
    """POST /console/reset/{token}: set the new password, use the link up, end every session, sign in again."""
    state, console = state_of(request), console_of(request)
    token = request.path_params["token"]
    try:
        form = await read_form(request)
    except InvalidInput as exc:
        return console.render(request, "error.html", 413, title="Form refused", message=exc.message)
    if not console.codec.csrf_ok(text(form, "csrf"), console.codec.pre_session(request)[0]):
        return csrf_refused(request, console)
    try:
        password = _new_password(form)
    except InvalidInput as exc:
        return _reset_page(request, console, token, status=422, error=exc.message.capitalize() + ".")
    digest = await run_in_threadpool(hash_password, password)
    try:
        user = await state.writer.run(lambda c, now: finish_reset(c, now, token=token, password_hash=digest))
    except NotFound:
        return console.render(request, "error.html", 404, title="Reset link not valid", message=_DEAD_LINK)
    log.info("console: user %d of brand %s set a new password with a reset link", user.id, user.brand)
    return _login_page(request, console, email=user.email,
                       notice="Your new password is set and every earlier session has ended. Sign in with it.")


# --- one's own account ----------------------------------------------------------------------


@page("console:account")
async def account(ctx: Ctx) -> Response:
    """GET /console/account: who am I, my role, and the form to change my password."""
    done = ctx.request.query_params.get("changed") == "1"
    return ctx.render("account.html", error=None,
                      notice="Your password is changed; other sessions have ended." if done else None)


@page("console:change_password")
async def change_own_password(ctx: Ctx) -> Response:
    """POST /console/account: check the current password, set the new one, end the other sessions."""
    form = ctx.form()
    current = form.get("current_password")
    current = current if isinstance(current, str) and len(current) <= MAX_PASSWORD else ""
    email = ctx.user.email
    found = await ctx.state.read(lambda c: credentials(c, email=email))
    if not await run_in_threadpool(password_matches, found[1] if found else None, current):
        return ctx.render("account.html", 403, error="The current password is wrong.", notice=None)
    try:
        password = _new_password(form)
    except InvalidInput as exc:
        return ctx.render("account.html", 422, error=exc.message.capitalize() + ".", notice=None)
    digest = await run_in_threadpool(hash_password, password)
    user_id = ctx.user.id
    await ctx.state.writer.run(lambda c, now: change_password(c, now, user_id=user_id, password_hash=digest))
    log.info("console: user %d changed their password", user_id)
    response = redirect(ctx.url("console:account", changed="1"))
    ctx.console.codec.issue(response, user_id=user_id, now=ctx.state.clock())
    return response
