"""/console/analytics (and .csv): joins, confirmations, opt-outs and the opt-out rate per day or week,
per program and for the brand, by source and keyword, over a chosen range, in the brand's time
zone (or one the person picks). Read from consent_rollup plus the ledger's uncounted tail
(app.console.rollup), never from the whole ledger.

Opt-out rate of a period: its opt-outs over the subscribers at its start, where subscribers at
a start = subscribed now − (became subscribed − stopped being subscribed) since that start.
"""

from __future__ import annotations

import csv
import io
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.responses import Response

from app import status_counts
from app.console import chart, rollup
from app.console.roles import Role
from app.console.web import Ctx, page, parse_day
from app.errors import InvalidInput
from app.models import consent_rollup, consent_rollup_day_series, consent_rollup_days, consent_rollup_series

MAX_DAYS = 400
DEFAULT_DAYS = 30
GRAINS = ("day", "week")


@dataclass
class Period:
    """One day or week of one program (or the brand: program None)."""

    start: date
    joins: int = 0
    confirmations: int = 0
    opt_outs: int = 0
    net: int = 0  # became subscribed − stopped being subscribed
    subscribed_in: int = 0  # became subscribed (confirmed, single opt-in, API opt-in)
    subscribers_at_start: int | None = None

    @property
    def rate(self) -> float | None:
        """Opt-outs over the subscribers at the period's start; None when there were none."""
        base = self.subscribers_at_start
        return None if not base or base <= 0 else self.opt_outs / base


@dataclass(frozen=True)
class Range:
    """What the analytics show: days [first, last] in `zone`, by day or week, for one program or all."""

    first: date
    last: date
    zone: zoneinfo.ZoneInfo
    grain: str
    program: str | None

    def period_of(self, moment: datetime) -> date:
        """The first day of the period a moment falls in, in the range's time zone."""
        return self.period_of_day(moment.astimezone(self.zone).date())

    def period_of_day(self, day: date) -> date:
        """The first day of the period a day (in the range's time zone) falls in."""
        return day - timedelta(days=day.weekday()) if self.grain == "week" else day

    def periods(self) -> list[date]:
        """Every period's first day, oldest first."""
        start = self.period_of(datetime(self.first.year, self.first.month, self.first.day, 12, tzinfo=self.zone))
        step = timedelta(days=7 if self.grain == "week" else 1)
        out = []
        while start <= self.last:
            out.append(start)
            start += step
        return out

    def utc_end(self) -> datetime:
        """The first instant after the range's last period, in UTC."""
        starts = self.periods()
        end = (starts[-1] + timedelta(days=7 if self.grain == "week" else 1)) if starts else self.last
        return datetime(end.year, end.month, end.day, tzinfo=self.zone).astimezone(UTC)

    def utc_start(self) -> datetime:
        """The first instant of the range in UTC (from the first period's midnight)."""
        first = self.periods()[0] if self.periods() else self.first
        return datetime(first.year, first.month, first.day, tzinfo=self.zone).astimezone(UTC)


@dataclass
class Report:
    """The series per program (and for the brand) and the breakdown by source and keyword."""

    series: dict[str | None, list[Period]]
    breakdown: list[tuple[str, str, str, int, int, int]]  # program, source, keyword, joins, confirmations, opt-outs
    behind: bool  # the counting is behind: the newest figures are incomplete


def _by_day(conn: Connection, *, brand: str, chosen: list[str], where: Range, since: datetime, until: datetime,
            split_too: bool) -> tuple[dict[tuple[str, date], list[int]], list[Any]]:
    """The counted figures per (program, day in the range's zone) from the range's first day to now, and the
    breakdown rows (program, source, keyword, joins, confirmations, opt-outs) of the range. From the days of
    the zone when they are kept (a few hundred rows a year), else from the hours."""
    days: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    if where.zone.key in rollup.kept_zones(conn):
        d, ds = consent_rollup_days.c, consent_rollup_day_series.c
        first = since.astimezone(where.zone).date()
        end = until.astimezone(where.zone).date()
        rows = conn.execute(  # one row per program and day already: no grouping
            sa.select(ds.program, ds.day, *(getattr(ds, c) for c in rollup.COUNTS))
            .where(ds.brand == brand, ds.zone == where.zone.key, ds.program.in_(chosen), ds.day >= first)).all()
        for row in rows:
            total = days[(row[0], row[1])]
            for i in range(5):
                total[i] += int(row[2 + i] or 0)
        split = conn.execute(
            sa.select(d.program, d.source, d.keyword, *(sa.func.sum(getattr(d, c)) for c in rollup.COUNTS[:3]))
            .where(d.brand == brand, d.zone == where.zone.key, d.program.in_(chosen), d.day >= first, d.day < end)
            .group_by(d.program, d.source, d.keyword)).all() if split_too else []
        return days, split
    r, h = consent_rollup.c, consent_rollup_series.c
    by_hour = conn.execute(  # one row per program and hour already: no grouping
        sa.select(h.program, h.hour, *(getattr(h, c) for c in rollup.COUNTS))
        .where(h.brand == brand, h.hour >= since, h.program.in_(chosen))).all()
    day_of: dict[datetime, date] = {}
    for row in by_hour:
        hour = row[1] if row[1].tzinfo else row[1].replace(tzinfo=UTC)
        day = day_of.get(hour)
        if day is None:
            day = day_of[hour] = hour.astimezone(where.zone).date()
        total = days[(row[0], day)]
        for i in range(5):
            total[i] += int(row[2 + i] or 0)
    split = conn.execute(
        sa.select(r.program, r.source, r.keyword, *(sa.func.sum(getattr(r, c)) for c in rollup.COUNTS[:3]))
        .where(r.brand == brand, r.hour >= since, r.hour < until, r.program.in_(chosen))
        .group_by(r.program, r.source, r.keyword)).all() if split_too else []
    return days, split


def report(conn: Connection, *, brand: str, programs: list[str], where: Range, split_too: bool = True) -> Report:
    """Everything the analytics page shows, read from the rollup and the ledger's tail (`split_too`
    False: the series only, no breakdown by source and keyword)."""
    since, until = where.utc_start(), where.utc_end()
    chosen = [where.program] if where.program else programs
    days, split = _by_day(conn, brand=brand, chosen=chosen, where=where, since=since, until=until,
                          split_too=split_too)
    extra, behind = rollup.tail(conn, brand=brand, after_id=rollup.counted_up_to(conn), since=since)
    # Kept up by every status write (app.status_counts), not counted here.
    counted = status_counts.read(conn, brand=brand)
    subscribed = {p: counted.get(p, {}).get("subscribed", 0) for p in chosen}
    kinds: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in split:
        for i in range(3):
            kinds[(row[0], row[1], row[2])][i] += int(row[3 + i] or 0)
    for (b, program, hour, source, keyword), values in extra.items():
        if b != brand or program not in chosen:
            continue
        total = days[(program, hour.astimezone(where.zone).date())]
        for i in range(5):
            total[i] += values[i]
        if split_too and hour < until:  # the breakdown covers the range only; the series also needs what came after
            for i in range(3):
                kinds[(program, source, keyword)][i] += values[i]
    starts = where.periods()
    keys: list[str | None] = [*chosen, None]
    series_of = {k: {d: Period(d) for d in starts} for k in keys}
    beyond = dict.fromkeys(keys, 0)  # net change after the range (to now)
    for (program, day), v in days.items():
        key = where.period_of_day(day)
        for target in (program, None):
            periods = series_of[target]
            if key in periods:
                period = periods[key]
                period.joins += v[0]
                period.confirmations += v[1]
                period.opt_outs += v[2]
                period.net += v[3] - v[4]
                period.subscribed_in += v[3]
            elif key > where.last:
                beyond[target] += v[3] - v[4]
    series: dict[str | None, list[Period]] = {}
    for program in keys:
        periods = series_of[program]
        now_count = sum(subscribed.values()) if program is None else subscribed.get(program, 0)
        after = beyond[program]
        for d in reversed(starts):  # subscribers at a start = now − net change since that start
            after += periods[d].net
            periods[d].subscribers_at_start = now_count - after
        series[program] = [periods[d] for d in starts]
    breakdown = sorted(((p, s, k, *v) for (p, s, k), v in kinds.items() if any(v)),  # type: ignore[misc]
                       key=lambda t: (t[0], -(t[3] + t[5]), t[1], t[2]))
    return Report(series, breakdown, behind)


def _range(ctx: Ctx) -> tuple[Range, dict[str, str]]:
    """The range from the query string (defaults: the last 30 days, by day, in the brand's zone)."""
    q = ctx.request.query_params
    raw = {n: q.get(n, "").strip() for n in ("from", "to", "by", "tz", "program")}
    zone_name = raw["tz"] or ctx.brand.timezone
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"tz: {zone_name!r} is not a time zone (like America/New_York)", field="tz") from None
    today = ctx.state.clock().astimezone(zone).date()
    last = parse_day(raw["to"], "to") or today
    first = parse_day(raw["from"], "from") or last - timedelta(days=DEFAULT_DAYS - 1)
    if last < first:
        raise InvalidInput("to is before from", field="to")
    if (last - first).days >= MAX_DAYS:
        raise InvalidInput(f"choose at most {MAX_DAYS} days", field="from")
    if raw["by"] and raw["by"] not in GRAINS:
        raise InvalidInput("by: day or week", field="by")
    if raw["program"] and raw["program"] not in ctx.brand.programs:
        raise InvalidInput(f"program: {ctx.brand.key} has no program {raw['program']!r}", field="program")
    raw.update({"from": first.isoformat(), "to": last.isoformat(), "tz": zone_name, "by": raw["by"] or "day"})
    return Range(first, last, zone, raw["by"], raw["program"] or None), raw


async def _report(ctx: Ctx) -> tuple[Report, Range, dict[str, str]]:
    where, raw = _range(ctx)
    brand, programs = ctx.brand.key, list(ctx.brand.programs)
    return await ctx.state.read(lambda c: report(c, brand=brand, programs=programs, where=where)), where, raw


@page("console:analytics")
async def analytics(ctx: Ctx) -> Response:
    """GET /console/analytics: one chart (with its numbers) per program and for the brand."""
    try:
        found, where, raw = await _report(ctx)
    except InvalidInput as exc:
        raw = {n: ctx.request.query_params.get(n, "") for n in ("from", "to", "by", "tz", "program")}
        return ctx.render("analytics.html", 400, error=exc.message, raw=raw, charts=[], breakdown=[], behind=False,
                          query="", grains=GRAINS)
    names = {k: p.name for k, p in ctx.brand.programs.items()}
    charts = [(key, f"All programs of {ctx.brand.name}" if key is None else names.get(key, key), periods,
               chart.build([(p.start, p.joins, p.opt_outs) for p in periods]))
              for key, periods in found.series.items() if key is not None or where.program is None]
    return ctx.render("analytics.html", error=None, raw=raw, charts=charts, breakdown=found.breakdown,
                      behind=found.behind, query=urlencode(raw), grains=GRAINS, names=names)


@page("console:analytics_csv", needs=Role.COMPLIANCE)
async def analytics_csv(ctx: Ctx) -> Response:
    """GET /console/analytics.csv: the same series as CSV (one row per program and period)."""
    try:
        found, where, _raw = await _report(ctx)
    except InvalidInput as exc:
        return ctx.render("error.html", 400, title="Bad range", message=exc.message)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["period_start", "time_zone", "program", "joins", "confirmations", "opt_outs",
                     "subscribers_at_start", "opt_out_rate"])
    for key, periods in found.series.items():
        for p in periods:
            writer.writerow([p.start.isoformat(), where.zone.key, key or "(all)", p.joins, p.confirmations,
                             p.opt_outs, p.subscribers_at_start, "" if p.rate is None else f"{p.rate:.6f}"])
    stamp = ctx.state.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="analytics-{ctx.brand.key}-{stamp}.csv"'})


__all__: list[Any] = ["Period", "Range", "analytics", "analytics_csv", "report"]
