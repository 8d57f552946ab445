"""Sonar's seed (004, Add/Update Customer) posted to /compat/sonar/api/v1/customers on both engines.

The bodies are the seed's (004:28-35, 39-43), cited by line, with one change each: the page's
e-mail addresses are obfuscated by its host's e-mail protection ("[email protected]", not an
address), so each stands in as a real-looking one. The second body also ends in a trailing
comma (004:42), which is not JSON: posted as printed it is a 400, and without that comma it
does what 004:45-59 says. The key goes in X-Token, as Sonar's API takes its token.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import Gateway
from tests.dialect_support import gw, make_key  # noqa: F401 - the fixture

P = "/compat/sonar/api/v1/customers"
# 004:28-35, verbatim.
ADD_004_28 = """{
"phone_number": "+13105551234", 
"email": "[email protected]", 
"first_name": "Matthew", 
"last_name": "Berman",
"picture_url": "http://where_the_pics_live.com/the_bermanator.png",
"properties": {"great_customer": "true"}
}"""
# 004:39-43, verbatim.
UPDATE_004_39 = """{
"phone_number": "+13105551234", 
"email": "[email protected]", 
"first_name": "John", 
}"""
OBFUSCATED = "[email protected]"


def post(gateway: Gateway, key: str, raw: str) -> Any:
    return gateway.client.post(P, content=raw.encode(), headers={"X-Token": key, "Content-Type": "application/json"})


def test_004_add_then_update_changes_only_the_fields_sent(gw: Gateway) -> None:
    key = make_key(gw)
    created = post(gw, key, ADD_004_28.replace(OBFUSCATED, "matthew@example.com"))
    assert created.status_code == 201, created.text  # 004:7 "201: Created"
    assert created.json() == {
        "phone_number": "+13105551234", "email": "matthew@example.com", "first_name": "Matthew", "last_name": "Berman",
        "picture_url": "http://where_the_pics_live.com/the_bermanator.png", "properties": {"great_customer": "true"},
    }
    as_printed = post(gw, key, UPDATE_004_39.replace(OBFUSCATED, "john@example.com"))
    assert as_printed.status_code == 400, as_printed.text  # 004:42's trailing comma: not JSON
    updated = post(gw, key, UPDATE_004_39.replace(OBFUSCATED, "john@example.com").replace('"John", \n}', '"John"\n}'))
    assert updated.status_code == 200, updated.text  # 004:8 "200: OK"
    # 004:47-53 (and picture_url, kept: only first_name and email changed, 004:59).
    assert updated.json() == {
        "phone_number": "+13105551234", "email": "john@example.com", "first_name": "John", "last_name": "Berman",
        "picture_url": "http://where_the_pics_live.com/the_bermanator.png", "properties": {"great_customer": "true"},
    }
    assert gw.query("SELECT count(*) FROM profiles WHERE phone = '+13105551234'")[0][0] == 1


def test_004_the_phone_number_is_required_with_its_country_code(gw: Gateway) -> None:
    key = make_key(gw)
    missing = post(gw, key, '{"email": "a@example.com"}')
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "phone_number"
    bad = post(gw, key, '{"phone_number": "12"}')
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "phone_number"


def test_004_time_zones_are_tz_database_names(gw: Gateway) -> None:
    # 004:12-14 and 004:105-108 (the default is America/Los_Angeles).
    key = make_key(gw)
    good = post(gw, key, '{"phone_number": "+13105551234", "timezone": "America/Los_Angeles"}')
    assert good.status_code == 201 and good.json()["timezone"] == "America/Los_Angeles"
    bad = post(gw, key, '{"phone_number": "+13105551234", "timezone": "Pacific Time"}')
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "timezone"


def test_004_subscribed_false_opts_out_and_true_needs_proof(gw: Gateway) -> None:
    # 004:91-94 "Whether the customer will receive API Messages and Mass Messages".
    key = make_key(gw)
    gw.text("JOIN", from_="+13105551234")
    gw.text("YES", from_="+13105551234")
    assert gw.subs("+13105551234")["deals"] == "subscribed"
    refused = post(gw, key, '{"phone_number": "+13105551234", "subscribed": true}')
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "subscribed"
    out = post(gw, key, '{"phone_number": "+13105551234", "subscribed": false}')
    assert out.status_code == 201, out.text
    assert set(gw.subs("+13105551234").values()) == {"unsubscribed"}


def test_the_key_goes_in_x_token(gw: Gateway) -> None:
    key = make_key(gw)
    body = '{"phone_number": "+13105551234"}'
    assert gw.client.post(P, content=body, headers={"x-api-key": key}).status_code == 401
    assert gw.client.post(P, content=body, headers={"X-Token": "nope"}).status_code == 401
    assert post(gw, key, body).status_code == 201
