"""Console accounts on both engines: a sign-in throttle that slows an attacker without locking the
owner out (per email and client address, backing off, shared by every process), re-enabling an
account, the one-time reset link, changing one's own password, roles enforced on the server, and
the security headers on every console response (pages, static files, 404s)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.console.accounts import create_user, disable_user, enable_user, hash_password, start_reset
from app.console.throttle import FREE_PER_ACCOUNT, FREE_PER_ADDRESS, client_key, wait_after
from app.errors import Conflict
from tests.conftest import Gateway

PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"
SECRET = "console-test-secret-key-0123456789abcdef"
EMAIL = "ada@acme.example"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ATTACKER, OWNER = ("203.0.113.9", 40000), ("198.51.100.7", 40001)


class Browser:
    """A browser at one client address, talking to a gateway's app."""

    def __init__(self, gateway: Gateway, address: tuple[str, int] = OWNER):
        self.gateway = gateway
        self.client = TestClient(gateway.client.app, base_url="https://testserver", client=address)

    def csrf(self, path: str) -> str:
        match = CSRF.search(self.client.get(path).text)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def sign_in(self, email: str = EMAIL, password: str = PASSWORD) -> Any:
        return self.client.post("/console/login", data={"csrf": self.csrf("/console/login"), "email": email,
                                                        "password": password}, follow_redirects=False)

    def get(self, path: str, **params: str) -> Any:
        return self.client.get(path, params=params, follow_redirects=False)

    def post(self, path: str, **data: str) -> Any:
        return self.client.post(path, data=data, follow_redirects=False)


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], database_url: str) -> Gateway:
    return gateway_factory(database_url, secret_key=SECRET)


def add_user(gateway: Gateway, email: str = EMAIL, role: str = "owner", brand: str = "acme") -> None:
    digest = hash_password(PASSWORD)
    gateway.state.writer.call(lambda c, now: create_user(c, now, brand=brand, email=email, password_hash=digest,
                                                         role=role))


# --- the throttle ---------------------------------------------------------------------------


def test_an_attacker_guessing_elsewhere_never_locks_the_owner_out(gateway: Gateway) -> None:
    add_user(gateway)
    attacker, owner = Browser(gateway, ATTACKER), Browser(gateway, OWNER)
    statuses = [attacker.sign_in(password=WRONG).status_code for _ in range(12)]
    assert statuses[:FREE_PER_ACCOUNT + 1] == [401] * (FREE_PER_ACCOUNT + 1)
    assert 429 in statuses  # the attacker is slowed …
    assert attacker.sign_in().status_code == 429  # … even holding the right password, until the wait is over
    response = owner.sign_in()  # … but the owner, from their own address, signs in at once
    assert response.status_code == 303, response.text
    assert owner.get("/console/programs").status_code == 200


def test_each_failure_past_the_free_ones_doubles_the_wait_and_the_right_password_then_gets_in(
        gateway: Gateway) -> None:
    add_user(gateway)
    browser = Browser(gateway, ATTACKER)
    for _ in range(FREE_PER_ACCOUNT):
        assert browser.sign_in(password=WRONG).status_code == 401
    waits = []
    for _ in range(4):
        assert browser.sign_in(password=WRONG).status_code == 401  # let through, counted, and it failed
        refused = browser.sign_in(password=WRONG)
        assert refused.status_code == 429
        assert "Too many failed sign-ins" in refused.text
        waits.append(int(refused.headers["retry-after"]))
        gateway.clock.advance(seconds=waits[-1])
    assert waits == [1, 2, 4, 8]  # backing off, never a lockout
    assert browser.sign_in().status_code == 303  # the wait is over: the right password gets in
    # and the success forgets this email's failures from this address
    browser.client.cookies.clear()
    assert [browser.sign_in(password=WRONG).status_code for _ in range(FREE_PER_ACCOUNT)] == [401] * FREE_PER_ACCOUNT


def test_the_throttle_is_shared_by_every_process(gateway_factory: Callable[..., Gateway], database_url: str) -> None:
    first = gateway_factory(database_url, secret_key=SECRET)
    second = gateway_factory(database_url, secret_key=SECRET)  # another process on the same database
    add_user(first)
    one, other = Browser(first, ATTACKER), Browser(second, ATTACKER)
    for _ in range(FREE_PER_ACCOUNT + 1):
        assert one.sign_in(password=WRONG).status_code == 401
    refused = other.sign_in(password=WRONG)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1


def test_one_address_trying_many_emails_is_slowed_and_others_are_not(gateway: Gateway) -> None:
    add_user(gateway)
    attacker = Browser(gateway, ATTACKER)
    for n in range(FREE_PER_ADDRESS):
        assert attacker.sign_in(email=f"guess{n}@acme.example", password=WRONG).status_code == 401
    assert attacker.sign_in(email="another@acme.example", password=WRONG).status_code == 401  # counted, now waits
    assert attacker.sign_in(email="yet-another@acme.example", password=WRONG).status_code == 429
    assert Browser(gateway, OWNER).sign_in().status_code == 303
    # A day later the counts are forgotten, and so are their rows: the table stays small.
    gateway.clock.advance(days=1, seconds=1)
    assert attacker.sign_in(email="late@acme.example", password=WRONG).status_code == 401
    assert gateway.query("SELECT count(*) FROM console_sign_in_attempts")[0][0] == 2  # that email, that address


def test_the_throttle_rules() -> None:
    assert [wait_after(n, 5) for n in (0, 5, 6, 7, 8)] == [0.0, 0.0, 1.0, 2.0, 4.0]
    assert wait_after(10_000, 5) == 15 * 60  # capped: a delay, not a lock
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "-"


# --- accounts: enable, reset, own password ---------------------------------------------------


def test_a_disabled_account_is_enabled_again_not_created_again(gateway: Gateway) -> None:
    add_user(gateway)
    browser = Browser(gateway)
    assert browser.sign_in().status_code == 303
    gateway.state.writer.call(lambda c, now: disable_user(c, now, email=EMAIL))
    assert browser.get("/console/programs").status_code == 303
    with pytest.raises(Conflict, match="enable it with `optline users enable ada@acme.example`"):
        add_user(gateway)
    stale = browser.client.cookies.get("optline_console")
    gateway.state.writer.call(lambda c, now: enable_user(c, now, email=EMAIL))
    assert browser.sign_in().status_code == 303
    # The session from before the account was disabled does not come back with it.
    replay = Browser(gateway)
    replay.client.cookies.set("optline_console", stale, domain="testserver.local", path="/console")
    assert replay.get("/console/programs").status_code == 303


def test_a_reset_link_works_once_ends_every_session_and_expires(gateway: Gateway) -> None:
    add_user(gateway)
    signed_in = Browser(gateway)
    assert signed_in.sign_in().status_code == 303
    _user, token = gateway.state.writer.call(lambda c, now: start_reset(c, now, email=EMAIL))
    person = Browser(gateway, ATTACKER)
    page = person.get(f"/console/reset/{token}")
    assert page.status_code == 200 and EMAIL in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    csrf = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    mismatch = person.post(f"/console/reset/{token}", csrf=csrf, new_password="new password one",
                           new_password_again="new password two")
    assert mismatch.status_code == 422 and "differ" in mismatch.text
    done = person.post(f"/console/reset/{token}", csrf=csrf, new_password="a brand new password",
                       new_password_again="a brand new password")
    assert done.status_code == 200 and "Your new password is set" in done.text
    assert signed_in.get("/console/programs").status_code == 303  # every earlier session ended
    assert person.sign_in(password=PASSWORD).status_code == 401
    assert person.sign_in(password="a brand new password").status_code == 303
    person.client.cookies.clear()
    again = person.post(f"/console/reset/{token}", csrf=person.csrf("/console/login"), new_password="yet another password",
                        new_password_again="yet another password")
    assert again.status_code == 404  # used once
    assert person.get(f"/console/reset/{token}").status_code == 404
    _user, late = gateway.state.writer.call(lambda c, now: start_reset(c, now, email=EMAIL))
    gateway.clock.advance(hours=24, seconds=1)
    assert person.get(f"/console/reset/{late}").status_code == 404  # expired
    assert person.get("/console/reset/" + "x" * 43).status_code == 404


def test_users_change_their_own_password(gateway: Gateway) -> None:
    add_user(gateway, role="viewer")
    browser, elsewhere = Browser(gateway), Browser(gateway, ATTACKER)
    assert browser.sign_in().status_code == 303 and elsewhere.sign_in().status_code == 303
    csrf = browser.csrf("/console/account")
    wrong = browser.post("/console/account", csrf=csrf, current_password=WRONG, new_password="a brand new password",
                         new_password_again="a brand new password")
    assert wrong.status_code == 403
    short = browser.post("/console/account", csrf=csrf, current_password=PASSWORD, new_password="short",
                         new_password_again="short")
    assert short.status_code == 422 and "at least 10" in short.text
    done = browser.post("/console/account", csrf=csrf, current_password=PASSWORD,
                        new_password="a brand new password", new_password_again="a brand new password")
    assert done.status_code == 303
    assert "Your password is changed" in browser.client.get(done.headers["location"]).text  # still signed in here
    assert elsewhere.get("/console/programs").status_code == 303  # the other session ended
    assert Browser(gateway).sign_in(password="a brand new password").status_code == 303


# --- roles ----------------------------------------------------------------------------------

ROLE_CHECKS = {
    # what, how, the least role that may
    "keys-page": (("GET", "/console/keys", {}), "owner"),
    "create-key": (("POST", "/console/keys", {"name": "x"}), "owner"),
    "revoke-key": (("POST", "/console/keys/revoke", {"prefix": "abcd1234"}), "owner"),
    "ledger-csv": (("GET", "/console/ledger.csv", {}), "compliance"),
    "flag-decision": (("POST", "/console/flagged", {"id": "1", "action": "dismiss"}), "compliance"),
    "opt-out": (("POST", "/console/phones/+14155550101/opt-out", {"program": "all"}), "compliance"),
    "ledger": (("GET", "/console/ledger", {}), "viewer"),
    "playground": (("POST", "/console/playground", {"text": "STOP", "phone": "+14155550101",
                                                     "to": "+15005550006"}), "viewer"),
}
RANK = {"viewer": 0, "compliance": 1, "owner": 2}


@pytest.mark.parametrize("role", ["viewer", "compliance", "owner"])
def test_roles_are_enforced_on_the_server(gateway: Gateway, role: str, subtests: Any) -> None:
    add_user(gateway, role=role)
    browser = Browser(gateway)
    assert browser.sign_in().status_code == 303
    csrf = browser.csrf("/console/account")
    for name, ((method, path, data), least) in ROLE_CHECKS.items():
        with subtests.test(action=name):
            if method == "GET":
                response = browser.get(path)
            else:
                response = browser.post(path, csrf=csrf, **data)
            if RANK[role] < RANK[least]:
                assert response.status_code == 403, response.text
                assert f"This needs the {least} role" in response.text
            else:
                assert response.status_code not in (401, 403), (name, response.status_code)
    assert gateway.query("SELECT count(*) FROM api_keys")[0][0] == (1 if role == "owner" else 0)
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == 0  # nothing confirmed, nothing changed
    nav = browser.get("/console/programs").text
    assert ('href="/console/keys"' in nav) is (role == "owner")


# --- security headers on every console response ---------------------------------------------

HEADERS = {"content-security-policy": "frame-ancestors 'none'", "x-content-type-options": "nosniff",
           "x-frame-options": "DENY", "referrer-policy": "no-referrer", "cross-origin-opener-policy": "same-origin"}


def test_every_console_response_carries_the_security_headers(gateway: Gateway, subtests: Any) -> None:
    add_user(gateway)
    anonymous, browser = Browser(gateway, ATTACKER), Browser(gateway)
    assert browser.sign_in().status_code == 303
    responses = {
        "login": anonymous.get("/console/login"),
        "redirect": anonymous.get("/console/programs"),
        "css": anonymous.get("/console/static/console.css"),
        "missing-static": anonymous.get("/console/static/nope.css"),
        "404": anonymous.get("/console/no-such-page"),
        "405": anonymous.client.request("DELETE", "/console/login"),
        "bare-prefix": anonymous.get("/console"),
        "page": browser.get("/console/programs"),
        "csv": browser.get("/console/ledger.csv"),
        "refused-form": browser.post("/console/keys", name="x"),
        "signed-in-404": browser.get("/console/programs/nope/extra/deep"),
    }
    for name, response in responses.items():
        with subtests.test(response=name):
            for header, value in HEADERS.items():
                assert value in response.headers.get(header, ""), (name, response.status_code, header)
    assert responses["css"].status_code == 200 and responses["css"].headers["cache-control"] == "no-cache"
    assert responses["page"].headers["cache-control"] == "no-store"
    assert responses["404"].status_code == 404 and "There is no console page" in responses["404"].text
    assert "x-frame-options" not in anonymous.get("/healthz").headers  # only the console's responses
