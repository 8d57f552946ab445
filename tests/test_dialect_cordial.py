"""Cordial's seed (003, SMS contact object) posted verbatim to /compat/cordial/v2/contacts on both engines.

Each body is the seed's, cited by file:line; the one change allowed is the program name:
Cordial's `cordialthreads` is optline's `deals` (acme; join keywords JOIN and DEALS). The key
is the HTTP Basic user, as Cordial's API takes its key.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import ACME, FakeClock, Gateway
from tests.dialect_support import basic, gw, make_key  # noqa: F401 - the fixture


@pytest.fixture(autouse=True)
def daytime(clock: FakeClock) -> None:
    """17:00 UTC on the gateway's clock: the seed's subscribe calls start double opt-in, and quiet hours hold
    an API's prompt at night in the recipient's zone (docs/compliance.md). The seed's number, +1 222 555 5151,
    has no known area, so its zone is UTC; at 17:00 UTC its prompt goes at once, whenever the suite runs."""
    now = clock()
    at = now.replace(hour=17, minute=0, second=0, microsecond=0)
    clock.advance(seconds=((at if at > now else at + timedelta(days=1)) - now).total_seconds())

P = "/compat/cordial/v2/contacts"
PHONE = "+12225555151"
PLUS0000 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000")

# Verbatim, but for cordialthreads -> deals.
CREATE_003_32 = """{ "channels": { "sms": { "address": "12225555151" } } }"""
SUBSCRIBE_003_36 = """{ "channels": { "sms": { "address": "12225555151", "programs": { "cordialthreads": { "keyword": "join", "subscribeStatus": "subscribed" } } } } }"""
UNSUBSCRIBE_003_49 = """{ "channels": { "sms": { "address": "12225555151", "programs": { "cordialthreads": { "subscribeStatus": "unsubscribed" } } } } }"""
RESUBSCRIBE_003_62 = """{ "channels": { "sms": { "address": "12225555151", "programs": { "cordialthreads": { "keyword": "join", "subscribeStatus": "subscribed" } } } } }"""


def mapped(raw: str) -> str:
    return raw.replace("cordialthreads", "deals")


def send(gateway: Gateway, key: str, method: str, path: str, raw: str | None = None) -> Any:
    headers = {"Authorization": basic(key)}
    if raw is not None:
        headers["Content-Type"] = "application/json"
    return gateway.client.request(method, P + path, content=mapped(raw).encode() if raw else None, headers=headers)


def program(gateway: Gateway, key: str) -> dict[str, Any]:
    response = send(gateway, key, "GET", "/sms:12225555151")
    assert response.status_code == 200, response.text
    sms = response.json()["channels"]["sms"]
    assert sms["address"] == "12225555151"  # 003:5, 10: the address as Cordial stores it
    return sms["programs"]["deals"]  # type: ignore[no-any-return]


def test_003_32_create_with_the_minimum(gw: Gateway) -> None:
    key = make_key(gw)
    response = send(gw, key, "POST", "", CREATE_003_32)
    assert response.status_code == 200, response.text
    # 003:33-34: status none at the SMS channel level, and the DOI is not triggered.
    expected = {"channels": {"sms": {"address": "12225555151", "subscribeStatus": "none"}}}
    assert response.json() == expected
    assert send(gw, key, "GET", "/sms:12225555151").json() == expected
    assert send(gw, key, "GET", "/12225555151").json() == expected
    gw.drain()
    assert gw.replies(PHONE) == []


def test_003_36_create_and_subscribe_then_confirm(gw: Gateway) -> None:
    key = make_key(gw)
    response = send(gw, key, "POST", "", SUBSCRIBE_003_36)
    assert response.status_code == 200, response.text
    # 003:40: the opt-in message is sent and the program's status is pendingDOI.
    assert response.json()["channels"]["sms"]["programs"]["deals"] == {"keyword": "join", "subscribeStatus": "pendingDOI"}
    gw.drain()
    assert len(gw.replies(PHONE)) == 1 and "YES" in gw.replies(PHONE)[0]
    # 003:41: the contact confirms and is subscribed; the object is 003:5's.
    assert gw.text("YES", from_=PHONE, to=ACME).status_code == 200
    got = program(gw, key)
    assert got["keyword"] == "join"  # the join keyword, not the confirm word
    assert PLUS0000.fullmatch(got["subscribedAt"])
    assert (got["unsubscribedAt"], got["subscribeStatus"]) == ("", "subscribed")
    assert list(got) == ["keyword", "subscribedAt", "unsubscribedAt", "subscribeStatus"]


def test_003_45_subscribing_needs_the_program_and_keyword(gw: Gateway) -> None:
    key = make_key(gw)
    no_keyword = SUBSCRIBE_003_36.replace('"keyword": "join", ', "")
    response = send(gw, key, "POST", "", no_keyword)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "channels.sms.programs.deals.keyword"
    unknown = send(gw, key, "POST", "", SUBSCRIBE_003_36.replace("cordialthreads", "nosuchprogram"))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "channels.sms.programs.nosuchprogram"
    # 003:12: "one of the program opt-in keywords": NEWS is another program's.
    wrong = send(gw, key, "POST", "", SUBSCRIBE_003_36.replace('"join"', '"news"'))
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "channels.sms.programs.deals.keyword"
    assert gw.subs(PHONE) == {}


def test_003_49_to_70_unsubscribe_then_resubscribe(gw: Gateway) -> None:
    key = make_key(gw)
    assert send(gw, key, "POST", "", SUBSCRIBE_003_36).status_code == 200
    gw.text("YES", from_=PHONE, to=ACME)
    subscribed_at = program(gw, key)["subscribedAt"]
    gw.drain()
    before = len(gw.replies(PHONE))
    out = send(gw, key, "PUT", "/sms:12225555151", UNSUBSCRIBE_003_49)
    assert out.status_code == 200, out.text
    # 003:51-52: unsubscribed at once, and the default stop message is sent.
    gw.drain()
    assert len(gw.replies(PHONE)) == before + 1 and "unsubscribed" in gw.replies(PHONE)[-1]
    # 003:55-59: the most recent subscribedAt and unsubscribedAt stay on the record.
    got = program(gw, key)
    assert (got["keyword"], got["subscribedAt"], got["subscribeStatus"]) == ("join", subscribed_at, "unsubscribed")
    assert PLUS0000.fullmatch(got["unsubscribedAt"])
    assert out.json()["channels"]["sms"]["programs"]["deals"] == got
    back = send(gw, key, "PUT", "/sms:12225555151", RESUBSCRIBE_003_62)
    assert back.status_code == 200, back.text
    # 003:64-70: pendingDOI, subscribedAt kept until the DOI completes, unsubscribedAt not retained.
    assert program(gw, key) == {"keyword": "join", "subscribedAt": subscribed_at, "subscribeStatus": "pendingDOI"}
    gw.drain()
    assert "YES" in gw.replies(PHONE)[-1]
    gw.clock.advance(seconds=2)
    gw.text("YES", from_=PHONE, to=ACME)
    again = program(gw, key)
    assert again["subscribeStatus"] == "subscribed" and again["unsubscribedAt"] == ""
    assert again["subscribedAt"] != subscribed_at  # 003:68-69: updated to the most recent subscription


def test_an_address_that_is_not_the_keys_is_422(gw: Gateway) -> None:
    # The consent rules are app.optin's: the dialect adds its own checks before, never removes one.
    key = make_key(gw)
    assert send(gw, key, "POST", "", SUBSCRIBE_003_36).status_code == 200
    mismatch = send(gw, key, "PUT", "/sms:12225555152", UNSUBSCRIBE_003_49)
    assert mismatch.status_code == 422 and mismatch.json()["errors"][0]["field"] == "channels.sms.address"
    assert gw.subs(PHONE) == {"deals": "pendingDOI"}


def test_a_contact_never_seen_is_404(gw: Gateway) -> None:
    key = make_key(gw)
    assert send(gw, key, "GET", "/sms:12225555199").status_code == 404


def test_the_key_is_the_basic_user(gw: Gateway) -> None:
    key = make_key(gw)
    assert gw.client.get(f"{P}/sms:12225555151", headers={"x-api-key": key}).status_code == 401
    assert gw.client.get(f"{P}/sms:12225555151", headers={"Authorization": "Basic !!"}).status_code == 401
    assert gw.client.get(f"{P}/sms:12225555151", headers={"Authorization": basic("olk_nope_x")}).status_code == 401
    assert send(gw, key, "POST", "", CREATE_003_32).status_code == 200


def test_native_contacts_put_accepts_cordials_keyword(gw: Gateway) -> None:
    # Finding: 003:36's program object carries "keyword": "join", and PUT /v1/contacts/{phone} said 422
    # "unknown field". It is accepted when it is one of the program's join keywords.
    key = make_key(gw)
    body = {"channels": {"sms": {"address": "12225555151",
                                 "programs": {"deals": {"keyword": "join", "subscribeStatus": "subscribed"}}}}}
    response = gw.client.put(f"/v1/contacts/{PHONE}", json=body, headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    assert response.json()["channels"]["sms"]["programs"]["deals"]["subscribeStatus"] == "pendingDOI"
    assert gw.query("SELECT keyword FROM consent_events WHERE phone = :p", p=PHONE)[-1][0] == "join"
    body["channels"]["sms"]["programs"]["deals"]["keyword"] = "NEWS"  # type: ignore[index]
    wrong = gw.client.put(f"/v1/contacts/{PHONE}", json=body, headers={"x-api-key": key})
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["errors"][0]["field"] == "channels.sms.programs.deals.keyword"


def test_after_the_phones_own_stop_a_resubscribe_is_409(gw: Gateway) -> None:
    key = make_key(gw)
    assert send(gw, key, "POST", "", SUBSCRIBE_003_36).status_code == 200
    gw.text("YES", from_=PHONE, to=ACME)
    gw.text("STOP", from_=PHONE, to=ACME)
    gw.clock.advance(seconds=5)
    response = send(gw, key, "PUT", "/sms:12225555151", RESUBSCRIBE_003_62)
    assert response.status_code == 409, response.text
    assert response.json()["errors"][0]["field"] == "channels.sms.programs.deals"
    assert response.json()["optOut"]["source"] == "sms"
    assert gw.subs(PHONE)["deals"] == "unsubscribed"
    gw.drain()
    assert "YES" not in gw.replies(PHONE)[-1]  # no prompt went out
