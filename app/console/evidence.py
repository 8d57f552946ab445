"""The console's printable evidence pack of one phone: GET /console/phones/{phone}/evidence.

The same pack as GET /v1/contacts/{phone}/evidence (app.evidence), laid out for a person and
for paper: a summary (the number, its keyed hash, the chain's verification), then one section
per program that starts a new page when printed (static/evidence.css).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from app.console.web import Ctx, page
from app.errors import InvalidInput
from app.evidence import evidence
from app.phone import to_e164


@page("console:evidence")
async def evidence_page(ctx: Ctx) -> Response:
    """GET /console/phones/{phone}/evidence: every proof of the phone's consent, per program, ready to print."""
    raw = ctx.request.path_params["phone"]
    try:
        phone = to_e164(raw, ctx.brand.default_region)
    except InvalidInput as exc:
        return ctx.render("error.html", 400, title="Not a phone number", message=f"{raw!r}: {exc.message}")
    brand = ctx.brand
    pack = await ctx.state.read(lambda conn: evidence(conn, brand=brand.key, phone=phone, programs=list(brand.programs)))
    names = {key: program.name for key, program in brand.programs.items()}
    return ctx.render("evidence.html", pack=pack, names=names, generated_at=ctx.state.clock())


routes = [Route("/phones/{phone}/evidence", evidence_page, name="evidence")]
