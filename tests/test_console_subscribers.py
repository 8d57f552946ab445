"""A program's subscriber list on both engines: filters, number search, keyset pages, the streamed CSV
(formulas neutralised, also for ";" locales), and the phone page's header."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.console import subscribers_query as sq
from app.console.queries import neutralise
from app.models import subscriptions
from tests.conftest import Gateway
from tests.test_console import ADA, BOB, ZOE, Console, converse, signed_in

ROW = re.compile(r'<tr data-phone="(\+\d+)">')


@pytest.fixture
def ada(gateway_factory: Callable[..., Gateway], database_url: str) -> Console:
    return signed_in(gateway_factory, database_url, "compliance")


def api_opt_in(console: Console, phone: str, source: str) -> None:
    from app.auth import create_key

    _info, key = console.gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name=None))
    body = {"phoneNumber": phone, "program": "deals", "consentSource": source,
            "consentedAt": console.gateway.clock().isoformat(), "consentProof": {"termsUrl": "https://acme.example/t"}}
    response = console.client.post("/v1/subscriptions/opt-in", json=body, headers={"x-api-key": key})
    assert response.status_code in (200, 201), response.text


def phones(html: str) -> list[str]:
    return ROW.findall(html)


CAROL = "+33612345678"
FILTERS: dict[str, tuple[dict[str, str], list[str]]] = {
    "all": ({}, [ADA, BOB, ZOE, CAROL]),
    "subscribed": ({"status": "subscribed"}, [ADA, CAROL]),
    "pending": ({"status": "pendingDOI"}, [BOB]),
    "by-keyword": ({"source": "keyword"}, [ADA, BOB, ZOE]),
    "by-api": ({"source": "api"}, [CAROL]),
    "keyword-join": ({"keyword": "JOIN"}, [BOB]),  # the last keyword each texted: BOB never confirmed
    "keyword-yes": ({"keyword": "YES"}, [ADA, ZOE]),
    "number-prefix": ({"number": "+1 415 555 0102"}, [BOB]),
    "number-country": ({"number": "33"}, [CAROL]),
    "joined-today": ({"joined_since": "TODAY", "joined_until": "TODAY"}, [ADA, BOB, ZOE, CAROL]),
    "joined-tomorrow": ({"joined_since": "TOMORROW"}, []),
    "left-today": ({"left_since": "TODAY", "left_until": "TODAY"}, [ZOE]),
    "combined": ({"status": "subscribed", "source": "keyword"}, [ADA]),
}


def test_the_list_filters_and_searches_and_its_csv_matches(ada: Console, subtests: Any) -> None:
    converse(ada.gateway)
    api_opt_in(ada, CAROL, "=HYPERLINK(\"http://x\");=cmd|' /C calc'!A0")
    today = ada.gateway.clock().date()
    days = {"TODAY": today.isoformat(), "TOMORROW": (today + timedelta(days=1)).isoformat()}
    for name, (params, expected) in FILTERS.items():
        with subtests.test(filter=name):
            query = {k: days.get(v, v) for k, v in params.items()}
            page = ada.get("/console/programs/deals", **query)
            assert page.status_code == 200
            assert phones(page.text) == sorted(expected)
            table = list(csv.DictReader(io.StringIO(ada.get("/console/programs/deals.csv", **query).text)))
            assert [r["phone"] for r in table] == sorted(expected)
    rows = {r["phone"]: r for r in csv.DictReader(io.StringIO(ada.get("/console/programs/deals.csv").text))}
    # Neither the cell nor the piece after a ";" (a European spreadsheet's separator) starts a formula.
    assert rows[CAROL]["consent_source"] == "'=HYPERLINK(\"http://x\");'=cmd|' /C calc'!A0"
    assert rows[ADA]["keyword"] == "YES" and rows[ADA]["status"] == "subscribed"
    link = re.search(r'<a href="(/console/phones/[^"]+)">\+14155550101<', ada.get("/console/programs/deals").text)
    assert link and ada.client.get(link.group(1)).status_code == 200  # each row links to the phone


def test_pages_follow_the_keyset_without_gaps_or_repeats(ada: Console) -> None:
    now = ada.gateway.clock()
    numbers = [f"+1415555{n:04d}" for n in range(2 * sq.PAGE + 7)]

    def fill(conn: sa.Connection, _now: Any) -> None:
        conn.execute(subscriptions.insert(), [
            {"id": f"sub_T{n:05d}", "brand": "acme", "program": "news", "phone": phone, "status": "subscribed",
             "keyword": "NEWS", "joined_at": now, "created_at": now, "updated_at": now}
            for n, phone in enumerate(numbers)])

    ada.gateway.state.writer.call(fill)
    seen: list[str] = []
    url: str | None = "/console/programs/news?status=subscribed"
    while url:
        html = ada.client.get(url).text
        seen += phones(html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == numbers  # every one once, in order, over three pages
    statement = str(sa.select(subscriptions).where(*sq._where("acme", "news", sq.SubscriberFilter()))
                    .order_by(subscriptions.c.phone).limit(3))
    assert "OFFSET" not in statement.upper()
    csv_rows = list(csv.DictReader(io.StringIO(ada.get("/console/programs/news.csv").text)))
    assert [r["phone"] for r in csv_rows] == numbers


BAD = {"status": {"status": "gone"}, "source": {"source": "fax"}, "number": {"number": "abc"},
       "day": {"joined_since": "yesterday"}, "order": {"left_since": "2026-11-02", "left_until": "2026-11-01"},
       "after": {"after": "' OR 1=1"}}


def test_bad_filters_are_a_400_naming_them_and_an_unknown_program_is_a_404(ada: Console, subtests: Any) -> None:
    for name, params in BAD.items():
        with subtests.test(filter=name):
            response = ada.get("/console/programs/deals", **params)
            assert response.status_code == 400 and 'role="alert"' in response.text
            if name != "after":
                assert ada.get("/console/programs/deals.csv", **params).status_code == 400
    assert ada.get("/console/programs/menu").status_code == 404  # another brand's program
    assert ada.get("/console/programs/menu.csv").status_code == 404


def test_a_viewer_sees_the_list_but_cannot_export_it(ada: Console) -> None:
    ada.add_user("val@acme.example", role="viewer")
    ada.client.cookies.clear()
    assert ada.sign_in("val@acme.example").status_code == 303
    page = ada.get("/console/programs/deals")
    assert page.status_code == 200 and 'id="csv"' not in page.text
    assert ada.get("/console/programs/deals.csv").status_code == 403


@pytest.mark.parametrize(("text", "safe"), [
    ("=1+2", "'=1+2"), ("STOP;=cmd|' /C calc'!A0", "STOP;'=cmd|' /C calc'!A0"), ("a, -b", "a, '-b"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("plain; text, ok", "plain; text, ok"), ("-", "'-"),
], ids=["start", "semicolon-locale", "comma", "at", "tab", "plain", "minus"])
def test_formula_neutralising(text: str, safe: str) -> None:
    assert neutralise(text) == safe


def test_the_phone_header_says_status_since_how_and_the_last_opt_out(ada: Console) -> None:
    converse(ada.gateway)
    api_opt_in(ada, ADA, "web-checkout")  # already subscribed by keyword: stays as it was joined
    html = ada.client.get("/console/phones/" + ZOE).text
    line = re.search(r'<li data-program="deals">(.*?)</li>', html, re.S).group(1)  # type: ignore[union-attr]
    assert 'data-field="status">unsubscribed<' in line
    assert "Joined by keyword JOIN" in line
    assert re.search(r'data-field="opt-out">Last opt-out .* by sms \(stop\)', line)
    assert 'href="/console/phones/%2B14155550103/evidence"' in html
    news = re.search(r'<li data-program="news">(.*?)</li>', html, re.S).group(1)  # type: ignore[union-attr]
    assert 'data-field="status">unsubscribed<' in news and 'data-field="how"' not in news  # never joined news
    # The console opt-out: asked first, then with a reason, recorded as the console's with the user's email.
    bob = "/console/phones/%2B14155550102"
    asked = ada.client.post(bob + "/opt-out", data={"csrf": ada.csrf(bob), "program": "deals"})
    assert asked.status_code == 200 and "is unsubscribed from ACME Deals" in asked.text
    assert ada.gateway.subs(BOB)["deals"] == "pendingDOI"
    done = ada.client.post(bob + "/opt-out", data={"csrf": ada.csrf(bob), "program": "deals", "confirmed": "yes",
                                                   "reason": "asked at the till"}, follow_redirects=False)
    assert done.status_code == 303
    assert ada.gateway.subs(BOB)["deals"] == "unsubscribed"
    [event] = ada.gateway.query("SELECT event, source, consent_source, reason FROM consent_events"
                                " WHERE phone = :p AND to_status = 'unsubscribed'", p=BOB)
    assert tuple(event) == ("console_opt_out", "console", "console:ada@acme.example", "asked at the till")
    html = ada.client.get(done.headers["location"]).text
    assert re.search(r'data-field="opt-out">Last opt-out .* by console \(console_opt_out\), '
                     r"console:ada@acme.example: asked at the till", html)
    newest = re.findall(r'data-kind="(\w+)"', html)
    assert newest[:2] == ["outbound", "consent"]  # the stop reply, then the opt-out: newest first
    only = ada.client.get(bob, params={"kind": "inbound"}).text
    assert set(re.findall(r'data-kind="(\w+)"', only)) == {"inbound"}
