"""Analytics on both engines: per program and brand, by day or week, in the brand's time zone or a
chosen one, by source and keyword, from the rollup plus the ledger's uncounted tail (the same
figures either way), with CSV and clear 400s."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.console import rollup
from tests.conftest import KEYWORDS, Gateway, unlimited
from tests.test_console import SECRET, Console, converse


def _keywords_in(zone: str, tmp_path: Path) -> str:
    text = KEYWORDS.read_text(encoding="utf-8")
    text = text.replace("    default_region: US\n", f"    default_region: US\n    timezone: {zone}\n", 1)
    path = tmp_path / "keywords.yaml"
    path.write_text(text, encoding="utf-8")
    return unlimited(path)


@pytest.fixture
def ada(gateway_factory: Callable[..., Gateway], database_url: str, tmp_path: Path) -> Console:
    gateway = gateway_factory(database_url, secret_key=SECRET, keywords=_keywords_in("Pacific/Kiritimati", tmp_path))
    gateway.client.base_url = "https://testserver"
    console = Console(gateway)
    console.add_user("ada@acme.example", role="compliance")
    assert console.sign_in("ada@acme.example").status_code == 303
    return console


def series(html: str, program: str) -> dict[str, list[str]]:
    """period -> [joins, confirmations, opt-outs, subscribers at start, rate] of one chart's table."""
    section = re.search(rf'data-program="{program}">(.*?)</section>', html, re.S)
    assert section, f"no chart for {program}"
    out = {}
    for period, cells in re.findall(r'<tr data-period="([\d-]+)">(.*?)</tr>', section.group(1), re.S):
        out[period] = re.findall(r'<td class="num">(.*?)</td>', cells)
    return out


def breakdown(html: str) -> set[tuple[str, str, str, str, str, str]]:
    rows = re.findall(r'<tr data-source="[^"]*" data-keyword="[^"]*"><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>'
                      r'<td class="num">(\d+)</td><td class="num">(\d+)</td><td class="num">(\d+)</td>', html)
    return set(rows)


def test_joins_confirmations_opt_outs_in_the_brands_time_zone_from_tail_and_rollup(ada: Console) -> None:
    converse(ada.gateway)  # 3 joins, 2 confirmations, 1 opt-out (ZOE) on deals; ZOE's STOP also closed news
    today = ada.gateway.clock().astimezone(ZoneInfo("Pacific/Kiritimati")).date().isoformat()
    page = ada.get("/console/analytics")
    assert page.status_code == 200
    assert "ACME Coffee's is Pacific/Kiritimati" in page.text and 'value="Pacific/Kiritimati"' in page.text
    deals = series(page.text, "deals")
    assert len(deals) == 30 and deals[today][:3] == ["3", "2", "1"]
    assert deals[today][3] == "0" and deals[today][4] == "–"  # nobody was subscribed when the day began
    assert series(page.text, "all")[today][:3] == ["3", "2", "1"]
    assert series(page.text, "news")[today][:3] == ["0", "0", "0"]
    split = breakdown(page.text)
    assert ("ACME Deals", "sms", "JOIN", "3", "0", "0") in split
    assert ("ACME Deals", "sms", "YES", "0", "2", "0") in split
    assert ("ACME Deals", "sms", "STOP", "0", "0", "1") in split

    # Counted into the rollup (once the ids have settled), the figures stay the same: no double count.
    state = ada.gateway.state
    assert state.writer.call(rollup.catch_up) == 0  # seen, not settled yet
    ada.gateway.clock.advance(seconds=rollup.SETTLE.total_seconds() + 1)
    assert state.writer.call(rollup.catch_up) > 0
    assert ada.gateway.query("SELECT sum(joins), sum(confirmations), sum(opt_outs) FROM consent_rollup"
                             " WHERE program = 'deals'")[0] == (3, 2, 1)
    again = ada.get("/console/analytics")
    assert series(again.text, "deals") == deals and breakdown(again.text) == split
    # A later opt-out lands in the tail, beside the rollup.
    assert ada.gateway.text("STOP", from_="+14155550101").status_code == 200
    later = ada.get("/console/analytics", to=today)
    assert series(later.text, "deals")[today][:3] == ["3", "2", "2"]
    assert ("ACME Deals", "sms", "STOP", "0", "0", "2") in breakdown(later.text)
    # A range that ended yesterday shows nothing of today, in its charts or its breakdown.
    yesterday = (datetime.fromisoformat(today) - timedelta(days=1)).date().isoformat()
    before = ada.get("/console/analytics", to=yesterday).text
    assert today not in series(before, "deals") and 'id="split-empty"' in before
    assert series(before, "deals")[yesterday][3] == "0"  # subscribers at its start: none yet


def test_another_time_zone_weeks_and_the_csv(ada: Console) -> None:
    converse(ada.gateway)
    now = ada.gateway.clock()
    west = now.astimezone(ZoneInfo("Etc/GMT+12")).date()  # UTC−12: usually the day before Kiritimati's
    html = ada.get("/console/analytics", tz="Etc/GMT+12").text
    assert series(html, "deals")[west.isoformat()][:3] == ["3", "2", "1"]
    monday = west - timedelta(days=west.weekday())
    weekly = ada.get("/console/analytics", tz="Etc/GMT+12", by="week", program="deals").text
    weeks = series(weekly, "deals")
    assert all(datetime.fromisoformat(w).weekday() == 0 for w in weeks)
    assert weeks[monday.isoformat()][:3] == ["3", "2", "1"]
    assert 'data-program="news"' not in weekly and 'data-program="all"' not in weekly
    table = list(csv.DictReader(io.StringIO(ada.get("/console/analytics.csv", tz="Etc/GMT+12").text)))
    row = next(r for r in table if r["program"] == "deals" and r["period_start"] == west.isoformat())
    assert (row["joins"], row["confirmations"], row["opt_outs"], row["time_zone"]) == ("3", "2", "1", "Etc/GMT+12")
    assert {r["program"] for r in table} == {"deals", "news", "(all)"}


BAD = {"tz": {"tz": "Mars/Olympus"}, "by": {"by": "month"}, "order": {"from": "2026-11-10", "to": "2026-11-01"},
       "too-long": {"from": "2020-01-01", "to": "2026-01-01"}, "program": {"program": "menu"},
       "day": {"from": "last week"}}


def test_bad_choices_are_a_400_naming_them(ada: Console, subtests: Any) -> None:
    for name, params in BAD.items():
        with subtests.test(choice=name):
            response = ada.get("/console/analytics", **params)
            assert response.status_code == 400 and 'role="alert"' in response.text
            assert ada.get("/console/analytics.csv", **params).status_code == 400


def test_the_rollup_counts_each_event_once_whatever_the_batches(ada: Console) -> None:
    converse(ada.gateway)
    state = ada.gateway.state
    state.writer.call(rollup.catch_up)
    ada.gateway.clock.advance(seconds=rollup.SETTLE.total_seconds() + 1)
    while state.writer.call(lambda c, now: rollup.catch_up(c, now, span=2)) == 2:
        pass
    total = ada.gateway.query("SELECT count(*) FROM consent_events")[0][0]
    assert ada.gateway.query("SELECT last_id FROM rollup_state")[0][0] == total
    assert ada.gateway.query("SELECT sum(joins), sum(confirmations), sum(opt_outs), sum(subscribed_in),"
                             " sum(subscribed_out) FROM consent_rollup")[0] == (3, 2, 1, 2, 1)
    assert state.writer.call(rollup.catch_up) == 0  # nothing new: nothing counted twice


def test_a_brand_time_zone_must_be_a_real_one(tmp_path: Path) -> None:
    from app.errors import ConfigError
    from app.keywords import load_rules

    assert load_rules(_keywords_in("Asia/Tokyo", tmp_path)).brand("acme").timezone == "Asia/Tokyo"
    assert load_rules(unlimited(KEYWORDS)).brand("acme").timezone == "UTC"
    with pytest.raises(ConfigError, match="timezone: 'Mars/Olympus' is not an IANA time zone"):
        load_rules(_keywords_in("Mars/Olympus", tmp_path))


def _spread(gateway: Gateway) -> None:
    """Joins, confirmations and STOPs every five hours over four days: some on each side of midnight in
    every zone the test reads."""
    for n in range(20):
        phone = f"+1415555{n:04d}"
        for text in ("JOIN", "YES", "STOP")[: 1 + n % 3]:
            assert gateway.text(text, from_=phone).status_code == 200
        gateway.clock.advance(hours=5)
    gateway.drain()


VIEWS = {  # tz, by: a kept zone by day and by week, a half-hour zone kept, a zone not kept (read from hours)
    "brand-day": {}, "brand-week": {"by": "week"}, "west-week": {"tz": "Etc/GMT+12", "by": "week"},
    "india-day": {"tz": "Asia/Kolkata"}, "new-york-day": {"tz": "America/New_York", "by": "day"},
}


def test_the_days_of_a_kept_zone_give_the_figures_the_hours_and_the_ledger_give(ada: Console) -> None:
    _spread(ada.gateway)
    state = ada.gateway.state
    assert ada.sign_in("ada@acme.example").status_code == 303  # four days on: a new session

    def get(path: str, **params: str) -> str:
        response = ada.get(path, **params)
        assert response.status_code == 200, (path, params)
        return str(response.text)

    span = {"from": (ada.gateway.clock() - timedelta(days=6)).date().isoformat()}
    # First from the ledger alone (nothing counted yet): the reference.
    before = {name: get("/console/analytics.csv", **span, **view) for name, view in VIEWS.items()}
    pages = {name: get("/console/analytics", **span, **view) for name, view in VIEWS.items()}
    assert len(before["india-day"].splitlines()) > 20 and "STOP" in pages["brand-week"]
    kept = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kolkata"]
    state.writer.call(lambda c, now: rollup.catch_up(c, now, zones=kept[:2]))  # kept before anything is counted
    ada.gateway.clock.advance(seconds=rollup.SETTLE.total_seconds() + 1)
    while state.writer.call(lambda c, now: rollup.catch_up(c, now, span=7, zones=kept[:2])) == 7:
        pass
    # These two start from the hourly rows, once everything is counted.
    assert state.writer.call(lambda c, now: rollup.catch_up(c, now, zones=kept)) == 0
    assert sorted(r[0] for r in ada.gateway.query("SELECT zone FROM rollup_zones")) == sorted(kept)
    for zone in kept:
        assert ada.gateway.query("SELECT sum(joins), sum(opt_outs) FROM consent_rollup_day_series WHERE zone = :z",
                                 z=zone)[0] == ada.gateway.query("SELECT sum(joins), sum(opt_outs) FROM consent_rollup")[0]
    for name, view in VIEWS.items():
        assert get("/console/analytics.csv", **span, **view) == before[name], name
        page = get("/console/analytics", **span, **view)
        assert breakdown(page) == breakdown(pages[name]) and series(page, "deals") == series(pages[name], "deals")
    # New texts are counted into every kept zone's days as they come.
    assert ada.gateway.text("JOIN", from_="+14155559999").status_code == 200
    ada.gateway.clock.advance(seconds=rollup.SETTLE.total_seconds() + 1)
    state.writer.call(rollup.catch_up)
    ada.gateway.clock.advance(seconds=rollup.SETTLE.total_seconds() + 1)
    assert state.writer.call(rollup.catch_up) > 0
    assert ada.gateway.query("SELECT count(DISTINCT zone), sum(joins) FROM consent_rollup_day_series")[0] == (
        len(kept), len(kept) * ada.gateway.query("SELECT sum(joins) FROM consent_rollup")[0][0])
