"""The web console over HTTP (starlette's TestClient) on both engines: sign-in, CSRF, each page, CSV, keys.

The browser tests (tests/test_console_browser.py) drive the same pages in a real Chromium.
"""

from __future__ import annotations

import csv
import html as html_text
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from app.console.accounts import create_user, disable_user, hash_password
from app.console.queries import LEDGER_COLUMNS
from app.models import consent_events
from tests.conftest import Gateway

PASSWORD = "correct horse battery"
SECRET = "console-test-secret-key-0123456789abcdef"
ADA, BOB, ZOE = "+14155550101", "+14155550102", "+14155550103"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Console:
    """A gateway and a browser-like client for its console."""

    gateway: Gateway

    @property
    def client(self) -> Any:
        return self.gateway.client

    def add_user(self, email: str, brand: str = "acme", role: str = "owner") -> None:
        digest = hash_password(PASSWORD)
        self.gateway.state.writer.call(lambda c, now: create_user(c, now, brand=brand, email=email,
                                                                   password_hash=digest, role=role))

    def csrf(self, path: str = "/console/programs") -> str:
        """The CSRF token in the forms of `path`."""
        match = CSRF.search(self.client.get(path).text)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def sign_in(self, email: str, password: str = PASSWORD, **extra: str) -> Any:
        token = self.csrf("/console/login")
        return self.client.post("/console/login", data={"csrf": token, "email": email, "password": password, **extra},
                                follow_redirects=False)

    def get(self, path: str, **params: str) -> Any:
        return self.client.get(path, params=params, follow_redirects=False)

    def post(self, path: str, **data: str) -> Any:
        return self.client.post(path, data=data, follow_redirects=False)


def open_console(gateway_factory: Callable[..., Gateway], database_url: str) -> Console:
    """A gateway with the console's secret, spoken to over https."""
    gateway = gateway_factory(database_url, secret_key=SECRET)
    # The public URL is https, so the session cookie is Secure: the client must speak https to get it back.
    gateway.client.base_url = "https://testserver"
    return Console(gateway)


def signed_in(gateway_factory: Callable[..., Gateway], database_url: str, role: str) -> Console:
    """A console with ada@acme.example signed in, in `role`."""
    console = open_console(gateway_factory, database_url)
    console.add_user("ada@acme.example", role=role)
    assert console.sign_in("ada@acme.example").status_code == 303
    return console


@pytest.fixture
def console(gateway_factory: Callable[..., Gateway], database_url: str) -> Console:
    return open_console(gateway_factory, database_url)


@pytest.fixture
def ada(console: Console) -> Console:
    """Signed in as an acme user."""
    console.add_user("ada@acme.example")
    assert console.sign_in("ada@acme.example").status_code == 303
    return console


def converse(gateway: Gateway) -> None:
    """ADA subscribes to deals, BOB leaves it pending, ZOE subscribes then stops (leaving news too)."""
    for phone, texts in ((ADA, ["JOIN", "YES"]), (BOB, ["JOIN"]), (ZOE, ["JOIN", "YES", "STOP"])):
        for text in texts:
            assert gateway.text(text, from_=phone).status_code == 200
    gateway.drain()


# --- sign-in ------------------------------------------------------------------------------


def test_sign_in_sets_a_session_cookie_and_opens_the_console(console: Console) -> None:
    console.add_user("ada@acme.example")
    assert console.get("/console/programs").headers["location"] == "/console/login?next=%2Fconsole%2Fprograms"
    response = console.sign_in("Ada@Acme.example ", next="/console/ledger")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/ledger"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("optline_console=")
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=lax", "Secure", "Path=/console"))
    page = console.get("/console/programs")
    assert page.status_code == 200
    assert "ada@acme.example" in page.text and "ACME Coffee" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert console.get("/console/login").headers["location"] == "/console/programs"  # already signed in


@pytest.mark.parametrize(("email", "password"), [
    ("ada@acme.example", "wrong horse battery"),
    ("nobody@acme.example", PASSWORD),
    ("", PASSWORD),
], ids=["bad-password", "unknown-email", "no-email"])
def test_a_bad_sign_in_is_refused_without_a_session(console: Console, email: str, password: str) -> None:
    console.add_user("ada@acme.example")
    response = console.sign_in(email, password)
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    assert "optline_console=" not in response.headers.get("set-cookie", "")
    assert console.get("/console/programs").status_code == 303


def test_a_disabled_user_cannot_sign_in_and_their_session_ends(ada: Console) -> None:
    assert ada.get("/console/programs").status_code == 200
    ada.gateway.state.writer.call(lambda c, now: disable_user(c, now, email="ada@acme.example"))
    assert ada.get("/console/programs").status_code == 303  # the live session is refused at its next request
    response = ada.sign_in("ada@acme.example")
    assert response.status_code == 403
    assert "disabled" in response.text


def test_sign_out_voids_the_session_even_if_the_cookie_is_replayed(ada: Console) -> None:
    stolen = ada.client.cookies.get("optline_console")
    response = ada.post("/console/logout", csrf=ada.csrf())
    assert response.status_code == 303 and response.headers["location"] == "/console/login"
    ada.client.cookies.set("optline_console", stolen, domain="testserver.local", path="/console")
    assert ada.get("/console/programs").status_code == 303


def test_a_session_expires_after_twelve_hours(ada: Console) -> None:
    assert ada.get("/console/keys").status_code == 200
    ada.gateway.clock.advance(hours=12, seconds=1)
    assert ada.get("/console/keys").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/v1/programs"],
                         ids=["scheme-relative", "absolute", "outside-console"])
def test_sign_in_only_returns_to_console_pages(console: Console, target: str) -> None:
    console.add_user("ada@acme.example")
    assert console.sign_in("ada@acme.example", next=target).headers["location"] == "/console/programs"


# --- CSRF ---------------------------------------------------------------------------------


def _other_session_token(console: Console) -> str:
    console.add_user("eve@acme.example")
    other = console.client.__class__(console.client.app, base_url="https://testserver")
    page = other.get("/console/login")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    other.post("/console/login", data={"csrf": token, "email": "eve@acme.example", "password": PASSWORD})
    return CSRF.search(other.get("/console/keys").text).group(1)  # type: ignore[union-attr]


CSRF_FORMS = {"logout": "/console/logout", "create-key": "/console/keys", "revoke-key": "/console/keys/revoke",
              "playground": "/console/playground", "flagged": "/console/flagged"}


def test_every_form_is_refused_without_its_csrf_token(ada: Console, subtests: Any) -> None:
    tokens = {"missing": None, "forged": ada.csrf() + "x", "other-session": _other_session_token(ada)}
    for form, path in CSRF_FORMS.items():
        for kind, token in tokens.items():
            with subtests.test(form=form, token=kind):
                data = {"name": "x", "prefix": "abcd1234", "text": "STOP", "phone": ADA, "to": "+15005550006",
                        "id": "1", "action": "dismiss", **({"csrf": token} if token else {})}
                response = ada.client.post(path, data=data, follow_redirects=False)
                assert response.status_code == 403
                assert "Form refused" in response.text
                assert ada.gateway.query("SELECT count(*) FROM api_keys")[0][0] == 0
                assert ada.get("/console/programs").status_code == 200  # still signed in: the form did nothing


def test_sign_in_needs_the_token_of_its_own_form(console: Console) -> None:
    console.add_user("ada@acme.example")
    for data in ({}, {"csrf": "nope"}):
        response = console.client.post("/console/login", data={"email": "ada@acme.example", "password": PASSWORD,
                                                                 **data}, follow_redirects=False)
        assert response.status_code == 403
    console.client.cookies.clear()  # a token without the pre-session cookie it was made for
    token = CSRF.search(console.client.get("/console/login").text).group(1)  # type: ignore[union-attr]
    console.client.cookies.clear()
    response = console.client.post("/console/login", data={"csrf": token, "email": "ada@acme.example",
                                                           "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 403


# --- pages --------------------------------------------------------------------------------


def _cell(html: str, program: str, status: str) -> int:
    row = re.search(rf'<tr data-program="{program}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {program}"
    cell = re.search(rf'data-status="{status}">(\d+)<', row.group(1))
    assert cell
    return int(cell.group(1))


def test_programs_show_counts_per_status_and_the_month_of_joins_and_opt_outs(ada: Console) -> None:
    converse(ada.gateway)
    html = ada.get("/console/programs").text
    counts = {(p, s): _cell(html, p, s) for p in ("deals", "news") for s in ("none", "pendingDOI", "subscribed",
                                                                              "unsubscribed")}
    assert counts == {
        ("deals", "none"): 0, ("deals", "pendingDOI"): 1, ("deals", "subscribed"): 1, ("deals", "unsubscribed"): 1,
        ("news", "none"): 0, ("news", "pendingDOI"): 0, ("news", "subscribed"): 0, ("news", "unsubscribed"): 1,
    }
    # Two confirmed joins; one opt-out (ZOE's STOP also wrote news none → unsubscribed, which ended nothing).
    assert re.search(r'id="total-joins">2<', html) and re.search(r'id="total-optouts">1<', html)
    assert html.count('<rect class="joins"') == 30 and html.count('<rect class="optouts"') == 30
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_programs_are_brand_scoped(console: Console) -> None:
    converse(console.gateway)
    console.add_user("chef@bistro.example", brand="bistro")
    console.sign_in("chef@bistro.example")
    html = console.get("/console/programs").text
    assert "Menu du jour" in html and "ACME" not in html
    assert 'data-program="deals"' not in html
    assert re.search(r'id="total-joins">0<', html)


NUMBER_SPELLINGS = {"national": "(415) 555-0103", "dotted": "415.555.0103", "international": "+1 415 555 0103",
                    "digits-with-code": "14155550103"}


def test_a_phone_timeline_in_time_order_from_any_way_of_writing_the_number(ada: Console, subtests: Any) -> None:
    converse(ada.gateway)
    for spelling, typed in NUMBER_SPELLINGS.items():
        with subtests.test(spelling=spelling):
            response = ada.get("/console/phone", number=typed)
            assert response.status_code == 303
            assert response.headers["location"] == "/console/phones/%2B14155550103"
            page = ada.client.get(response.headers["location"])
            assert page.status_code == 200
            assert f"Phone <span class=\"nowrap\">{ZOE}</span>" in page.text
    html = ada.client.get("/console/phones/" + ZOE).text
    kinds = re.findall(r'data-kind="(\w+)"', html)
    # Newest first. JOIN → join event → prompt; YES → confirm → welcome; STOP → two stop events → one stop reply.
    assert kinds == list(reversed(["inbound", "consent", "outbound", "inbound", "consent", "outbound",
                                   "inbound", "consent", "consent", "outbound"]))
    assert "Consent: confirm" in html and "pendingDOI → subscribed" in html and "YES" in html
    assert re.search(r"status <strong class=\"st-\w+\">(sent|delivered|queued)</strong>", html)
    assert "SM" in html  # provider message ids shown as proof


def test_a_timeline_shows_api_consent_proof_and_the_key(ada: Console) -> None:
    from app.auth import create_key

    info, key = ada.gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="crm"))
    body = {"phoneNumber": ADA, "program": "deals", "consentSource": "web-checkout",
            "consentedAt": "2026-11-01T10:00:00Z",
            "consentProof": {"termsUrl": "https://acme.example/sms-terms", "sourceText": "Text me deals"}}
    assert ada.client.post("/v1/subscriptions/opt-in", json=body, headers={"x-api-key": key}).status_code == 200
    html = ada.client.get("/console/phones/" + ADA).text
    assert "web-checkout" in html and "https://acme.example/sms-terms" in html and "Text me deals" in html
    assert f"#{info.id} (<code>{info.prefix}</code>)" in html


@pytest.mark.parametrize(("typed", "status"), [("12", 400), ("not a phone", 400), ("", 200)],
                         ids=["too-short", "words", "empty-form"])
def test_a_bad_number_is_a_clear_4xx_not_a_crash(ada: Console, typed: str, status: int) -> None:
    response = ada.get("/console/phone", number=typed)
    assert response.status_code == status
    if status == 400:
        assert 'role="alert"' in response.text


def test_another_brands_phone_shows_nothing(console: Console) -> None:
    converse(console.gateway)
    console.add_user("chef@bistro.example", brand="bistro")
    console.sign_in("chef@bistro.example")
    html = console.client.get("/console/phones/" + ZOE).text
    assert 'id="timeline-empty"' in html and "data-kind" not in html and 'id="header-empty"' in html
    assert 'id="ledger-empty"' in console.get("/console/ledger").text
    rows = list(csv.reader(io.StringIO(console.get("/console/ledger.csv").text)))
    assert rows == [list(LEDGER_COLUMNS)]


LEDGER_FILTERS: dict[str, tuple[dict[str, str], list[tuple[str, str]]]] = {
    "all": ({}, [("stop", ZOE), ("stop", ZOE), ("confirm", ZOE), ("join", ZOE), ("join", BOB), ("confirm", ADA),
                 ("join", ADA)]),
    "event": ({"event": "stop"}, [("stop", ZOE), ("stop", ZOE)]),
    "program": ({"program": "news"}, [("stop", ZOE)]),
    "phone": ({"phone": "415-555-0101"}, [("confirm", ADA), ("join", ADA)]),
    "combined": ({"phone": ZOE, "event": "join", "program": "deals"}, [("join", ZOE)]),
    "today": ({"since": "TODAY", "until": "TODAY", "event": "confirm"}, [("confirm", ZOE), ("confirm", ADA)]),
    "until-yesterday": ({"until": "YESTERDAY"}, []),
}


def test_the_ledger_filters_and_their_csv(ada: Console, subtests: Any) -> None:
    converse(ada.gateway)
    today = ada.gateway.clock().date()
    days = {"TODAY": today.isoformat(), "YESTERDAY": date.fromordinal(today.toordinal() - 1).isoformat()}
    for name, (params, expected) in LEDGER_FILTERS.items():
        with subtests.test(filter=name):
            query = {k: days.get(v, v) for k, v in params.items()}
            response = ada.get("/console/ledger", **query)
            assert response.status_code == 200
            found = re.findall(r'<tr data-event="(\w+)">.*?number=%2B(\d+)"', response.text, re.S)
            assert [(e, "+" + p) for e, p in found] == expected
            csv_rows = list(csv.DictReader(io.StringIO(ada.get("/console/ledger.csv", **query).text)))
            assert [(r["event"], r["phone"]) for r in csv_rows] == list(reversed(expected))  # the CSV is oldest first


BAD_FILTERS = {"event": {"event": "nonsense"}, "other-brands-program": {"program": "menu"},
               "since": {"since": "yesterday"}, "until-before-since": {"since": "2026-11-02", "until": "2026-11-01"},
               "phone": {"phone": "12"}, "before": {"before": "x"}}


def test_a_bad_ledger_filter_is_a_400_naming_it(ada: Console, subtests: Any) -> None:
    for name, params in BAD_FILTERS.items():
        with subtests.test(filter=name):
            response = ada.get("/console/ledger", **params)
            assert response.status_code == 400
            assert 'role="alert"' in response.text
            if name != "before":
                assert ada.get("/console/ledger.csv", **params).status_code == 400


def test_the_csv_has_the_export_columns_and_defuses_formulas(ada: Console) -> None:
    ada.gateway.text("=HYPERLINK(\"http://x\") STOP", from_=ADA)
    response = ada.get("/console/ledger.csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="consent-acme-\d{8}T\d{6}Z\.csv"',
                        response.headers["content-disposition"])
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [c.name for c in consent_events.columns]
    raw_text = rows[0].index("raw_text")
    assert {r[raw_text] for r in rows[1:]} == {"'=HYPERLINK(\"http://x\") STOP"}
    assert {r[rows[0].index("phone")] for r in rows[1:]} == {ADA}  # phones keep their +


def test_the_csv_cannot_open_a_formula_in_a_semicolon_locale(ada: Console) -> None:
    """Read as a spreadsheet set to ";" separators reads it: no cell may start a formula."""
    ada.gateway.text("STOP;=cmd|' /C calc'!A0", from_=ADA)
    text = ada.get("/console/ledger.csv").text
    cells = [cell for row in csv.reader(io.StringIO(text), delimiter=";") for cell in row]
    assert any("=cmd" in cell for cell in cells)
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))]


# --- API keys -----------------------------------------------------------------------------


NEW_KEY = re.compile(r'id="new-key" class="key" type="text" readonly value="(olk_[^"]+)"')


def test_create_a_key_see_it_once_use_it_and_revoke_it_at_once(ada: Console) -> None:
    response = ada.post("/console/keys", csrf=ada.csrf("/console/keys"), name="crm")
    assert response.status_code == 303  # POST-redirect-GET: a refresh of the page shows, never makes, a key
    shown = ada.client.get(response.headers["location"])
    found = NEW_KEY.search(shown.text)
    assert found
    key = found.group(1)
    prefix = key.split("_")[1]
    assert response.headers["location"] == f"/console/keys?created={prefix}"
    assert ada.gateway.query("SELECT brand, name FROM api_keys WHERE prefix = :p", p=prefix) == [("acme", "crm")]
    refreshed = ada.client.get(response.headers["location"]).text  # the browser's refresh of that page
    assert key not in refreshed and f'data-prefix="{prefix}"' in refreshed  # shown once
    assert ada.gateway.query("SELECT count(*) FROM api_keys")[0][0] == 1
    assert ada.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200

    asked = ada.post("/console/keys/revoke", csrf=ada.csrf("/console/keys"), prefix=prefix)
    assert asked.status_code == 200 and f"Revoke API key {prefix}?" in asked.text  # first, what it will do
    assert ada.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200
    response = ada.post("/console/keys/revoke", csrf=ada.csrf("/console/keys"), prefix=prefix, confirmed="yes")
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/keys?revoked={prefix}"
    assert ada.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 401  # at once, not in 5 s
    listing = ada.get("/console/keys", revoked=prefix).text
    assert f"Key {prefix} is revoked" in listing
    assert re.search(rf'data-prefix="{prefix}">.*?class="key-status">revoked ', listing, re.S)


def test_a_user_cannot_revoke_another_brands_key(console: Console) -> None:
    from app.auth import create_key

    info, _key = console.gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name=None))
    console.add_user("chef@bistro.example", brand="bistro")
    console.sign_in("chef@bistro.example")
    assert info.prefix not in console.get("/console/keys").text
    response = console.post("/console/keys/revoke", csrf=console.csrf("/console/keys"), prefix=info.prefix,
                            confirmed="yes")
    assert response.status_code == 404
    assert console.gateway.query("SELECT revoked_at FROM api_keys")[0][0] is None


def test_a_key_name_over_the_limit_is_refused(ada: Console) -> None:
    response = ada.post("/console/keys", csrf=ada.csrf("/console/keys"), name="x" * 201)
    assert response.status_code == 400
    assert ada.gateway.query("SELECT count(*) FROM api_keys")[0][0] == 0


# --- keyword playground -------------------------------------------------------------------

WRITTEN = ("inbound_messages", "consent_events", "outbox", "subscriptions")
ACME_SENDER, BISTRO_SENDER = "+15005550006", "+15005550007"
FACT = re.compile(r'data-fact="([a-z]+)">(.*?)</dd>', re.S)


def _counts(gateway: Gateway) -> dict[str, int]:
    return {table: gateway.query(f"SELECT count(*) FROM {table}")[0][0] for table in WRITTEN}


def _facts(html: str) -> dict[str, str]:
    """The playground's result, fact name -> its text without tags."""
    return {name: " ".join(html_text.unescape(re.sub(r"<[^>]+>", "", value)).split())
            for name, value in FACT.findall(html)}


PLAYGROUND = {
    "stop-from-a-subscriber": (ADA.removeprefix("+1"), "stop", {"normalized": "stop", "flagged": "no"},
                               ("deals", "subscribed", "unsubscribed")),
    "negated-stop-is-flagged": (ADA, "don't stop the deals!!", {"flagged": "yes"}, None),
    "join-from-a-new-phone": ("(415) 555-0199", "JOIN", {"flagged": "no", "language": ""},
                              ("deals", "none", "pendingDOI")),
}
TRANSITION_ROW = re.compile(r"<tr><td>(.*?)</td><td>.*?</td><td>(.*?)</td><td>(.*?)</td>")


@pytest.mark.parametrize(("phone", "text", "facts", "transition"), PLAYGROUND.values(), ids=PLAYGROUND.keys())
def test_the_playground_shows_the_dry_run_and_writes_nothing(ada: Console, phone: str, text: str,
                                                             facts: dict[str, str],
                                                             transition: tuple[str, str, str] | None) -> None:
    converse(ada.gateway)
    before = _counts(ada.gateway)
    page = ada.post("/console/playground", csrf=ada.csrf("/console/playground"), text=text, phone=phone,
                    to=ACME_SENDER)
    assert page.status_code == 200, page.text
    shown = _facts(page.text)
    assert shown["text"] == text
    assert shown["phone"].startswith("+1415555")
    for name, value in facts.items():
        assert shown[name].startswith(value), (name, shown)
    assert shown["matched"] and shown["reply"]
    if transition:
        assert transition in TRANSITION_ROW.findall(page.text)
    else:
        assert 'id="no-transitions"' in page.text
    assert _counts(ada.gateway) == before  # nothing written, nothing queued


BAD_TRIES = {
    "another-brands-number": ({"to": BISTRO_SENDER}, "receives no texts on"),
    "unknown-number": ({"to": "+15550000000"}, "receives no texts on"),
    "bad-phone": ({"phone": "12"}, "not"),
    "no-text": ({"text": "  "}, "Type a text"),
    "nul": ({"text": "STOP\x00"}, "NUL character"),  # was a 500 on PostgreSQL
}


@pytest.mark.parametrize(("change", "message"), BAD_TRIES.values(), ids=BAD_TRIES.keys())
def test_the_playground_refuses_bad_input_on_the_page(ada: Console, change: dict[str, str], message: str) -> None:
    before = _counts(ada.gateway)
    data = {"csrf": ada.csrf("/console/playground"), "text": "STOP", "phone": ADA, "to": ACME_SENDER, **change}
    page = ada.post("/console/playground", **data)
    assert page.status_code == 422
    assert 'role="alert"' in page.text and message in page.text
    assert "data-fact" not in page.text
    assert _counts(ada.gateway) == before


def test_the_playground_says_when_the_country_rule_refuses_a_number(ada: Console) -> None:
    page = ada.post("/console/playground", csrf=ada.csrf("/console/playground"), text="JOIN", phone="+4915112345678",
                    to=ACME_SENDER)
    assert page.status_code == 200 and 'id="no-transitions"' in page.text
    why = re.search(r'id="why-nothing">(.*?)</span>', page.text).group(1)  # type: ignore[union-attr]
    assert "only texts numbers of CA, FR, US" in why and "is from DE" in why
    us = ada.post("/console/playground", csrf=ada.csrf("/console/playground"), text="JOIN", phone="(415) 555-0199",
                  to=ACME_SENDER)
    assert 'id="why-nothing"' not in us.text


def test_the_playground_offers_only_the_brands_numbers(console: Console) -> None:
    console.add_user("chef@bistro.example", brand="bistro")
    console.sign_in("chef@bistro.example")
    page = console.get("/console/playground").text
    assert f'value="{BISTRO_SENDER}"' in page and ACME_SENDER not in page


# --- flagged texts ------------------------------------------------------------------------

FLAGGED = "don't stop the deals!!"


def _flag(gateway: Gateway, phone: str = ADA) -> int:
    """A subscribed phone's negated stop: stored flagged; returns its inbound row id."""
    assert gateway.text(FLAGGED, from_=phone).status_code == 200
    [(row_id, flagged)] = gateway.query("SELECT id, flagged FROM inbound_messages WHERE body = :b AND from_phone = :p",
                                        b=FLAGGED, p=phone)
    assert flagged
    return int(row_id)


REASON = "the customer asked by email"


def _resolve(console: Console, row_id: int, action: str) -> Any:
    return console.post("/console/flagged", csrf=console.csrf("/console/flagged"), id=str(row_id), action=action,
                        confirmed="yes", reason=REASON)


def test_treat_as_opt_out_unsubscribes_with_a_console_consent_event(ada: Console) -> None:
    converse(ada.gateway)
    row_id = _flag(ada.gateway)
    assert ada.gateway.subs(ADA)["deals"] == "subscribed"
    page = ada.get("/console/flagged").text
    assert f'data-id="{row_id}"' in page and "don&#39;t stop the deals!!" in page
    card = re.search(rf'data-id="{row_id}">(.*?)</li>', page, re.S).group(1)  # type: ignore[union-attr]
    assert re.search(r'data-field="why">\S', card)  # the detector's reason
    assert 'data-field="program">ACME Deals' not in card and 'data-field="program">deals, news<' in card
    asked = ada.post("/console/flagged", csrf=ada.csrf("/console/flagged"), id=str(row_id), action="opt_out")
    assert asked.status_code == 200 and f"Opt {ADA} out of every program?" in asked.text
    assert ada.gateway.subs(ADA)["deals"] == "subscribed"  # asking changes nothing
    no_reason = ada.post("/console/flagged", csrf=ada.csrf("/console/flagged"), id=str(row_id), action="opt_out",
                         confirmed="yes")
    assert no_reason.status_code == 422 and "Give a reason" in no_reason.text
    assert ada.gateway.subs(ADA)["deals"] == "subscribed"
    response = _resolve(ada, row_id, "opt_out")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/flagged?resolved=opted_out"
    assert set(ada.gateway.subs(ADA).values()) == {"unsubscribed"}
    events = ada.gateway.query("SELECT program, event, source, consent_source, raw_text, to_status, reason"
                               " FROM consent_events WHERE phone = :p AND source = 'console'", p=ADA)
    # Every program of the brand, as the API's opt-out does: one it never joined is closed too.
    assert sorted((e.program, e.event, e.consent_source, e.raw_text, e.to_status) for e in events) == [
        (program, "console_opt_out", "console:ada@acme.example", FLAGGED, "unsubscribed")
        for program in ("deals", "news")]
    assert all(e.reason.endswith(REASON) for e in events)
    [row] = ada.gateway.query("SELECT flag_resolution, flag_resolved_by, flag_resolved_at FROM inbound_messages"
                              " WHERE id = :i", i=row_id)
    assert (row.flag_resolution, row.flag_resolved_by) == ("opted_out", "ada@acme.example")
    assert row.flag_resolved_at is not None
    assert ada.gateway.query("SELECT count(*) FROM outbox WHERE phone = :p AND purpose = 'stop'", p=ADA)[0][0] == 1
    after = ada.get("/console/flagged", resolved="opted_out").text
    assert f'<li class="card" data-id="{row_id}"' not in after
    assert "treated as an opt-out" in after
    decision = re.search(rf'<tr data-id="{row_id}">(.*?)</tr>', after, re.S).group(1)  # type: ignore[union-attr]
    assert 'data-field="decision">treated as opt-out' in decision and 'data-field="by">ada@acme.example' in decision
    assert _resolve(ada, row_id, "opt_out").status_code == 404  # resolved: gone from the queue


def test_dismiss_changes_no_subscription(ada: Console) -> None:
    converse(ada.gateway)
    row_id = _flag(ada.gateway)
    subs, events = ada.gateway.subs(ADA), _counts(ada.gateway)
    response = _resolve(ada, row_id, "dismiss")
    assert response.status_code == 303
    assert ada.gateway.subs(ADA) == subs
    assert _counts(ada.gateway) == events
    [row] = ada.gateway.query("SELECT flag_resolution, flag_resolved_by FROM inbound_messages WHERE id = :i", i=row_id)
    assert tuple(row) == ("dismissed", "ada@acme.example")
    assert "flagged-empty" in ada.get("/console/flagged").text


BAD_RESOLUTIONS = {"unknown-action": ("1", "delete", 400), "no-id": ("", "dismiss", 400),
                   "missing-row": ("999999", "dismiss", 404)}


@pytest.mark.parametrize(("row_id", "action", "status"), BAD_RESOLUTIONS.values(), ids=BAD_RESOLUTIONS.keys())
def test_a_bad_decision_is_a_clear_4xx(ada: Console, row_id: str, action: str, status: int) -> None:
    response = ada.post("/console/flagged", csrf=ada.csrf("/console/flagged"), id=row_id, action=action)
    assert response.status_code == status
    assert 'role="alert"' in response.text


@pytest.mark.parametrize("action", ["opt_out", "dismiss"])
def test_another_brands_flagged_text_is_not_found(console: Console, action: str) -> None:
    converse(console.gateway)
    row_id = _flag(console.gateway)
    console.add_user("chef@bistro.example", brand="bistro")
    console.sign_in("chef@bistro.example")
    assert f'data-id="{row_id}"' not in console.get("/console/flagged").text
    assert _resolve(console, row_id, action).status_code == 404
    assert console.gateway.query("SELECT flag_resolution FROM inbound_messages WHERE id = :i", i=row_id)[0][0] is None
    assert console.gateway.subs(ADA)["deals"] == "subscribed"
