"""The programs page (counts per status, the 30-day chart) and the consent ledger with its CSV."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response, StreamingResponse

from app import status_counts
from app.console import chart, queries
from app.console.analytics import Range, report
from app.console.roles import Role
from app.console.web import Ctx, page, parse_day
from app.errors import InvalidInput
from app.phone import to_e164
from app.subscriptions import Event, Status

CHART_DAYS = 30
STATUSES = tuple(s.value for s in Status)
EVENTS = tuple(e.value for e in Event)


@page("console:programs")
async def programs(ctx: Ctx) -> Response:
    """GET /console/programs: counts per status and the 30-day chart."""
    brand, programs_list = ctx.brand.key, list(ctx.brand.programs)
    today = ctx.state.clock().astimezone(UTC).date()
    where = Range(today - timedelta(days=CHART_DAYS - 1), today, zoneinfo.ZoneInfo("UTC"), "day", None)

    def read(conn: Any) -> tuple[dict[str, dict[str, int]], list[tuple[date, int, int]]]:
        # Joins here are subscriptions that became active; opt-outs, active or pending ones that ended.
        found = report(conn, brand=brand, programs=programs_list, where=where, split_too=False)
        return (status_counts.read(conn, brand=brand),
                [(p.start, p.subscribed_in, p.opt_outs) for p in found.series[None]])

    counts, days = await ctx.state.read(read)
    names = {key: program.name for key, program in ctx.brand.programs.items()}
    rows = [(key, names.get(key), {s: counts.get(key, {}).get(s, 0) for s in STATUSES})
            for key in [*names, *sorted(set(counts) - set(names))]]
    totals = {s: sum(r[2][s] for r in rows) for s in STATUSES}
    return ctx.render("programs.html", rows=rows, totals=totals, statuses=STATUSES, chart=chart.build(days),
                      days=days)


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
    since, until = parse_day(raw["since"], "since"), parse_day(raw["until"], "until")
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


@page("console:ledger_csv", needs=Role.COMPLIANCE)
async def ledger_csv(ctx: Ctx) -> Response:
    """GET /console/ledger.csv: the filtered ledger as CSV (the columns of `optline export consent`)."""
    try:
        where, _raw = _ledger_filter(ctx)
    except InvalidInput as exc:
        return ctx.render("error.html", 400, title="Bad filter", message=exc.message)
    stamp = ctx.state.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="consent-{ctx.brand.key}-{stamp}.csv"'}
    # A sync generator: Starlette runs each step in a thread, so the reads stay off the event loop.
    return StreamingResponse(queries.ledger_csv(ctx.state.reader, brand=ctx.brand.key, where=where),
                             media_type="text/csv; charset=utf-8", headers=headers)
