"""The keyword playground: type a text and a phone, see what it would do (the dry run), nothing written."""

from __future__ import annotations

import secrets
from functools import partial

from starlette.responses import Response

from app.console.web import Ctx, page, text as field_text
from app.dryrun import DryRun, dry_run
from app.errors import InvalidInput
from app.keywords import Brand
from app.phone import country_of, in_countries, to_e164
from app.providers.base import InboundSms

MAX_PLAYGROUND_TEXT = 1600  # ten SMS segments: longer than any text a phone sends as one
# Kinds of text that would prompt or subscribe: the ones the brand's country rule can refuse.
_PROMPTING = frozenset({"join", "confirm", "start"})


def senders(brand: Brand) -> list[str]:
    """The brand's receiving numbers and Messaging Services, each once, in keywords.yaml's order."""
    return list(dict.fromkeys(sender for program in brand.programs.values() for sender in program.senders))


def why_nothing(brand: Brand, phone: str, report: DryRun) -> str | None:
    """Why a text that asks to join changes nothing, when the reason is the brand's country rule."""
    kind = report.match.kind.value if report.match is not None and report.match.kind is not None else None
    allowed = brand.allowed_countries
    if report.transitions or kind not in _PROMPTING or allowed is None or in_countries(phone, allowed):
        return None
    country = country_of(phone)
    where = f"is from {country}" if country else "belongs to no country the numbering plan names"
    return (f"{brand.name} only texts numbers of {', '.join(sorted(allowed))} (allowed_countries in "
            f"keywords.yaml); this number {where}, so the text would be stored and nothing else.")


def _page(ctx: Ctx, status: int = 200, *, text: str = "", number: str = "", to: str = "", error: str | None = None,
          field: str | None = None, phone: str | None = None, report: DryRun | None = None) -> Response:
    why = why_nothing(ctx.brand, phone, report) if phone and report is not None else None
    return ctx.render("playground.html", status, text=text, number=number, to=to, senders=senders(ctx.brand),
                      error=error, field=field, phone=phone, report=report, max_text=MAX_PLAYGROUND_TEXT,
                      why_nothing=why)


@page("console:playground")
async def playground(ctx: Ctx) -> Response:
    """GET /console/playground: the form to try a text."""
    return _page(ctx)


@page("console:try_text")
async def try_text(ctx: Ctx) -> Response:
    """POST /console/playground: what the text would do (the dry run of `optline simulate`), nothing written."""
    form = ctx.form()
    raw_text = form.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    number, to = field_text(form, "phone"), field_text(form, "to")
    again = {"text": text, "number": number, "to": to}
    if not text.strip():
        return _page(ctx, 422, **again, error="Type a text to try.", field="text")
    if len(text) > MAX_PLAYGROUND_TEXT:
        return _page(ctx, 422, **again, error=f"The text must have at most {MAX_PLAYGROUND_TEXT} characters.",
                     field="text")
    if "\x00" in text:
        return _page(ctx, 422, **again, error="The text holds a NUL character, which no phone sends.", field="text")
    if to not in senders(ctx.brand):
        # Another brand's number is answered like an unknown one: a user learns nothing about other brands.
        return _page(ctx, 422, **again, error=f"{ctx.brand.name} receives no texts on {to!r}: pick one of its "
                                              "numbers.", field="to")
    try:
        e164 = to_e164(number, ctx.brand.default_region)
    except InvalidInput as exc:
        message = f"{number!r} is {exc.message}." if exc.message.startswith("not") else exc.message
        return _page(ctx, 422, **again, error=message, field="phone")
    service = to if to.startswith("MG") else None
    sms = InboundSms(
        provider="playground", message_id="PLAY" + secrets.token_hex(16), account_id=None, from_phone=e164, to=to,
        service_id=service, body=text, num_media=0, opt_out_type=None, params={"From": e164, "To": to, "Body": text},
    )
    report = await ctx.state.writer.run(partial(dry_run, sms=sms, rules=ctx.state.rules), locks=[e164])
    return _page(ctx, **again, phone=e164, report=report)


__all__ = ["playground", "senders", "try_text", "why_nothing"]
