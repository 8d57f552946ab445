"""Each seed API's own documented example, posted as the seed shows it (camelCase where the seed
writes snake_case), works against optline on both databases.

Where a seed's page names things optline cannot know (its program names, its sender), the
values are ours and the comment says so; everything else is the seed's example as published.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.auth import create_key
from tests.conftest import ACME, Gateway


def make_key(gateway: Gateway, brand: str) -> str:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="seed"))
    return str(key)


def call(gateway: Gateway, key: str, method: str, path: str, body: Any = None) -> Any:
    return gateway.client.request(method, path, json=body, headers={"x-api-key": key})


def test_noticia_sync_your_crm(gateway: Gateway) -> None:
    # https://docs.sms.noticia.ai/guides/sync-your-crm/ : upsert the profile by externalId, then
    # opt in naming it by that externalId as `profileId`. Noticia's example is French
    # (+33612345678) and names no program: bistro is French and has one program.
    key = make_key(gateway, "bistro")
    profile = {"externalId": "crm-customer-4815", "phoneNumber": "+33612345678", "firstName": "Camille",
               "lastName": "Durand", "attributes": {"tier": "gold", "favorite_store": "lyon-part-dieu"}}
    created = call(gateway, key, "POST", "/v1/profiles", profile)
    assert created.status_code == 201, created.text
    opt_in = {"phoneNumber": "+33612345678", "profileId": "crm-customer-4815", "consentSource": "LOYALTY_PROGRAM",
              "consentedAt": "2026-05-28T10:00:00.000Z",
              "consentProof": {"termsUrl": "https://brand.example/sms-terms", "termsVersion": "v2.3",
                               "sourceText": "Loyalty signup, Lyon Part-Dieu"}}
    response = call(gateway, key, "POST", "/v1/subscriptions/opt-in", opt_in)
    assert response.status_code == 200, response.text
    sub = response.json()
    assert (sub["phoneNumber"], sub["status"], sub["consentSource"]) == ("+33612345678", "subscribed", "LOYALTY_PROGRAM")
    assert sub["profile"] == {"id": created.json()["id"], "externalId": "crm-customer-4815"}
    # Its prof_ id still works, and a profile that does not exist is still refused by name.
    by_id = call(gateway, key, "POST", "/v1/subscriptions/opt-in", {**opt_in, "profileId": created.json()["id"]})
    assert by_id.status_code == 200 and by_id.json()["profile"]["externalId"] == "crm-customer-4815"
    missing = call(gateway, key, "POST", "/v1/subscriptions/opt-in", {**opt_in, "profileId": "crm-customer-0000"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "profileId"
    # Another brand's externalId is not this brand's profile.
    other = call(gateway, make_key(gateway, "acme"), "POST", "/v1/subscriptions/opt-in",
                 {**opt_in, "program": "deals"})
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "profileId"


@pytest.mark.parametrize("envelope", ["bare", "items"], ids=["bare-array", "items-object"])
def test_synerise_batch_is_a_bare_array_or_items(gateway: Gateway, envelope: str) -> None:
    # Synerise's batch endpoint takes a bare JSON array of profiles (summarised in our contract;
    # its batch page was not in the searchable corpus). Each item is Synerise's own create
    # example, https://help.synerise.com/developers/api/clients/profiles/ : {"email": ...}.
    key = make_key(gateway, "acme")
    items = [{"email": "sampleclient@synerise.com"}, {"email": "second@synerise.com", "firstName": "Ada"}]
    body: Any = items if envelope == "bare" else {"items": items}
    response = call(gateway, key, "POST", "/v1/profiles/batch", body)
    assert response.status_code == 200, response.text
    assert [(r["index"], r["status"]) for r in response.json()["items"]] == [(0, 201), (1, 201)]
    again = call(gateway, key, "POST", "/v1/profiles/batch", body)
    assert [r["status"] for r in again.json()["items"]] == [200, 200]


@pytest.mark.parametrize("body", [[], "profiles", 3], ids=["empty-array", "string", "number"])
def test_a_batch_that_is_neither_is_422(gateway: Gateway, body: Any) -> None:
    response = call(gateway, make_key(gateway, "acme"), "POST", "/v1/profiles/batch", body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_cordial_sms_contact_object(gateway: Gateway) -> None:
    # https://support.cordial.com/hc/en-us/articles/360047492791-SMS-contact-object-management :
    # the SMS object's address is "12225555151" (digits with the country code, possible but not
    # a valid NANP number). "cordialthreads" is Cordial's program; ours is "deals".
    key = make_key(gateway, "acme")
    put = {"channels": {"sms": {"address": "12225555151",
                                "programs": {"deals": {"subscribeStatus": "subscribed"}}}}}
    response = call(gateway, key, "PUT", "/v1/contacts/12225555151", put)
    assert response.status_code == 200, response.text
    sms = response.json()["channels"]["sms"]
    assert sms["address"] == "+12225555151"
    assert sms["programs"]["deals"]["subscribeStatus"] == "pendingDOI"  # Cordial: an API subscribe starts DOI
    assert call(gateway, key, "GET", "/v1/contacts/12225555151").json()["channels"]["sms"] == sms
    assert call(gateway, key, "GET", "/v1/contacts/+12225555151").json()["channels"]["sms"] == sms
    profile = call(gateway, key, "POST", "/v1/profiles", {"phoneNumber": "12225555151"})
    assert profile.status_code == 201 and profile.json()["phoneNumber"] == "+12225555151"
    wrong = call(gateway, key, "PUT", "/v1/contacts/12225555151",
                 {"channels": {"sms": {"address": "12225555152", "programs": {"deals": {"subscribeStatus": "subscribed"}}}}})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "channels.sms.address"


def test_sonar_add_update_customer(gateway: Gateway) -> None:
    # https://docs.sendsonar.com/reference/addupdate-customer : the phone number is the upsert
    # key, 201 on create and 200 on update, and the update changes only the fields sent. The
    # page's email addresses are hidden by its host's e-mail protection; these stand in.
    # Its picture_url and properties are not optline fields (unknown fields are refused).
    key = make_key(gateway, "acme")
    first = {"phoneNumber": "+13105551234", "email": "matthew@example.com", "firstName": "Matthew",
             "lastName": "Berman"}
    created = call(gateway, key, "POST", "/v1/profiles", first)
    assert created.status_code == 201, created.text
    update = {"phoneNumber": "+13105551234", "email": "john@example.com", "firstName": "John"}
    updated = call(gateway, key, "POST", "/v1/profiles", update)
    assert updated.status_code == 200, updated.text
    got = updated.json()
    assert (got["id"], got["email"], got["firstName"], got["lastName"]) == (
        created.json()["id"], "john@example.com", "John", "Berman")


def test_twilio_advanced_opt_out_stop(gateway: Gateway) -> None:
    # https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out : with Advanced Opt-Out
    # on, Twilio adds OptOutType to the inbound webhook and has already answered the STOP.
    phone = "+14155550188"
    gateway.text("JOIN", from_=phone)
    gateway.text("YES", from_=phone)
    gateway.drain()
    sent = len(gateway.replies(phone))
    response = gateway.text("Stop", from_=phone, OptOutType="STOP")
    assert response.status_code == 200, response.text
    gateway.drain()
    assert gateway.subs(phone)["deals"] == "unsubscribed"
    assert len(gateway.replies(phone)) == sent  # Twilio replied; optline sends nothing of its own


@pytest.mark.parametrize("number", ["+12225555151", "+15005550199", "+33100000000"],
                         ids=["nanp-unassigned-area", "twilio-test-range", "fr-unassigned"])
def test_any_number_a_webhook_stored_reads_back_through_the_api(gateway: Gateway, number: str) -> None:
    # One rule (a possible number) for webhooks and the API: what a carrier delivered, a brand can read.
    assert gateway.text("JOIN", from_=number, to=ACME).status_code == 200
    key = make_key(gateway, "acme")
    messages = call(gateway, key, "GET", f"/v1/messages?phoneNumber={number.replace('+', '%2B')}")
    assert messages.status_code == 200, messages.text
    assert [m["phoneNumber"] for m in messages.json()["items"] if m["direction"] == "inbound"] == [number]
    contact = call(gateway, key, "GET", f"/v1/contacts/{number}")
    assert contact.status_code == 200, contact.text
    assert contact.json()["channels"]["sms"]["programs"]["deals"]["subscribeStatus"] in ("pendingDOI", "none")


def test_programs_list_counts_per_status(gateway: Gateway) -> None:
    key = make_key(gateway, "acme")
    for n, texts in enumerate((["JOIN"], ["JOIN", "YES"], ["JOIN", "YES", "STOP DEALS"], ["NEWS"])):
        for text in texts:
            gateway.text(text, from_=f"+1415555020{n}")
    items = {p["key"]: p["counts"] for p in call(gateway, key, "GET", "/v1/programs").json()["items"]}
    assert items["deals"] == {"none": 0, "pendingDOI": 1, "subscribed": 1, "unsubscribed": 1}
    assert items["news"]["pendingDOI"] == 1 and items["news"]["subscribed"] == 0
