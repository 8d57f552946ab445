"""A phone's page: a header with one line per program (status, since when, how it joined, the last
opt-out and why), the timeline newest first with filters, the evidence link, and a confirmed
console opt-out (compliance)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from app.console import flags, queries
from app.console.roles import Role
from app.console.web import MAX_REASON, Ctx, log, page, redirect, text
from app.errors import InvalidInput
from app.phone import to_e164

KINDS = {"inbound": "Texts in", "outbound": "Texts out", "consent": "Consent events"}


def phone_path(ctx: Ctx, e164: str, **query: Any) -> str:
    """The path of a phone's page (the + escaped, so it survives any proxy)."""
    path = ctx.request.app.url_path_for("console:phone_page", phone=quote(e164, safe=""))
    return path + ("?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items()) if query else "")


def _number(ctx: Ctx, raw: str) -> str:
    try:
        return to_e164(raw, ctx.brand.default_region)
    except InvalidInput as exc:
        raise InvalidInput(f"{raw!r} is {exc.message}." if exc.message.startswith("not") else exc.message) from None


@page("console:phone")
async def phone(ctx: Ctx) -> Response:
    """GET /console/phone?number=: find a phone however it is written, then go to its page."""
    raw = ctx.request.query_params.get("number", "").strip()
    if not raw:
        return ctx.render("phone_search.html", number="", error=None)
    try:
        e164 = _number(ctx, raw)
    except InvalidInput as exc:
        return ctx.render("phone_search.html", 400, number=raw, error=exc.message)
    return redirect(phone_path(ctx, e164))


@page("console:phone_page")
async def phone_page(ctx: Ctx) -> Response:
    """GET /console/phones/{phone}: the header, then the timeline newest first (filters: kind, program)."""
    raw = ctx.request.path_params["phone"]
    try:
        e164 = _number(ctx, raw)
    except InvalidInput as exc:
        return ctx.render("phone_search.html", 400, number=raw, error=exc.message)
    q = ctx.request.query_params
    kind, program = q.get("kind", ""), q.get("program", "")
    if (kind and kind not in KINDS) or (program and program not in ctx.brand.programs):
        return ctx.render("phone_search.html", 400, number=raw,
                          error=f"Unknown filter: kind is one of {', '.join(KINDS)}, program one of "
                                f"{', '.join(ctx.brand.programs)}.")
    brand = ctx.brand.key

    def read(conn: Any) -> tuple[list[queries.ProgramLine], list[queries.TimelineItem], bool]:
        header = queries.phone_header(conn, brand=brand, phone=e164)
        items, truncated = queries.timeline(conn, brand=brand, phone=e164)
        return header, items, truncated

    header, items, truncated = await ctx.state.read(read)
    items = [i for i in reversed(items) if (not kind or i.kind == kind) and (not program or i.program == program)]
    return ctx.render("phone.html", phone=e164, header=header, items=items, truncated=truncated, kinds=KINDS,
                      kind=kind, program=program, evidence=phone_path(ctx, e164) + "/evidence",
                      self_path=phone_path(ctx, e164), error=None,
                      notice="The phone is opted out; the consent ledger has your reason." if q.get("opted_out")
                      else None)


@page("console:opt_out", needs=Role.COMPLIANCE)
async def opt_out_page(ctx: Ctx) -> Response:
    """POST /console/phones/{phone}/opt-out: confirmed, with a reason, opt the phone out of one program or all."""
    form = ctx.form()
    try:
        e164 = _number(ctx, ctx.request.path_params["phone"])
    except InvalidInput as exc:
        return ctx.render("error.html", 400, title="Not a phone number", message=exc.message)
    program, reason = text(form, "program"), text(form, "reason")
    brand = ctx.brand
    if program != "all" and program not in brand.programs:
        return ctx.render("error.html", 400, title="No such program",
                          message=f"{brand.name} has no program {program!r}.")
    programs = list(brand.programs) if program == "all" else [program]
    confirmed = text(form, "confirmed") == "yes"
    problem = None
    if confirmed and not reason:
        problem = "Give a reason: it is kept in the consent ledger with your email."
    elif len(reason) > MAX_REASON:
        problem = f"The reason must have at most {MAX_REASON} characters."
    email = ctx.user.email
    if not confirmed or problem:
        names = ", ".join(brand.programs[p].name for p in programs)
        return ctx.render(
            "confirm.html", 422 if problem else 200, title=f"Opt {e164} out of {names}?",
            action=phone_path(ctx, e164) + "/opt-out", fields={"program": program}, button=f"Opt {e164} out",
            cancel=phone_path(ctx, e164), reason=True, reason_value=reason, error=problem,
            consequences=[f"{e164} is unsubscribed from {names}.",
                          "The stop reply is sent to the phone if it was subscribed or pending.",
                          f"The consent ledger records a console opt-out by {email} with your reason.",
                          "Only a new consent can undo it: the phone texting a join keyword or START, or a new "
                          "opt-in with proof through the API."])
    rules = ctx.state.rules
    await ctx.state.writer.run(
        lambda c, now: flags.console_opt_out(c, now, rules=rules, brand=brand, programs=programs, phone=e164,
                                             email=email, reason=reason),
        locks=[e164])
    log.info("console: user %d opted a phone out of %s of brand %s", ctx.user.id, ",".join(programs), brand.key)
    return redirect(phone_path(ctx, e164, opted_out=program))
