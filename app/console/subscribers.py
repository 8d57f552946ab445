"""/console/programs/{program}: the program's subscribers (filters, number search, keyset pages) and
/console/programs/{program}.csv, the filtered list streamed as CSV (compliance)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from starlette.responses import Response, StreamingResponse

from app.console import subscribers_query as sq
from app.console.overview import STATUSES
from app.console.roles import Role
from app.console.web import Ctx, page, parse_day
from app.errors import InvalidInput
from app.keywords import Program

FIELDS = ("status", "source", "keyword", "number", "joined_since", "joined_until", "left_since", "left_until")


def _midnight(day: object) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)  # type: ignore[attr-defined]


def _filter(ctx: Ctx, program: Program) -> tuple[sq.SubscriberFilter, dict[str, str]]:
    """The list's filters from the query string; InvalidInput naming the bad one."""
    q = ctx.request.query_params
    raw = {name: q.get(name, "").strip() for name in FIELDS}
    if raw["status"] and raw["status"] not in STATUSES:
        raise InvalidInput(f"status: not one of {', '.join(STATUSES)}", field="status")
    if raw["source"] and raw["source"] not in sq.SOURCES:
        raise InvalidInput(f"source: not one of {', '.join(sq.SOURCES)}", field="source")
    if len(raw["keyword"]) > 64:
        raise InvalidInput("keyword: at most 64 characters", field="keyword")
    number = None
    if raw["number"]:
        digits = "".join(ch for ch in raw["number"] if ch.isdigit() and ch.isascii())
        if not digits or len(digits) > 15:
            raise InvalidInput("number: type the first digits of the number, country code included", field="number")
        number = "+" + digits
    days = {name: parse_day(raw[name], name.replace("_", " ")) for name in FIELDS[4:]}
    for start, end in (("joined_since", "joined_until"), ("left_since", "left_until")):
        if days[start] and days[end] and days[end] < days[start]:  # type: ignore[operator]
            raise InvalidInput(f"{end.replace('_', ' ')} is before {start.replace('_', ' ')}", field=end)

    def until(name: str) -> datetime | None:
        # An "until" day is included: everything before the next midnight (UTC).
        moment = _midnight(days[name])
        return moment + timedelta(days=1) if moment else None

    where = sq.SubscriberFilter(
        status=raw["status"] or None, source=raw["source"] or None, keyword=raw["keyword"] or None, number=number,
        joined_since=_midnight(days["joined_since"]), joined_until=until("joined_until"),
        left_since=_midnight(days["left_since"]), left_until=until("left_until"))
    return where, raw


@page("console:subscribers")
async def subscribers(ctx: Ctx) -> Response:
    """GET /console/programs/{program}: the program's subscribers in number order, 50 a page."""
    key = ctx.request.path_params["program"]
    program = ctx.brand.programs.get(key)
    if program is None:
        return ctx.render("error.html", 404, title="No such program", message=f"{ctx.brand.name} has no program "
                                                                               f"{key!r}.")
    after = ctx.request.query_params.get("after", "")
    try:
        where, raw = _filter(ctx, program)
        if after and not (after.startswith("+") and after[1:].isdigit() and len(after) <= 20):
            raise InvalidInput("after must be a phone number", field="after")
    except InvalidInput as exc:
        raw = {n: ctx.request.query_params.get(n, "") for n in FIELDS}
        return ctx.render("subscribers.html", 400, program=program, raw=raw, rows=[], more=None, error=exc.message,
                          query="", more_query="", statuses=STATUSES, sources=sq.SOURCES)
    brand = ctx.brand.key
    rows, more = await ctx.state.read(lambda c: sq.subscriber_page(c, brand=brand, program=key, where=where,
                                                                   after=after or None))
    filters = {k: v for k, v in raw.items() if v}
    return ctx.render("subscribers.html", program=program, raw=raw, rows=rows, more=more, error=None,
                      query=urlencode(filters), more_query=urlencode({**filters, "after": more}) if more else "",
                      statuses=STATUSES, sources=sq.SOURCES, first_page=not after, quote=quote)


@page("console:subscribers_csv", needs=Role.COMPLIANCE)
async def subscribers_csv(ctx: Ctx) -> Response:
    """GET /console/programs/{program}.csv: every subscription the filters match, streamed as CSV."""
    key = ctx.request.path_params["program"]
    program = ctx.brand.programs.get(key)
    if program is None:
        return ctx.render("error.html", 404, title="No such program", message=f"{ctx.brand.name} has no program "
                                                                               f"{key!r}.")
    try:
        where, _raw = _filter(ctx, program)
    except InvalidInput as exc:
        return ctx.render("error.html", 400, title="Bad filter", message=exc.message)
    stamp = ctx.state.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="subscribers-{ctx.brand.key}-{key}-{stamp}.csv"'}
    # A sync generator: Starlette runs each step in a thread, so the reads stay off the event loop.
    return StreamingResponse(sq.subscribers_csv(ctx.state.reader, brand=ctx.brand.key, program=key, where=where),
                             media_type="text/csv; charset=utf-8", headers=headers)
