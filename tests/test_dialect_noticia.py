"""Noticia's seeds (000 Sync your CRM, 001 Quickstart) posted verbatim to /compat/noticia/v1 on both engines.

Each request body below is the seed's, character for character, cited by file:line; only the
key differs (`ntca_REPLACE_ME` is a placeholder: an optline key goes in `x-api-key`). Noticia's
opt-in names no program: acme's `default_program` (deals) receives it.
"""

from __future__ import annotations

import json
import re
from typing import Any


from tests.conftest import Gateway
from tests.dialect_support import gw, make_key  # noqa: F401 - the fixture

P = "/compat/noticia/v1"
MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# 000:14-20, verbatim.
UPSERT_000 = """{
"externalId": "crm-customer-4815",
"phoneNumber": "+33612345678",
"firstName": "Camille",
"lastName": "Durand",
"attributes": { "tier": "gold", "favorite_store": "lyon-part-dieu" }
}"""
# 000:29-39, verbatim.
OPT_IN_000 = """{
"phoneNumber": "+33612345678",
"profileId": "crm-customer-4815",
"consentSource": "LOYALTY_PROGRAM",
"consentedAt": "2026-05-28T10:00:00.000Z",
"consentProof": {
"termsUrl": "https://brand.example/sms-terms",
"termsVersion": "v2.3",
"sourceText": "Loyalty signup, Lyon Part-Dieu"
}
}"""
# 001:7, the curl body, verbatim.
UPSERT_001 = """{ "externalId": "crm-customer-4815", "phoneNumber": "+33612345678", "firstName": "Camille", "lastName": "Durand" }"""


def post(gateway: Gateway, key: str, path: str, raw: str, **headers: str) -> Any:
    return gateway.client.post(P + path, content=raw.encode(), headers={
        "x-api-key": key, "Content-Type": "application/json", **headers})


def test_000_sync_your_crm_upsert_then_opt_in(gw: Gateway) -> None:
    key = make_key(gw)
    created = post(gw, key, "/profiles", UPSERT_000)
    assert created.status_code == 201, created.text  # 001:10 "201 Created"
    profile = created.json()
    assert profile["id"].startswith("prof_")
    assert {k: profile[k] for k in ("externalId", "phoneNumber", "firstName", "lastName", "attributes")} == json.loads(
        UPSERT_000)
    # 000:7 "safe to repeat, never creates a duplicate"; 001:10 "200 OK when the profile already existed".
    again = post(gw, key, "/profiles", UPSERT_000)
    assert again.status_code == 200 and again.json()["id"] == profile["id"]
    # 000:22, 001:15: a profile with a phone number is not a subscriber until consent is recorded.
    assert gw.subs("+33612345678") == {}
    response = post(gw, key, "/subscriptions/opt-in", OPT_IN_000)
    assert response.status_code == 200, response.text
    # 000:43-53, every field.
    assert response.json() == {
        "phoneNumber": "+33612345678", "status": "SUBSCRIBED", "consentSource": "LOYALTY_PROGRAM",
        "consentedAt": "2026-05-28T10:00:00.000Z", "unsubscribedAt": None,
        "profile": {"id": profile["id"], "externalId": "crm-customer-4815"},
    }
    assert gw.subs("+33612345678") == {"deals": "subscribed"}  # the default program took it (000:25-39 names none)


def test_001_quickstart_create_then_read_back(gw: Gateway) -> None:
    key = make_key(gw)
    created = post(gw, key, "/profiles", UPSERT_001)
    assert created.status_code == 201, created.text
    body = created.json()
    # 001:11: id, externalId, phoneNumber, firstName, lastName, createdAt, updatedAt (milliseconds, Z).
    assert body["id"].startswith("prof_")
    assert (body["externalId"], body["phoneNumber"], body["firstName"], body["lastName"]) == (
        "crm-customer-4815", "+33612345678", "Camille", "Durand")
    assert MILLIS.fullmatch(body["createdAt"]) and MILLIS.fullmatch(body["updatedAt"])
    # 001:13-14: read back by externalId "or its prof_ id": the same profile.
    by_external = gw.client.get(f"{P}/profiles/crm-customer-4815", headers={"x-api-key": key})
    by_id = gw.client.get(f"{P}/profiles/{body['id']}", headers={"x-api-key": key})
    assert by_external.status_code == by_id.status_code == 200
    assert by_external.json() == by_id.json() == body
    # 001:14 "Calling the create endpoint again with the same externalId updates it".
    assert post(gw, key, "/profiles", UPSERT_001).json()["id"] == body["id"]


def test_001_external_id_is_the_only_required_field(gw: Gateway) -> None:
    # 001:6 "The only required field is externalId".
    key = make_key(gw)
    missing = post(gw, key, "/profiles", '{"phoneNumber": "+33612345678"}')
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "externalId"
    assert post(gw, key, "/profiles", '{"externalId": "crm-only"}').status_code == 201


def test_000_opt_out_and_stale_consent(gw: Gateway) -> None:
    key = make_key(gw)
    post(gw, key, "/profiles", UPSERT_000)
    assert post(gw, key, "/subscriptions/opt-in", OPT_IN_000).status_code == 200
    # 000:56 "Withdrawn consent: call POST /v1/subscriptions/opt-out" (its body is not shown: the opt-in's phone).
    out = post(gw, key, "/subscriptions/opt-out", '{"phoneNumber": "+33612345678"}')
    assert out.status_code == 200, out.text
    assert out.json()["status"] == "UNSUBSCRIBED" and MILLIS.fullmatch(out.json()["unsubscribedAt"])
    assert set(gw.subs("+33612345678").values()) == {"unsubscribed"}  # no program named: every program
    # The same consent again is older than the opt-out: 409, nothing changes (a dialect is no way around it).
    stale = post(gw, key, "/subscriptions/opt-in", OPT_IN_000)
    assert stale.status_code == 409 and stale.json()["errors"][0]["field"] == "consentedAt"
    assert gw.subs("+33612345678")["deals"] == "unsubscribed"


def test_000_a_stop_reply_does_the_opt_out(gw: Gateway) -> None:
    # 000:56 "A STOP reply does this automatically": after it, the old consent is refused.
    key = make_key(gw)
    assert post(gw, key, "/subscriptions/opt-in", OPT_IN_000.replace("crm-customer-4815", "")
                .replace('"profileId": "",\n', "")).status_code == 200
    assert gw.text("STOP", from_="+33612345678", to="+15005550006").status_code == 200
    assert gw.subs("+33612345678")["deals"] == "unsubscribed"
    assert post(gw, key, "/subscriptions/opt-in", OPT_IN_000.replace('"profileId": "crm-customer-4815",\n', "")
                ).status_code == 409


def test_000_idempotency_key_replays_the_write(gw: Gateway) -> None:
    # 000:60 "Wrap each write with an Idempotency-Key so a network retry never creates a duplicate".
    key = make_key(gw)
    first = post(gw, key, "/profiles", UPSERT_000, **{"Idempotency-Key": "k-1"})
    second = post(gw, key, "/profiles", UPSERT_000, **{"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 201
    assert second.headers.get("idempotent-replayed") == "true" and second.json() == first.json()


def test_the_key_goes_in_x_api_key(gw: Gateway) -> None:
    # 000:12, 001:7: -H "x-api-key: ntca_REPLACE_ME".
    key = make_key(gw)
    assert gw.client.post(f"{P}/profiles", content=UPSERT_001, headers={"Content-Type": "application/json"}
                          ).status_code == 401
    assert gw.client.post(f"{P}/profiles", content=UPSERT_001, headers={
        "Content-Type": "application/json", "x-api-key": "ntca_REPLACE_ME"}).status_code == 401
    assert post(gw, key, "/profiles", UPSERT_001).status_code == 201


def test_a_brand_with_several_programs_and_no_default_needs_the_program(gateway: Gateway) -> None:
    # The repository's keywords.yaml sets no default_program for acme (deals + news).
    key = make_key(gateway)
    response = post(gateway, key, "/subscriptions/opt-in", OPT_IN_000.replace('"profileId": "crm-customer-4815",\n', ""))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "program"


def test_after_the_phones_own_stop_even_newer_consent_is_409(gw: Gateway) -> None:
    key = make_key(gw)
    body = OPT_IN_000.replace('"profileId": "crm-customer-4815",\n', "")
    assert post(gw, key, "/subscriptions/opt-in", body).status_code == 200
    assert gw.text("STOP", from_="+33612345678", to="+15005550006").status_code == 200
    gw.clock.advance(seconds=5)
    # Consent given after the STOP (by the gateway's clock): newer, and still refused.
    fresh = body.replace("2026-05-28T10:00:00.000Z", gw.clock().strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    response = post(gw, key, "/subscriptions/opt-in", fresh)
    assert response.status_code == 409, response.text


def test_the_native_opt_in_also_goes_to_the_default_program(gw: Gateway) -> None:
    key = make_key(gw)
    body = json.loads(OPT_IN_000.replace('"profileId": "crm-customer-4815",\n', ""))
    response = gw.client.post("/v1/subscriptions/opt-in", json=body, headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    assert (response.json()["program"], response.json()["status"]) == ("deals", "subscribed")
