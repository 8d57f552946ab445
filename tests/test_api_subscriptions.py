"""The consent side of the brand API through HTTP on both databases: opt-in with proof, opt-out,
contacts, programs, messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.auth import create_key
from tests.conftest import Gateway

PHONE = "+14155550123"
PROOF = {"termsUrl": "https://acme.example/sms-terms", "termsVersion": "2026-10", "sourceText": "Text me deals"}


def make_key(gateway: Gateway, brand: str) -> str:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="t"))
    return str(key)


@pytest.fixture
def api(gateway: Gateway) -> Any:
    key = make_key(gateway, "acme")

    class Api:
        def post(self, path: str, body: Any, key_: str | None = None) -> Any:
            return gateway.client.post(path, json=body, headers={"x-api-key": key_ or key})

        def put(self, path: str, body: Any) -> Any:
            return gateway.client.put(path, json=body, headers={"x-api-key": key})

        def get(self, path: str, key_: str | None = None, **params: Any) -> Any:
            return gateway.client.get(path, params=params, headers={"x-api-key": key_ or key})

    return Api()


# Zones around the world; one of them is always in its afternoon.
_ZONES = ("America/Los_Angeles", "America/New_York", "Europe/Paris", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Auckland")


def in_daytime(gateway: Gateway, api: Any, phone: str = PHONE) -> None:
    """Give `phone` a profile in a time zone where it is now afternoon: an API prompt then goes at once.

    (API-triggered prompts wait for the recipient's sending window, app.holds; these tests are
    about what happens once the prompt is sent, whatever the hour the suite runs at.)
    """
    now = gateway.clock()
    zone = next(z for z in _ZONES if 12 <= now.astimezone(ZoneInfo(z)).hour < 18)
    assert api.post("/v1/profiles", {"phoneNumber": phone, "timezone": zone}).status_code in (200, 201)


def opt_in_body(**changes: Any) -> dict[str, Any]:
    body = {"phoneNumber": PHONE, "program": "deals", "consentSource": "web-checkout",
            "consentedAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(), "consentProof": PROOF}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_opt_in_with_proof_subscribes_and_welcomes(gateway: Gateway, api: Any) -> None:
    response = api.post("/v1/subscriptions/opt-in", opt_in_body())
    assert response.status_code == 200, response.text
    sub = response.json()
    assert {k: sub[k] for k in ("program", "phoneNumber", "status", "consentSource", "profile")} == {
        "program": "deals", "phoneNumber": PHONE, "status": "subscribed", "consentSource": "web-checkout",
        "profile": None}
    assert sub["subscribedAt"] and sub["consentedAt"] and sub["unsubscribedAt"] is None
    gateway.drain()
    assert gateway.replies(PHONE) == ["ACME Deals: you're in! Up to 4 msgs/month. Reply STOP to cancel."]
    [event] = api.get("/v1/consent-events", phoneNumber=PHONE).json()["items"]
    assert (event["event"], event["source"], event["toStatus"]) == ("api_opt_in", "api", "subscribed")
    assert event["consentProof"] == PROOF and event["apiKeyId"] is not None


def test_opt_in_with_double_opt_in_prompts_and_waits_for_yes(gateway: Gateway, api: Any) -> None:
    in_daytime(gateway, api)
    assert api.post("/v1/subscriptions/opt-in", opt_in_body(doubleOptIn=True)).json()["status"] == "pendingDOI"
    gateway.drain()
    assert gateway.replies(PHONE)[-1].startswith("ACME Deals: reply YES")
    gateway.text("YES", from_=PHONE)
    assert gateway.subs(PHONE) == {"deals": "subscribed"}


def test_repeating_an_opt_in_records_proof_but_texts_once(gateway: Gateway, api: Any) -> None:
    api.post("/v1/subscriptions/opt-in", opt_in_body())
    api.post("/v1/subscriptions/opt-in", opt_in_body(consentSource="store"))
    gateway.drain()
    assert len(gateway.replies(PHONE)) == 1
    events = api.get("/v1/consent-events", phoneNumber=PHONE).json()["items"]
    assert [e["consentSource"] for e in events] == ["web-checkout", "store"]


def test_program_may_be_left_out_when_the_brand_has_one(gateway: Gateway) -> None:
    key = make_key(gateway, "bistro")
    body = opt_in_body(program=None, phoneNumber="+33612345678")
    response = gateway.client.post("/v1/subscriptions/opt-in", json=body, headers={"x-api-key": key})
    assert response.status_code == 200 and response.json()["program"] == "menu"


def test_country_less_numbers_use_the_brands_region(api: Any) -> None:
    assert api.post("/v1/subscriptions/opt-in", opt_in_body(phoneNumber="(415) 555-0123")).json()["phoneNumber"] == PHONE


FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()
BAD_OPT_INS = [
    pytest.param({"program": None}, "program", id="program-required-with-several"),
    pytest.param({"program": "nope"}, "program", id="unknown-program"),
    pytest.param({"phoneNumber": "banana"}, "phoneNumber", id="bad-phone"),
    pytest.param({"phoneNumber": ""}, "phoneNumber", id="empty-phone"),
    pytest.param({"phoneNumber": "+442071838750"}, "phoneNumber", id="country-not-served"),
    pytest.param({"consentSource": ""}, "consentSource", id="empty-source"),
    pytest.param({"consentedAt": "yesterday"}, "consentedAt", id="bad-time"),
    pytest.param({"consentedAt": "2026-01-01T10:00:00"}, "consentedAt", id="naive-time"),
    pytest.param({"consentedAt": FUTURE}, "consentedAt", id="future-time"),
    pytest.param({"consentProof": {}}, "consentProof", id="empty-proof"),
    pytest.param({"consentProof": "yes"}, "consentProof", id="proof-not-object"),
    pytest.param({"doubleOptIn": "maybe"}, "doubleOptIn", id="bad-bool"),
    pytest.param({"color": "red"}, "color", id="unknown-field"),
    pytest.param({"profileId": "prof_nope"}, "profileId", id="unknown-profile"),
]


@pytest.mark.parametrize("changes,field", BAD_OPT_INS)
def test_bad_opt_ins_are_422_naming_the_field(gateway: Gateway, api: Any, changes: dict[str, Any], field: str) -> None:
    body = opt_in_body()
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    response = api.post("/v1/subscriptions/opt-in", body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert any(e["field"] == field for e in response.json()["errors"]), response.json()
    assert gateway.subs(PHONE) == {}


@pytest.mark.parametrize("body", [b"{", b"[]", b"null", b'"x"'], ids=["broken", "array", "null", "string"])
def test_non_object_bodies_are_4xx(gateway: Gateway, api: Any, body: bytes) -> None:
    key = make_key(gateway, "acme")
    response = gateway.client.post("/v1/subscriptions/opt-in", content=body,
                                   headers={"x-api-key": key, "Content-Type": "application/json"})
    assert response.status_code in (400, 422)


def test_huge_body_is_413(gateway: Gateway, api: Any) -> None:
    response = api.post("/v1/subscriptions/opt-in", opt_in_body(consentProof={"sourceText": "x" * (2 * 1024 * 1024)}))
    assert response.status_code == 413


def test_opt_out_of_one_program_with_notify(gateway: Gateway, api: Any) -> None:
    gateway.text("JOIN", from_=PHONE)
    gateway.drain()
    gateway.text("YES", from_=PHONE)
    gateway.drain()
    response = api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE, "program": "deals"})
    assert response.status_code == 200
    assert [i["status"] for i in response.json()["items"]] == ["unsubscribed"]
    gateway.drain()
    assert gateway.replies(PHONE)[-1].startswith("ACME Deals: you're unsubscribed")


def test_opt_out_of_every_program_without_notify(gateway: Gateway, api: Any) -> None:
    gateway.text("NEWS", from_=PHONE)
    gateway.drain()
    sent = len(gateway.replies(PHONE))
    response = api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE, "notify": False})
    assert sorted(i["program"] for i in response.json()["items"]) == ["deals", "news"]
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    gateway.drain()
    assert len(gateway.replies(PHONE)) == sent
    assert {e["source"] for e in api.get("/v1/consent-events", phoneNumber=PHONE).json()["items"]} == {"sms", "api"}


def test_opt_out_of_the_whole_brand_sends_the_brand_level_stop(gateway: Gateway, api: Any) -> None:
    gateway.text("JOIN", from_=PHONE)
    gateway.drain()
    gateway.text("YES", from_=PHONE)
    gateway.drain()
    api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE})
    gateway.drain()
    assert gateway.replies(PHONE)[-1].startswith("ACME: you are unsubscribed from all ACME texts")


def test_opt_out_cancels_a_queued_prompt(gateway: Gateway, api: Any) -> None:
    in_daytime(gateway, api)
    gateway.fake.fail_http(503, times=None)
    api.post("/v1/subscriptions/opt-in", opt_in_body(doubleOptIn=True))
    gateway.fake.wait_for_requests(1)
    gateway.fake.clear_rules()
    api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE, "program": "deals", "notify": False})
    gateway.drain()
    assert gateway.replies(PHONE) == []


def test_resubscribing_after_an_opt_out_needs_doi_again_by_contacts(gateway: Gateway, api: Any) -> None:
    in_daytime(gateway, api)
    api.post("/v1/subscriptions/opt-in", opt_in_body())
    api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE, "program": "deals", "notify": False})
    later = (gateway.clock() + timedelta(seconds=1)).isoformat()
    view = api.put(f"/v1/contacts/{PHONE}", {"channels": {"sms": {"programs": {"deals": {
        "subscribeStatus": "subscribed", "consentedAt": later}}}}})
    assert view.status_code == 200, view.text
    assert view.json()["channels"]["sms"]["programs"]["deals"]["subscribeStatus"] == "pendingDOI"
    gateway.drain()
    assert gateway.replies(PHONE)[-1].startswith("ACME Deals: reply YES")


def test_contact_view_lists_every_program(gateway: Gateway, api: Any) -> None:
    gateway.text("JOIN", from_=PHONE)
    gateway.drain()
    gateway.text("YES", from_=PHONE)
    gateway.drain()
    view = api.get("/v1/contacts/4155550123").json()
    sms = view["channels"]["sms"]
    assert sms["address"] == PHONE
    assert sms["programs"]["deals"]["subscribeStatus"] == "subscribed"
    assert sms["programs"]["deals"]["keyword"] == "YES"
    assert sms["programs"]["deals"]["subscribedAt"].endswith("Z")
    assert sms["programs"]["news"] == {"keyword": None, "subscribedAt": None, "unsubscribedAt": None,
                                       "subscribeStatus": "none"}


def test_contact_put_unsubscribe_opts_out(gateway: Gateway, api: Any) -> None:
    api.post("/v1/subscriptions/opt-in", opt_in_body())
    body = {"channels": {"sms": {"programs": {"deals": {"subscribeStatus": "unsubscribed"}}}}}
    programs = api.put(f"/v1/contacts/{PHONE}", body).json()["channels"]["sms"]["programs"]
    assert programs["deals"]["subscribeStatus"] == "unsubscribed" and programs["deals"]["unsubscribedAt"]


@pytest.mark.parametrize("body,field", [
    ({"channels": {"sms": {"programs": {"nope": {"subscribeStatus": "subscribed"}}}}}, "channels.sms.programs.nope"),
    ({"channels": {"sms": {"programs": {"deals": {"subscribeStatus": "maybe"}}}}},
     "channels.sms.programs.deals.subscribeStatus"),
    ({"channels": {"sms": {"programs": {}}}}, "channels.sms.programs"),
    ({"channels": {}}, "channels.sms"),
], ids=["unknown-program", "bad-status", "no-programs", "no-sms"])
def test_bad_contact_puts_are_422(api: Any, body: dict[str, Any], field: str) -> None:
    response = api.put(f"/v1/contacts/{PHONE}", body)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


def test_contact_with_a_malformed_number_is_422(api: Any) -> None:
    assert api.get("/v1/contacts/banana").status_code == 422


def test_programs_as_configured(api: Any) -> None:
    items = api.get("/v1/programs").json()["items"]
    assert [p["key"] for p in items] == ["deals", "news"]
    deals = items[0]
    assert deals["doubleOptIn"] is True and deals["doiExpiresAfterSeconds"] == 48 * 3600
    assert "JOIN" in deals["keywords"]["join"] and "STOP" in deals["keywords"]["stop"]


def test_messages_list_both_directions_with_paging(gateway: Gateway, api: Any) -> None:
    for text in ("JOIN", "YES", "hello"):
        gateway.text(text, from_=PHONE)
    gateway.text("JOIN", from_="+14155550999")
    gateway.drain()
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"phoneNumber": PHONE, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/messages", **params).json()
        seen += page["items"]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert [(m["direction"], m["body"][:4]) for m in seen] == [
        ("inbound", "JOIN"), ("outbound", "ACME"), ("inbound", "YES"), ("outbound", "ACME"), ("inbound", "hell")]
    assert {m["phoneNumber"] for m in seen} == {PHONE}
    assert seen[1]["status"] in ("queued", "sent", "delivered") and seen[1]["providerMessageId"].startswith("SM")


def test_another_brand_cannot_touch_these_subscriptions(gateway: Gateway, api: Any) -> None:
    api.post("/v1/subscriptions/opt-in", opt_in_body())
    bistro = make_key(gateway, "bistro")
    response = api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE}, key_=bistro)
    assert response.status_code == 200
    assert gateway.subs(PHONE)["deals"] == "subscribed"
    assert api.get("/v1/messages", key_=bistro).json()["items"] == []


def test_opt_in_attaches_the_profile_with_that_phone(gateway: Gateway, api: Any) -> None:
    profile = api.post("/v1/profiles", {"externalId": "crm-9", "phoneNumber": PHONE}).json()
    sub = api.post("/v1/subscriptions/opt-in", opt_in_body()).json()
    assert sub["profile"] == {"id": profile["id"], "externalId": "crm-9"}
    listed = api.get("/v1/subscriptions", phoneNumber=PHONE).json()["items"]
    assert listed[0]["profile"] == {"id": profile["id"], "externalId": "crm-9"}


def _stop_by_sms(gateway: Gateway) -> None:
    for text in ("JOIN", "YES", "Stop please"):
        assert gateway.text(text, from_=PHONE).status_code == 200
        gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"


def test_after_the_phones_own_stop_only_the_phone_reopens(gateway: Gateway, api: Any) -> None:
    """However new the consent, no API path subscribes or prompts a phone that texted STOP: 409 naming the opt-out."""
    _stop_by_sms(gateway)
    sent = len(gateway.replies(PHONE))
    events = gateway.query("SELECT count(*) FROM consent_events")[0][0]
    fresh = (gateway.clock() + timedelta(seconds=1)).isoformat()
    for consented_at in ("2026-01-01T00:00:00Z", fresh):
        for double in (False, True):
            refused = api.post("/v1/subscriptions/opt-in", opt_in_body(consentedAt=consented_at, doubleOptIn=double))
            assert refused.status_code == 409, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["errors"][0]["field"] == "phoneNumber"
            assert problem["optOut"]["source"] == "sms" and problem["optOut"]["scope"]["program"] == "deals"
            assert "only the phone" in problem["detail"] and problem["optOut"]["at"] in problem["detail"]
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    assert len(gateway.replies(PHONE)) == sent
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == events


def test_a_future_dated_consent_replayed_after_a_stop_is_refused(gateway: Gateway, api: Any) -> None:
    """A CRM stamps consent 4 minutes ahead (allowed), the phone texts STOP, the CRM sends the same opt-in again."""
    body = opt_in_body(consentedAt=(datetime.now(UTC) + timedelta(minutes=4)).isoformat())
    assert api.post("/v1/subscriptions/opt-in", body).status_code == 200
    gateway.drain()
    assert gateway.text("STOP", from_=PHONE).status_code == 200
    gateway.drain()
    sent = len(gateway.replies(PHONE))
    assert api.post("/v1/subscriptions/opt-in", body).status_code == 409
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    assert len(gateway.replies(PHONE)) == sent  # no "you're in!" after the STOP


def test_the_phone_reopens_by_joining_and_then_the_api_may_opt_it_in(gateway: Gateway, api: Any) -> None:
    _stop_by_sms(gateway)
    assert gateway.text("JOIN", from_=PHONE).status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "pendingDOI"
    fresh = api.post("/v1/subscriptions/opt-in", opt_in_body(consentedAt=gateway.clock().isoformat()))
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["status"] == "subscribed"


def test_consent_newer_than_a_brand_opt_out_resubscribes_and_older_is_409(gateway: Gateway, api: Any) -> None:
    """An opt-out the brand made (API) may be superseded, by consent given after it."""
    assert api.post("/v1/subscriptions/opt-in", opt_in_body()).status_code == 200
    assert api.post("/v1/subscriptions/opt-out", {"phoneNumber": PHONE, "program": "deals"}).status_code == 200
    stale = api.post("/v1/subscriptions/opt-in", opt_in_body(consentedAt="2026-01-01T00:00:00Z"))
    assert stale.status_code == 409 and stale.json()["errors"][0]["field"] == "consentedAt"
    assert "opt-out at" in stale.json()["detail"]
    fresh = api.post("/v1/subscriptions/opt-in", opt_in_body(consentedAt=(gateway.clock() + timedelta(seconds=1))
                                                             .isoformat()))
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["status"] == "subscribed"


def test_contact_put_after_a_stop_is_refused(gateway: Gateway, api: Any) -> None:
    _stop_by_sms(gateway)
    sent = len(gateway.replies(PHONE))
    for program in ({"subscribeStatus": "subscribed"},
                    {"subscribeStatus": "subscribed", "consentedAt": gateway.clock().isoformat()}):
        put = api.put(f"/v1/contacts/{PHONE}", {"channels": {"sms": {"programs": {"deals": program}}}})
        assert put.status_code == 409, put.text
        assert put.json()["errors"][0]["field"] == "channels.sms.programs.deals"
        assert put.json()["optOut"]["source"] == "sms"
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    assert len(gateway.replies(PHONE)) == sent


def test_consent_in_the_future_is_422(gateway: Gateway, api: Any) -> None:
    future = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    assert api.post("/v1/subscriptions/opt-in", opt_in_body(consentedAt=future)).status_code == 422
    put = api.put(f"/v1/contacts/{PHONE}", {"channels": {"sms": {"programs": {"deals": {
        "subscribeStatus": "subscribed", "consentedAt": future}}}}})
    assert put.status_code == 422


def test_stale_consent_races_a_stop_and_never_wins(gateway: Gateway, api: Any) -> None:
    """Opt-ins with consent from before the STOP, posted while the STOP is applied: none re-subscribes."""
    from concurrent.futures import ThreadPoolExecutor

    for text in ("JOIN", "YES"):
        gateway.text(text, from_=PHONE)
        gateway.drain()
    consent = (gateway.clock() - timedelta(seconds=30)).isoformat()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(api.post, "/v1/subscriptions/opt-in", opt_in_body(consentedAt=consent))
                   for _ in range(6)]
        stop = pool.submit(gateway.text, "STOP", from_=PHONE)
        futures += [pool.submit(api.post, "/v1/subscriptions/opt-in", opt_in_body(consentedAt=consent))
                    for _ in range(6)]
        assert stop.result().status_code == 200
        codes = [f.result().status_code for f in futures]
    assert set(codes) <= {200, 409}
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    stop_event = gateway.query("SELECT max(id) FROM consent_events WHERE event = 'stop'")[0][0]
    later = gateway.query("SELECT count(*) FROM consent_events WHERE id > :i AND to_status <> 'unsubscribed'",
                          i=stop_event)[0][0]
    assert later == 0
