"""Flagged texts: the detector's reason and the programs each concerns, a decision (an opt-out is
confirmed and needs a reason), and the history of decisions with who and when."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from app.console import flags, queries
from app.console.roles import Role
from app.console.web import MAX_REASON, Ctx, log, page, redirect, text
from app.errors import NotFound
from app.keywords import Brand, Rules

RESOLUTIONS = {"opt_out": flags.Resolution.OPTED_OUT, "dismiss": flags.Resolution.DISMISSED}
NOTICES = {
    flags.Resolution.OPTED_OUT.value: "The text was treated as an opt-out: the phone is unsubscribed from every "
                                      "program of this brand.",
    flags.Resolution.DISMISSED.value: "The text was dismissed: nothing else changed.",
}


def programs_on(brand: Brand, to: str, service_id: str | None) -> list[str]:
    """The brand's programs that receive texts on the number (or service) a text was sent to."""
    return [key for key, program in brand.programs.items() if to in program.senders or
            (service_id is not None and service_id in program.senders)]


def reason_now(rules: Rules, row: queries.FlaggedText) -> str:
    """Why the detector flags this text, as the loaded keywords.yaml reads it."""
    sender = rules.for_sender(row.to, row.service_id)
    match = sender.match(row.body, None) if sender is not None else None
    return (match.why if match is not None and match.why else "") or "close to an opt-out but not one"


async def _flagged_page(ctx: Ctx, status: int = 200, *, error: str | None = None,
                        notice: str | None = None) -> Response:
    brand = ctx.brand.key

    def read(conn: Any) -> tuple[list[queries.FlaggedText], list[queries.FlaggedText]]:
        return queries.flagged_texts(conn, brand=brand), queries.flag_decisions(conn, brand=brand)

    rows, decided = await ctx.state.read(read)
    rules = ctx.state.rules
    why = {r.id: reason_now(rules, r) for r in rows}
    programs = {r.id: programs_on(ctx.brand, r.to, r.service_id) for r in [*rows, *decided]}
    return ctx.render("flagged.html", status, rows=rows, decided=decided, why=why, programs=programs, error=error,
                      notice=notice, limit=queries.FLAGGED_LIMIT)


@page("console:flagged")
async def flagged(ctx: Ctx) -> Response:
    """GET /console/flagged: the brand's flagged texts awaiting a decision, newest first, and past decisions."""
    return await _flagged_page(ctx, notice=NOTICES.get(ctx.request.query_params.get("resolved", "")))


@page("console:resolve_flag", needs=Role.COMPLIANCE)
async def resolve_flag(ctx: Ctx) -> Response:
    """POST /console/flagged: dismiss a flagged text, or (confirmed, with a reason) treat it as an opt-out."""
    form = ctx.form()
    raw_id, action, reason = text(form, "id"), text(form, "action"), text(form, "reason")
    resolution = RESOLUTIONS.get(action)
    if resolution is None or not (raw_id.isdigit() and len(raw_id) < 19):
        return await _flagged_page(ctx, 400, error="The form named no flagged text or no action.")
    message_id, brand, email = int(raw_id), ctx.brand, ctx.user.email
    found, phone = await ctx.state.read(lambda c: queries.flagged_phone(c, brand=brand.key, message_id=message_id))
    if not found:
        # Another brand's text is answered like a missing one, as is a text resolved meanwhile.
        return await _flagged_page(ctx, 404, error="This brand has no such flagged text awaiting a decision.")
    if resolution is flags.Resolution.OPTED_OUT:
        if phone is None:
            return await _flagged_page(ctx, 409, error="This text came from an address that is not a phone number: "
                                                       "there is no subscription to end. Dismiss it instead.")
        confirmed = text(form, "confirmed") == "yes"
        problem = None
        if confirmed and not reason:
            problem = "Give a reason: it is kept in the consent ledger with your email."
        elif len(reason) > MAX_REASON:
            problem = f"The reason must have at most {MAX_REASON} characters."
        if not confirmed or problem:
            return ctx.render(
                "confirm.html", 422 if problem else 200, title=f"Opt {phone} out of every program?",
                action=ctx.url("console:resolve_flag"), fields={"id": raw_id, "action": action},
                button=f"Opt {phone} out", cancel=ctx.url("console:flagged"), reason=True, reason_value=reason,
                error=problem,
                consequences=[f"{phone} is unsubscribed from every program of {brand.name} "
                              f"({', '.join(brand.programs)}).",
                              "The stop reply is sent to the phone.",
                              f"The consent ledger records a console opt-out by {email} with your reason.",
                              "Only a new consent can undo it: the phone texting a join keyword or START, or a new "
                              "opt-in with proof through the API."])
    try:
        if resolution is flags.Resolution.DISMISSED:
            await ctx.state.writer.run(lambda c, now: flags.dismiss(c, now, brand=brand, message_id=message_id,
                                                                    email=email))
        else:
            assert phone is not None
            rules = ctx.state.rules
            await ctx.state.writer.run(
                lambda c, now: flags.treat_as_opt_out(c, now, rules=rules, brand=brand, message_id=message_id,
                                                      phone=phone, email=email, reason=reason),
                locks=[phone])
    except NotFound:
        return await _flagged_page(ctx, 404, error="This brand has no such flagged text awaiting a decision.")
    log.info("console: user %d resolved flagged text %d of brand %s as %s", ctx.user.id, message_id, brand.key,
             resolution.value)
    return redirect(ctx.url("console:flagged", resolved=resolution.value))
