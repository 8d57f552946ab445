"""Synerise's seed (002, CRM profile management) sent verbatim to /compat/synerise on both engines.

Each request is the seed's curl call, cited by file:line: method, path (after the host), body.
The seed's Bearer tokens are truncated placeholders ("eyJh...8MltQ"): an optline key takes
their place. Its hosts are api.synerise.com; the paths below are the same under /compat/synerise.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import ACME, Gateway
from tests.dialect_support import gw, make_key  # noqa: F401 - the fixture

P = "/compat/synerise"
# 002:28-30, verbatim.
CREATE_002_28 = """{
   "email": "sampleclient@synerise.com"
}"""
# 002:121-124, verbatim.
UPDATE_002_121 = """{
    "firstName": "John",
    "lastName": "Smith"
}"""
# 002:159-170, verbatim.
BATCH_002_159 = """[
   {
      "email": "newclient@synerise.com"
   },
   {
      "customId": "newClientCustomId"
   },
   {
      "email": "sampleclient@synerise.com",
      "firstName": "Michael"
   }
]"""
# 002:24-27 and the others: the headers every call sends, but the token.
HEADERS = {"Accept": "application/json", "Content-Type": "application/json", "Api-Version": "4.4"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def call(gateway: Gateway, key: str, method: str, path: str, raw: str | None = None) -> Any:
    return gateway.client.request(method, P + path, content=raw.encode() if raw is not None else None,
                                  headers={**HEADERS, "Authorization": f"Bearer {key}"})


def get_by_email(gateway: Gateway, key: str, email: str = "sampleclient@synerise.com") -> dict[str, Any]:
    response = call(gateway, key, "GET", f"/v4/clients/by-email/{email}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_002_22_create_then_retrieve_by_email(gw: Gateway) -> None:
    key = make_key(gw)
    created = call(gw, key, "POST", "/v4/clients", CREATE_002_28)
    # 002:32 "The response is HTTP 202 with no content."
    assert created.status_code == 202 and created.content == b""
    got = get_by_email(gw, key)  # 002:47-52
    # 002:56-91: every field of the profile, in that order.
    assert list(got) == ["previousClients", "clientId", "email", "phone", "customId", "uuid", "firstName", "lastName",
                         "displayName", "company", "address", "city", "province", "zipCode", "countryCode",
                         "birthDate", "lastActivityDate", "sex", "avatarUrl", "anonymous", "agreements", "attributes",
                         "tags"]
    assert isinstance(got["clientId"], int) and UUID.fullmatch(got["uuid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got["lastActivityDate"])
    assert {k: got[k] for k in ("previousClients", "email", "phone", "customId", "lastName", "displayName", "company",
                                "address", "city", "province", "zipCode", "countryCode", "birthDate", "sex",
                                "anonymous", "agreements", "attributes", "tags")} == {
        "previousClients": [], "email": "sampleclient@synerise.com", "phone": None, "customId": None,
        "lastName": None, "displayName": None, "company": None, "address": None, "city": None, "province": None,
        "zipCode": None, "countryCode": None, "birthDate": None, "sex": "NOT_SPECIFIED", "anonymous": False,
        "agreements": {"email": False, "sms": False, "push": False, "webPush": False, "bluetooth": False,
                       "rfid": False, "wifi": False},
        "attributes": {}, "tags": [],
    }
    # The same profile by its other identifiers (002:38-43: email, phone, uuid, customId; and clientId).
    assert call(gw, key, "GET", f"/v4/clients/by-uuid/{got['uuid']}").json() == got
    assert call(gw, key, "GET", f"/v4/clients/{got['clientId']}").json() == got


def test_002_115_update_by_email(gw: Gateway) -> None:
    key = make_key(gw)
    call(gw, key, "POST", "/v4/clients", CREATE_002_28)
    updated = call(gw, key, "POST", "/v4/clients/by-email/sampleclient@synerise.com", UPDATE_002_121)
    assert updated.status_code == 202 and updated.content == b""  # 002:126
    got = get_by_email(gw, key)
    assert (got["firstName"], got["lastName"]) == ("John", "Smith")


def test_002_111_null_deletes_and_empty_strings_are_refused(gw: Gateway) -> None:
    key = make_key(gw)
    call(gw, key, "POST", "/v4/clients", CREATE_002_28)
    path = "/v4/clients/by-email/sampleclient@synerise.com"
    assert call(gw, key, "POST", path, '{"city": "Krakow", "sex": "FEMALE", "attributes": {"plan": "gold", '
                '"n": 1}, "tags": ["vip"], "agreements": {"email": true}}').status_code == 202
    got = get_by_email(gw, key)
    assert (got["city"], got["sex"], got["attributes"], got["tags"], got["agreements"]["email"]) == (
        "Krakow", "FEMALE", {"plan": "gold", "n": 1}, ["vip"], True)
    # "Sending a null value deletes an attribute (if it's a custom attribute) or sets it to null/default".
    assert call(gw, key, "POST", path, '{"city": null, "sex": null, "attributes": {"plan": null}}').status_code == 202
    got = get_by_email(gw, key)
    assert (got["city"], got["sex"], got["attributes"]) == (None, "NOT_SPECIFIED", {"n": 1})
    # "Empty strings are not accepted." (002:111, 149), anywhere in the body.
    for body, field in (('{"firstName": ""}', "firstName"), ('{"attributes": {"plan": ""}}', "attributes.plan"),
                        ('{"city": " "}', "city")):
        refused = call(gw, key, "POST", path, body)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field, refused.text
    assert call(gw, key, "POST", "/v4/clients", '{"email": ""}').status_code == 422


def test_002_134_delete_by_client_id(gw: Gateway) -> None:
    key = make_key(gw)
    call(gw, key, "POST", "/v4/clients", CREATE_002_28)
    client_id = get_by_email(gw, key)["clientId"]
    deleted = call(gw, key, "DELETE", f"/v4/clients/{client_id}")
    assert deleted.status_code == 202 and deleted.content == b""  # 002:141
    assert call(gw, key, "GET", "/v4/clients/by-email/sampleclient@synerise.com").status_code == 404
    # 002:135's own clientId names no profile of this brand.
    assert call(gw, key, "DELETE", "/v4/clients/2149203825").status_code == 404


def test_002_153_batch_creates_two_and_updates_one(gw: Gateway) -> None:
    key = make_key(gw)
    call(gw, key, "POST", "/v4/clients", CREATE_002_28)
    before = get_by_email(gw, key)
    response = call(gw, key, "POST", "/v4/clients/batch", BATCH_002_159)
    assert response.status_code == 202 and response.content == b""  # 002:172
    after = get_by_email(gw, key)
    assert after["firstName"] == "Michael" and after["clientId"] == before["clientId"]
    assert get_by_email(gw, key, "newclient@synerise.com")["email"] == "newclient@synerise.com"
    custom = call(gw, key, "GET", "/v4/clients/by-customId/newClientCustomId")
    assert custom.status_code == 200 and custom.json()["customId"] == "newClientCustomId"
    assert custom.json()["anonymous"] is False
    # One bad item refuses the batch, naming it, and writes nothing.
    bad = call(gw, key, "POST", "/v4/clients/batch", '[{"email": "other@synerise.com"}, {"email": ""}]')
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "[1].email"
    assert call(gw, key, "GET", "/v4/clients/by-email/other@synerise.com").status_code == 404


def test_002_101_list(gw: Gateway) -> None:
    key = make_key(gw)
    call(gw, key, "POST", "/v4/clients/batch", BATCH_002_159)
    response = gw.client.get(f"{P}/crm/v1/list", headers={"Authorization": f"Bearer {key}"})  # 002:101-103
    assert response.status_code == 200, response.text
    assert sorted(p["email"] or p["customId"] for p in response.json()) == [
        "newClientCustomId", "newclient@synerise.com", "sampleclient@synerise.com"]


def test_phone_identifies_and_agreements_sms_is_consent(gw: Gateway) -> None:
    key = make_key(gw)
    phone = "+14155550177"
    assert call(gw, key, "POST", "/v4/clients", '{"phone": "+14155550177", "firstName": "Ada"}').status_code == 202
    assert call(gw, key, "GET", "/v4/clients/by-phone/+14155550177").json()["agreements"]["sms"] is False
    gw.text("JOIN", from_=phone, to=ACME)
    gw.text("YES", from_=phone, to=ACME)
    assert call(gw, key, "GET", "/v4/clients/by-phone/+14155550177").json()["agreements"]["sms"] is True
    # Consent needs proof: agreements.sms true is refused; false opts the phone out of every program.
    refused = call(gw, key, "POST", "/v4/clients/by-phone/+14155550177", '{"agreements": {"sms": true}}')
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "agreements.sms"
    out = call(gw, key, "POST", "/v4/clients/by-phone/+14155550177", '{"agreements": {"sms": false}}')
    assert out.status_code == 202
    assert set(gw.subs(phone).values()) == {"unsubscribed"}
    assert call(gw, key, "GET", "/v4/clients/by-phone/+14155550177").json()["agreements"]["sms"] is False


def test_the_key_is_a_bearer_token(gw: Gateway) -> None:
    key = make_key(gw)
    assert gw.client.post(f"{P}/v4/clients", content=CREATE_002_28, headers={**HEADERS, "x-api-key": key}
                          ).status_code == 401
    assert gw.client.post(f"{P}/v4/clients", content=CREATE_002_28, headers={
        **HEADERS, "Authorization": "Bearer eyJh...8MltQ"}).status_code == 401
    assert call(gw, key, "POST", "/v4/clients", CREATE_002_28).status_code == 202
