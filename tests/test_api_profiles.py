"""Profiles through /v1 (SPEC §7): upsert and its match order, partial updates, deletes, lists, batches, refusals."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from app import profiles
from app.profiles import ProfileRow
from app.schemas import ProfileOut
from app.web import api_profiles
from tests.conftest import Gateway
from tests.test_api_read import make_key

PHONE = "+14155550123"
OTHER_PHONE = "+14155550124"
PROFILE_KEYS = {"id", "externalId", "phoneNumber", "email", "firstName", "lastName", "timezone", "attributes",
                "createdAt", "updatedAt"}


@pytest.fixture
def acme_key(gateway: Gateway) -> str:
    return make_key(gateway, "acme")


def call(gateway: Gateway, method: str, path: str, key: str | None, body: Any = None, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["x-api-key"] = key
    if body is not None:
        kwargs["json"] = body
    return gateway.client.request(method, path, headers=headers, **kwargs)


def upsert(gateway: Gateway, key: str, body: Any, status: int | None = None) -> dict[str, Any]:
    response = call(gateway, "POST", "/v1/profiles", key, body)
    if status is not None:
        assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def replays(caplog: pytest.LogCaptureFixture) -> Callable[[], int]:
    """How many batch slices the database refused and were replayed item by item (the slow path)."""
    caplog.set_level(logging.INFO, logger="optline.profiles")
    return lambda: sum(1 for r in caplog.records if r.name == "optline.profiles" and "replayed" in r.getMessage())


def fields_named(response: Any) -> list[str | None]:
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


# --- upsert ---------------------------------------------------------------------------------


def test_create_is_201_and_the_same_externalid_again_is_200(gateway: Gateway, acme_key: str) -> None:
    response = call(gateway, "POST", "/v1/profiles", acme_key, {
        "externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com", "firstName": "Ada",
        "lastName": "Lovelace", "timezone": "Europe/London", "attributes": {"plan": "gold", "visits": 3}})
    assert response.status_code == 201
    created = response.json()
    assert set(created) == PROFILE_KEYS
    assert created["id"].startswith("prof_") and len(created["id"]) == 31
    assert response.headers["location"] == f"/v1/profiles/{created['id']}"
    assert {k: created[k] for k in PROFILE_KEYS - {"id", "createdAt", "updatedAt"}} == {
        "externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com", "firstName": "Ada",
        "lastName": "Lovelace", "timezone": "Europe/London", "attributes": {"plan": "gold", "visits": 3}}
    assert created["createdAt"].endswith("Z") and created["createdAt"] == created["updatedAt"]

    updated = upsert(gateway, acme_key, {"externalId": "crm-1", "firstName": "Augusta"}, 200)
    assert updated["id"] == created["id"]
    assert updated["firstName"] == "Augusta" and updated["lastName"] == "Lovelace"
    assert updated["createdAt"] == created["createdAt"] and updated["updatedAt"] > created["updatedAt"]
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == 1


def test_an_upsert_that_changes_nothing_keeps_updatedat(gateway: Gateway, acme_key: str) -> None:
    created = upsert(gateway, acme_key, {"externalId": "crm-1", "firstName": "Ada"}, 201)
    again = upsert(gateway, acme_key, {"externalId": "crm-1", "firstName": "Ada"}, 200)
    assert again == created


@pytest.mark.parametrize("written,stored", [
    ({"phoneNumber": "4155550123"}, {"phoneNumber": PHONE}),
    ({"phoneNumber": "(415) 555-0123"}, {"phoneNumber": PHONE}),
    ({"phoneNumber": "14155550123"}, {"phoneNumber": PHONE}),
    ({"phoneNumber": "+33 6 12 34 56 78"}, {"phoneNumber": "+33612345678"}),
    ({"phoneNumber": "33612345678"}, {"phoneNumber": "+33612345678"}),
    ({"email": " Ada@Example.COM "}, {"email": "ada@example.com"}),
    ({"externalId": "x", "timezone": "america/new_york"}, {"timezone": "America/New_York"}),
    ({"externalId": "x", "firstName": "  Ada "}, {"firstName": "Ada"}),
], ids=["us-no-country-code", "us-formatted", "digits-with-country-code", "fr-plus", "fr-digits", "email-case",
        "timezone-case", "trimmed"])
def test_input_is_normalised(gateway: Gateway, acme_key: str, written: dict[str, str], stored: dict[str, str]) -> None:
    profile = upsert(gateway, acme_key, written, 201)
    assert {k: profile[k] for k in stored} == stored


def test_match_order_externalid_then_phone_then_email(gateway: Gateway, acme_key: str) -> None:
    a = upsert(gateway, acme_key, {"externalId": "crm-a", "phoneNumber": "+14155550001"}, 201)
    b = upsert(gateway, acme_key, {"phoneNumber": "+14155550002"}, 201)
    c = upsert(gateway, acme_key, {"email": "c@example.com"}, 201)

    # externalId finds A and moves its phone; phone finds B and adds an email; email finds C.
    assert upsert(gateway, acme_key, {"externalId": "crm-a", "phoneNumber": "+14155550009"}, 200)["id"] == a["id"]
    assert upsert(gateway, acme_key, {"phoneNumber": "+14155550002", "email": "b@example.com"}, 200)["id"] == b["id"]
    assert upsert(gateway, acme_key, {"email": "C@example.com", "lastName": "C"}, 200)["id"] == c["id"]

    # externalId beats phone: A is the target, and B's phone is not A's to take.
    response = call(gateway, "POST", "/v1/profiles", acme_key, {"externalId": "crm-a", "phoneNumber": "+14155550002"})
    assert response.status_code == 409 and fields_named(response) == ["phoneNumber"]
    assert b["id"] in response.json()["errors"][0]["message"]
    # phone beats email: B is the target, C's email is not B's to take.
    response = call(gateway, "POST", "/v1/profiles", acme_key, {"phoneNumber": "+14155550002", "email": "c@example.com"})
    assert response.status_code == 409 and fields_named(response) == ["email"]

    # A new externalId adopts the phone-only profile B...
    assert upsert(gateway, acme_key, {"externalId": "crm-b", "phoneNumber": "+14155550002"}, 200)["id"] == b["id"]
    # ...but never re-keys a profile that already has another externalId.
    response = call(gateway, "POST", "/v1/profiles", acme_key, {"externalId": "crm-z", "phoneNumber": "+14155550002"})
    assert response.status_code == 409 and fields_named(response) == ["phoneNumber"]

    rows = {r.id: (r.external_id, r.phone, r.email) for r in gateway.query("SELECT * FROM profiles")}
    assert rows == {
        a["id"]: ("crm-a", "+14155550009", None),
        b["id"]: ("crm-b", "+14155550002", "b@example.com"),
        c["id"]: (None, None, "c@example.com"),
    }


def test_partial_update_changes_only_the_fields_sent(gateway: Gateway, acme_key: str) -> None:
    created = upsert(gateway, acme_key, {"externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com",
                                         "firstName": "Ada", "lastName": "Lovelace", "timezone": "Europe/London",
                                         "attributes": {"plan": "gold"}}, 201)
    patched = call(gateway, "PATCH", f"/v1/profiles/{created['id']}", acme_key, {"lastName": "King"}).json()
    assert patched == {**created, "lastName": "King", "updatedAt": patched["updatedAt"]}
    posted = upsert(gateway, acme_key, {"phoneNumber": PHONE, "timezone": "Europe/Paris"}, 200)
    assert posted == {**patched, "timezone": "Europe/Paris", "updatedAt": posted["updatedAt"]}


def test_null_clears_a_field(gateway: Gateway, acme_key: str) -> None:
    upsert(gateway, acme_key, {"externalId": "crm-1", "email": "ada@example.com", "firstName": "Ada"}, 201)
    cleared = upsert(gateway, acme_key, {"externalId": "crm-1", "email": None, "firstName": None}, 200)
    assert cleared["email"] is None and cleared["firstName"] is None and cleared["externalId"] == "crm-1"
    # The cleared email is free again.
    assert upsert(gateway, acme_key, {"email": "ada@example.com"}, 201)["id"] != cleared["id"]


def test_attributes_merge_key_by_key_and_null_deletes(gateway: Gateway, acme_key: str) -> None:
    upsert(gateway, acme_key, {"externalId": "crm-1", "attributes": {"plan": "gold", "visits": 3, "tags": ["a"]}}, 201)
    merged = upsert(gateway, acme_key, {"externalId": "crm-1",
                                        "attributes": {"visits": 4, "tags": None, "prefs": {"sms": True}}}, 200)
    assert merged["attributes"] == {"plan": "gold", "visits": 4, "prefs": {"sms": True}}
    patched = call(gateway, "PATCH", "/v1/profiles/crm-1", acme_key, {"attributes": {"plan": None, "gone": None}})
    assert patched.json()["attributes"] == {"visits": 4, "prefs": {"sms": True}}
    cleared = upsert(gateway, acme_key, {"externalId": "crm-1", "attributes": None}, 200)
    assert cleared["attributes"] == {}


# --- refusals -----------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param({"externalId": ""}, "externalId", id="empty-externalId"),
    pytest.param({"externalId": "x", "phoneNumber": ""}, "phoneNumber", id="empty-phone"),
    pytest.param({"externalId": "x", "email": ""}, "email", id="empty-email"),
    pytest.param({"externalId": "x", "firstName": ""}, "firstName", id="empty-firstName"),
    pytest.param({"externalId": "x", "lastName": "   "}, "lastName", id="blank-lastName"),
    pytest.param({"externalId": "x", "timezone": ""}, "timezone", id="empty-timezone"),
    pytest.param({"externalId": "x", "nickname": "Ada"}, "nickname", id="unknown-field"),
    pytest.param({"externalId": "x", "first_name": "Ada"}, "first_name", id="snake-case-field"),
    pytest.param({"externalId": 42}, "externalId", id="number-externalId"),
    pytest.param({"externalId": "x", "firstName": {"a": 1}}, "firstName", id="object-firstName"),
    pytest.param({"externalId": "x", "attributes": ["a"]}, "attributes", id="list-attributes"),
    pytest.param({"externalId": "x", "attributes": "gold"}, "attributes", id="string-attributes"),
    pytest.param({"externalId": "x" * 256}, "externalId", id="long-externalId"),
    pytest.param({"phoneNumber": "banana"}, "phoneNumber", id="phone-banana"),
    pytest.param({"phoneNumber": "+1 415 555"}, "phoneNumber", id="phone-too-short"),
    pytest.param({"phoneNumber": "+999 1234567"}, "phoneNumber", id="phone-no-such-country"),
    pytest.param({"phoneNumber": "0612345678"}, "phoneNumber", id="phone-national-other-country"),
    pytest.param({"email": "ada"}, "email", id="email-no-at"),
    pytest.param({"email": "ada@localhost"}, "email", id="email-no-dot"),
    pytest.param({"email": "a da@example.com"}, "email", id="email-space"),
    pytest.param({"externalId": "x", "timezone": "Mars/Olympus"}, "timezone", id="timezone-unknown"),
    pytest.param({"externalId": "x", "timezone": "+02:00"}, "timezone", id="timezone-offset"),
    pytest.param({"firstName": "Ada"}, "externalId", id="no-identifier"),
    pytest.param({"externalId": None, "phoneNumber": None}, "phoneNumber", id="null-identifiers"),
    pytest.param(["externalId", "x"], "body", id="not-an-object"),
]


@pytest.mark.parametrize("body,field", BAD_BODIES)
def test_bad_input_is_422_naming_the_field(gateway: Gateway, acme_key: str, body: Any, field: str) -> None:
    response = call(gateway, "POST", "/v1/profiles", acme_key, body)
    assert response.status_code == 422, response.text
    assert field in fields_named(response)
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == 0


def test_every_bad_field_is_named_at_once(gateway: Gateway, acme_key: str) -> None:
    response = call(gateway, "POST", "/v1/profiles", acme_key,
                    {"phoneNumber": "banana", "email": "nope", "timezone": "Nowhere/Town"})
    assert response.status_code == 422
    assert fields_named(response) == ["phoneNumber", "email", "timezone"]


def test_bistro_numbers_without_country_code_are_french(gateway: Gateway) -> None:
    key = make_key(gateway, "bistro")
    assert upsert(gateway, key, {"phoneNumber": "06 12 34 56 78"}, 201)["phoneNumber"] == "+33612345678"
    response = call(gateway, "POST", "/v1/profiles", key, {"phoneNumber": "4155550123"})
    assert response.status_code == 422 and fields_named(response) == ["phoneNumber"]


@pytest.mark.parametrize("content,content_type,status", [
    (b"{", "application/json", 400),
    (b"", "application/json", 400),
    (b'{"externalId": NaN}', "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"externalId=x", "application/x-www-form-urlencoded", 415),
], ids=["truncated", "empty", "nan", "not-utf8", "form"])
def test_bodies_that_are_not_json_are_refused(gateway: Gateway, acme_key: str, content: bytes, content_type: str,
                                              status: int) -> None:
    for method, path in (("POST", "/v1/profiles"), ("PATCH", "/v1/profiles/crm-1"), ("POST", "/v1/profiles/batch")):
        response = call(gateway, method, path, acme_key, content=content, headers={"content-type": content_type})
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_huge_bodies_are_413(gateway: Gateway, acme_key: str) -> None:
    big = json.dumps({"externalId": "x", "attributes": {"blob": "a" * (1024 * 1024)}}).encode()
    response = call(gateway, "POST", "/v1/profiles", acme_key, content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        # No Content-Length (chunked): the limit is enforced on the bytes that arrive.
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    response = call(gateway, "PATCH", "/v1/profiles/x", acme_key, content=chunks(),
                    headers={"content-type": "application/json"})
    assert response.status_code == 413
    # The same body fits a batch (5 MiB), a bigger one does not.
    items = [{"externalId": f"x{n}", "attributes": {"blob": "a" * 6000}} for n in range(1000)]
    response = call(gateway, "POST", "/v1/profiles/batch", acme_key, {"items": items})
    assert response.status_code == 413
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == 0


ROUTES = [("POST", "/v1/profiles"), ("GET", "/v1/profiles"), ("POST", "/v1/profiles/batch"),
          ("GET", "/v1/profiles/crm-1"), ("PATCH", "/v1/profiles/crm-1"), ("DELETE", "/v1/profiles/crm-1"),
          ("GET", f"/v1/profiles/by-phone/{PHONE}"), ("GET", "/v1/profiles/by-email/ada@example.com")]


@pytest.mark.parametrize("method,path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_needs_a_key(gateway: Gateway, method: str, path: str) -> None:
    for key in (None, "olk_deadbeef_notarealkey"):
        response = call(gateway, method, path, key, {"externalId": "crm-1"} if method in ("POST", "PATCH") else None)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


# --- reading, patching, deleting -----------------------------------------------------------


def test_get_by_id_externalid_phone_and_email(gateway: Gateway, acme_key: str) -> None:
    created = upsert(gateway, acme_key, {"externalId": "crm/1", "phoneNumber": PHONE, "email": "ada@example.com"}, 201)
    for path in (f"/v1/profiles/{created['id']}", "/v1/profiles/crm/1", "/v1/profiles/crm%2F1",
                 f"/v1/profiles/by-phone/{PHONE}", "/v1/profiles/by-phone/4155550123",
                 "/v1/profiles/by-phone/%2B1%20415%20555%200123", "/v1/profiles/by-email/ADA@example.com"):
        response = call(gateway, "GET", path, acme_key)
        assert response.status_code == 200, path
        assert response.json() == created, path
    assert call(gateway, "GET", "/v1/profiles/crm-2", acme_key).status_code == 404
    assert call(gateway, "GET", f"/v1/profiles/by-phone/{OTHER_PHONE}", acme_key).status_code == 404
    assert call(gateway, "GET", "/v1/profiles/by-email/bob@example.com", acme_key).status_code == 404
    bad_phone = call(gateway, "GET", "/v1/profiles/by-phone/banana", acme_key)
    assert bad_phone.status_code == 422 and fields_named(bad_phone) == ["phoneNumber"]
    bad_email = call(gateway, "GET", "/v1/profiles/by-email/nope", acme_key)
    assert bad_email.status_code == 422 and fields_named(bad_email) == ["email"]


def test_patch_by_id_or_externalid(gateway: Gateway, acme_key: str) -> None:
    created = upsert(gateway, acme_key, {"externalId": "crm-1", "firstName": "Ada"}, 201)
    other = upsert(gateway, acme_key, {"externalId": "crm-2", "phoneNumber": OTHER_PHONE}, 201)
    by_id = call(gateway, "PATCH", f"/v1/profiles/{created['id']}", acme_key, {"phoneNumber": "4155550123"})
    assert by_id.status_code == 200 and by_id.json()["phoneNumber"] == PHONE
    # PATCH may change the externalId itself, and the empty body changes nothing.
    renamed = call(gateway, "PATCH", "/v1/profiles/crm-1", acme_key, {"externalId": "crm-9"})
    assert renamed.status_code == 200 and renamed.json()["externalId"] == "crm-9"
    assert call(gateway, "PATCH", "/v1/profiles/crm-9", acme_key, {}).json() == renamed.json()
    assert call(gateway, "GET", "/v1/profiles/crm-1", acme_key).status_code == 404
    taken = call(gateway, "PATCH", "/v1/profiles/crm-9", acme_key, {"externalId": "crm-2", "phoneNumber": OTHER_PHONE})
    assert taken.status_code == 409 and fields_named(taken) == ["externalId", "phoneNumber"]
    assert call(gateway, "GET", f"/v1/profiles/{other['id']}", acme_key).json() == other
    assert call(gateway, "PATCH", "/v1/profiles/nobody", acme_key, {"firstName": "X"}).status_code == 404
    bad = call(gateway, "PATCH", "/v1/profiles/crm-9", acme_key, {"firstName": ""})
    assert bad.status_code == 422 and fields_named(bad) == ["firstName"]


def test_delete_erases_the_person_and_keeps_the_subscriptions(gateway: Gateway, acme_key: str) -> None:
    profile = upsert(gateway, acme_key, {"externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com",
                                         "firstName": "Ada", "attributes": {"plan": "gold"}}, 201)
    for text in ("JOIN", "YES"):
        gateway.text(text, from_=PHONE)
    gateway.state.writer.call(lambda conn, now: conn.execute(
        sa.text("UPDATE subscriptions SET profile_id = :id WHERE phone = :p"), {"id": profile["id"], "p": PHONE}))
    ledger_before = gateway.query("SELECT count(*) FROM consent_events")[0][0]

    response = call(gateway, "DELETE", "/v1/profiles/crm-1", acme_key)
    assert response.status_code == 204 and response.content == b""
    for path in (f"/v1/profiles/{profile['id']}", "/v1/profiles/crm-1", f"/v1/profiles/by-phone/{PHONE}",
                 "/v1/profiles/by-email/ada@example.com"):
        assert call(gateway, "GET", path, acme_key).status_code == 404, path
    assert call(gateway, "DELETE", f"/v1/profiles/{profile['id']}", acme_key).status_code == 404
    assert call(gateway, "PATCH", f"/v1/profiles/{profile['id']}", acme_key, {"firstName": "X"}).status_code == 404

    [tomb] = gateway.query("SELECT * FROM profiles")
    assert (tomb.id, tomb.external_id, tomb.phone, tomb.email, tomb.first_name) == (profile["id"], None, None, None, None)
    assert tomb.deleted_at is not None
    [sub] = gateway.query("SELECT status, profile_id FROM subscriptions WHERE phone = :p", p=PHONE)
    assert (sub.status, sub.profile_id) == ("subscribed", None)
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == ledger_before
    assert call(gateway, "GET", "/v1/profiles", acme_key).json()["items"] == []
    # The person may come back as a new profile.
    again = upsert(gateway, acme_key, {"externalId": "crm-1", "phoneNumber": PHONE}, 201)
    assert again["id"] != profile["id"]


def test_a_key_never_sees_another_brands_profiles(gateway: Gateway, acme_key: str) -> None:
    acme = upsert(gateway, acme_key, {"externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com"}, 201)
    bistro = make_key(gateway, "bistro")
    for method, path in (("GET", f"/v1/profiles/{acme['id']}"), ("GET", "/v1/profiles/crm-1"),
                         ("GET", f"/v1/profiles/by-phone/{PHONE}"), ("GET", "/v1/profiles/by-email/ada@example.com"),
                         ("DELETE", f"/v1/profiles/{acme['id']}")):
        assert call(gateway, method, path, bistro).status_code == 404, path
    assert call(gateway, "PATCH", "/v1/profiles/crm-1", bistro, {"firstName": "X"}).status_code == 404
    assert call(gateway, "GET", "/v1/profiles", bistro).json() == {"items": [], "nextCursor": None}
    # The same identifiers make a separate bistro profile.
    theirs = upsert(gateway, bistro, {"externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com"}, 201)
    assert theirs["id"] != acme["id"]
    assert call(gateway, "GET", "/v1/profiles/crm-1", acme_key).json() == acme


# --- listing ---------------------------------------------------------------------------------


def walk(gateway: Gateway, key: str, **params: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = call(gateway, "GET", "/v1/profiles", key, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"items", "nextCursor"}
        assert len(body["items"]) <= int(params.get("limit", "100"))
        seen += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return seen


def test_list_walks_every_profile_once_oldest_change_first(gateway: Gateway, acme_key: str) -> None:
    ids = [upsert(gateway, acme_key, {"externalId": f"crm-{n}"}, 201)["id"] for n in range(7)]
    # Touching one moves it to the end; updatedSince keeps only what changed since.
    gateway.clock.advance(hours=1)
    since = gateway.clock().isoformat()
    upsert(gateway, acme_key, {"externalId": "crm-2", "firstName": "Changed"}, 200)
    newer = [upsert(gateway, acme_key, {"externalId": f"crm-{n}"}, 201)["id"] for n in range(7, 9)]

    everything = walk(gateway, acme_key, limit="3")
    assert [p["id"] for p in everything] == ids[:2] + ids[3:] + [ids[2]] + newer
    recent = walk(gateway, acme_key, limit="2", updatedSince=since.replace("+00:00", "Z"))
    assert [p["id"] for p in recent] == [ids[2]] + newer
    assert walk(gateway, acme_key, limit="1000") == everything


def test_list_filters_by_program_and_status(gateway: Gateway, acme_key: str) -> None:
    phones = [f"+1415555{n:04d}" for n in range(5)]
    ids = [upsert(gateway, acme_key, {"phoneNumber": p}, 201)["id"] for p in phones]
    gateway.text("JOIN", from_=phones[0])  # deals, pendingDOI
    gateway.text("JOIN", from_=phones[1])
    gateway.text("YES", from_=phones[1])  # deals, subscribed
    gateway.text("NEWS", from_=phones[2])  # news, pendingDOI
    gateway.text("JOIN", from_="+14155559999")  # a phone with no profile

    def listed(**params: str) -> list[str]:
        return [p["id"] for p in walk(gateway, acme_key, limit="1", **params)]

    assert listed(program="deals") == [ids[0], ids[1]]
    assert listed(program="deals", status="subscribed") == [ids[1]]
    assert listed(status="pendingDOI") == [ids[0], ids[2]]
    assert listed(program="news", status="subscribed") == []


@pytest.mark.parametrize("params,field", [
    ({"cursor": "!!!"}, "cursor"),
    ({"cursor": "WzFd"}, "cursor"),  # base64 of [1]: ours in form, not in content
    ({"updatedSince": "yesterday"}, "updatedSince"),
    ({"updatedSince": "2026-01-01T00:00:00"}, "updatedSince"),
    ({"status": "maybe"}, "status"),
    ({"program": "menu"}, "program"),  # bistro's, not acme's
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
], ids=["cursor-garbage", "cursor-shape", "since-not-a-date", "since-no-zone", "status", "program-other-brand",
        "limit-zero", "limit-over"])
def test_bad_list_filters_are_4xx_naming_the_field(gateway: Gateway, acme_key: str, params: dict[str, str],
                                                   field: str) -> None:
    response = call(gateway, "GET", "/v1/profiles", acme_key, params=params)
    assert 400 <= response.status_code < 500
    assert fields_named(response) == [field]


# --- batch ---------------------------------------------------------------------------------


def test_batch_of_1000_applies_the_good_items_and_reports_each_bad_one(
    gateway: Gateway, acme_key: str, replays: Callable[[], int],
) -> None:
    existing = upsert(gateway, acme_key, {"externalId": "crm-0", "email": "taken@example.com"}, 201)
    items: list[Any] = [{"externalId": f"crm-{n}", "phoneNumber": f"+1415555{n:04d}", "attributes": {"n": n}}
                        for n in range(1000)]
    bad = {
        3: ({"externalId": "crm-3", "phoneNumber": "banana"}, 422, "phoneNumber"),
        10: ({"externalId": "crm-10", "firstName": ""}, 422, "firstName"),
        99: ({"externalId": "crm-99", "shoeSize": 42}, 422, "shoeSize"),
        100: ({"firstName": "nobody"}, 422, "externalId"),
        500: ("not an object", 422, "body"),
        777: ({"externalId": "crm-777", "email": "taken@example.com"}, 409, "email"),
        # Same phone as item 1, another externalId: the profile made by item 1 keeps it.
        999: ({"externalId": "crm-999", "phoneNumber": "+14155550001"}, 409, "phoneNumber"),
    }
    for index, (item, _status, _field) in bad.items():
        items[index] = item

    response = call(gateway, "POST", "/v1/profiles/batch", acme_key, {"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    assert [r["index"] for r in results] == list(range(1000))
    for r in results:
        if r["index"] in bad:
            _item, status, field = bad[r["index"]]
            assert r["status"] == status and "profile" not in r, r
            assert r["error"]["status"] == status
            assert field in [e["field"] for e in r["error"]["errors"]], r
        else:
            expected = 200 if r["index"] == 0 else 201
            assert r["status"] == expected and "error" not in r, r
            assert r["profile"]["externalId"] == f"crm-{r['index']}"
            assert r["profile"]["attributes"] == {"n": r["index"]}
    assert results[0]["profile"]["id"] == existing["id"]
    assert results[0]["profile"]["email"] == "taken@example.com"
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == 1000 - len(bad)  # crm-0 existed, item 0 updated it
    assert call(gateway, "GET", "/v1/profiles/crm-5", acme_key).json()["phoneNumber"] == "+14155550005"
    assert replays() == 0  # all of it on the fast path


def test_batch_items_apply_in_order(gateway: Gateway, acme_key: str, replays: Callable[[], int]) -> None:
    results = call(gateway, "POST", "/v1/profiles/batch", acme_key, {"items": [
        {"externalId": "crm-1", "attributes": {"a": 1}},
        {"externalId": "crm-1", "attributes": {"b": 2}},
        {"phoneNumber": PHONE},
        {"externalId": "crm-2", "phoneNumber": PHONE},
    ]}).json()["items"]
    assert [r["status"] for r in results] == [201, 200, 201, 200]
    assert results[1]["profile"]["attributes"] == {"a": 1, "b": 2}
    assert results[3]["profile"]["id"] == results[2]["profile"]["id"]
    assert replays() == 0  # all of it on the fast path


@pytest.mark.parametrize("body,field", [
    ({}, "items"),
    ({"items": []}, "items"),
    ({"items": {"externalId": "x"}}, "items"),
    ({"items": [{"externalId": "x"}] * 1001}, "items"),
    ({"items": [{"externalId": "x"}], "atomic": True}, "atomic"),
    ([], "items"),
], ids=["missing", "empty", "not-a-list", "too-many", "unknown-field", "empty-bare-array"])
def test_a_bad_batch_envelope_is_422(gateway: Gateway, acme_key: str, body: Any, field: str) -> None:
    response = call(gateway, "POST", "/v1/profiles/batch", acme_key, body)
    assert response.status_code == 422
    assert field in fields_named(response)
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == 0


def test_a_unique_index_race_fails_only_its_item(
    gateway: Gateway, acme_key: str, monkeypatch: pytest.MonkeyPatch, replays: Callable[[], int],
) -> None:
    taken = upsert(gateway, acme_key, {"externalId": "crm-0", "phoneNumber": PHONE}, 201)
    real = profiles._holders

    def blind(*args: Any) -> dict[str, Any]:
        # As if another process committed PHONE's profile just after we looked: only the
        # database's unique index can refuse the write now.
        return {c: h for c, h in real(*args).items() if h.phone != PHONE}

    real_many = profiles._holders_many

    def blind_many(*args: Any) -> dict[str, dict[str, Any]]:
        # The batch's one lookup per slice, blinded the same way.
        return {c: {v: h for v, h in held.items() if h.phone != PHONE} for c, held in real_many(*args).items()}

    monkeypatch.setattr(profiles, "_holders", blind)
    monkeypatch.setattr(profiles, "_holders_many", blind_many)
    single = call(gateway, "POST", "/v1/profiles", acme_key, {"externalId": "crm-9", "phoneNumber": PHONE})
    assert single.status_code == 409
    results = call(gateway, "POST", "/v1/profiles/batch", acme_key, {"items": [
        {"externalId": "crm-1", "phoneNumber": OTHER_PHONE},
        {"externalId": "crm-2", "phoneNumber": PHONE},
        {"externalId": "crm-3"},
    ]}).json()["items"]
    assert [r["status"] for r in results] == [201, 409, 201]
    assert replays() == 1  # the slice was refused by the index and replayed
    rows = {r.external_id: r.phone for r in gateway.query("SELECT external_id, phone FROM profiles")}
    assert rows == {"crm-0": PHONE, "crm-1": OTHER_PHONE, "crm-3": None}
    assert call(gateway, "GET", f"/v1/profiles/{taken['id']}", acme_key).json() == taken


def batch(gateway: Gateway, key: str, items: list[Any]) -> list[dict[str, Any]]:
    response = call(gateway, "POST", "/v1/profiles/batch", key, {"items": items})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["items"]
    assert [r["index"] for r in results] == list(range(len(items)))
    return results


_ID = re.compile(r"prof_[0-9A-Z]{26}")


class Ids:
    """Names profile ids by first appearance and drops timestamps, so two brands' answers compare."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items() if k not in ("createdAt", "updatedAt")}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str):
            return _ID.sub(lambda m: self.names.setdefault(m.group(), f"p{len(self.names)}"), value)
        return value


P1, P2, P3, P8, P9 = "+14155550001", "+14155550002", "+14155550003", "+14155550008", "+14155550009"
SEED = [
    {"externalId": "crm-a", "phoneNumber": P1, "email": "a@example.com", "attributes": {"plan": "gold"}},
    {"phoneNumber": P2, "firstName": "Bea"},
    {"email": "c@example.com"},
]
# Items that depend on the ones before them: values freed and taken again, matches made by
# earlier items, conflicts with earlier items, no-ops, refusals.
MIXED: list[Any] = [
    {"externalId": "crm-a", "phoneNumber": P9},  # A frees P1
    {"externalId": "crm-d", "phoneNumber": P1},  # ...which a new profile D takes
    {"phoneNumber": P2, "email": "b@example.com"},  # B found by phone
    {"phoneNumber": P2, "email": "c@example.com"},  # C's email: 409
    {"externalId": "crm-a", "phoneNumber": P2},  # B's phone: 409
    {"email": "C@Example.com", "lastName": "Sea"},  # C found by email
    {"externalId": "crm-b", "phoneNumber": P2},  # adopts phone-only B
    {"externalId": "crm-z", "phoneNumber": P2},  # B is crm-b's now: 409
    {"externalId": "crm-a", "attributes": {"plan": None, "n": 1}},
    {"externalId": "crm-a", "attributes": {"plan": None, "n": 1}},  # changes nothing
    {"externalId": "crm-a", "email": None},  # frees a@example.com
    {"email": "a@example.com"},  # ...which a new profile E takes
    {"phoneNumber": "banana"},
    {"externalId": "crm-d", "firstName": ""},
    "not an object",
    {"externalId": "crm-a", "phoneNumber": P8},  # A and D swap P9 and P1 through P8: the writes
    {"externalId": "crm-d", "phoneNumber": P9},  # must keep the items' order
    {"externalId": "crm-a", "phoneNumber": P1},
    {"externalId": None, "phoneNumber": P3, "attributes": {"x": [1, {"y": None}]}},  # new F
    {"externalId": "crm-f", "phoneNumber": P3, "attributes": None},  # adopts F, clears its attributes
    {"externalId": "crm-a", "timezone": "europe/paris", "firstName": "Ada"},
    {"externalId": "crm-d", "phoneNumber": None, "email": "D@example.com"},
    {"email": "d@example.com", "phoneNumber": P9},  # D found by email; P9 is free again
]


def test_a_batch_answers_exactly_as_the_same_upserts_one_by_one(
    gateway: Gateway, acme_key: str, replays: Callable[[], int],
) -> None:
    # Two brands, the same data: acme gets one batch, bistro the items as single upserts
    # (the reference). Numbers carry their country code, so the brands' regions do not matter.
    bistro_key = make_key(gateway, "bistro")
    seeded = {key: [upsert(gateway, key, item, 201) for item in SEED] for key in (acme_key, bistro_key)}

    batched = batch(gateway, acme_key, MIXED)
    singles = []
    for index, item in enumerate(MIXED):
        response = call(gateway, "POST", "/v1/profiles", bistro_key, item)
        body = response.json()
        singles.append({"index": index, "status": response.status_code,
                        **({"error": body} if response.status_code >= 400 else {"profile": body})})

    statuses = [r["status"] for r in batched]
    assert statuses == [200, 201, 200, 409, 409, 200, 200, 409, 200, 200, 200, 201, 422, 422, 422,
                        200, 200, 200, 201, 200, 200, 200, 200]
    assert statuses == [r["status"] for r in singles]
    acme_ids, bistro_ids = Ids(), Ids()
    acme_ids(seeded[acme_key])
    bistro_ids(seeded[bistro_key])
    assert acme_ids(batched) == bistro_ids(singles)
    acme_all, bistro_all = walk(gateway, acme_key, limit="1000"), walk(gateway, bistro_key, limit="1000")
    assert sorted(map(json.dumps, acme_ids(acme_all))) == sorted(map(json.dumps, bistro_ids(bistro_all)))
    assert len(acme_all) == 6  # A, B, C seeded; D, E, F made by the batch

    # The no-op leaves the profile, updatedAt included, as the change before it left it.
    a_changed, a_same = batched[8]["profile"], batched[9]["profile"]
    assert a_same == a_changed and a_changed["attributes"] == {"n": 1}
    assert batched[3]["error"]["errors"][0]["field"] == "email"
    assert seeded[acme_key][2]["id"] in batched[3]["error"]["errors"][0]["message"]
    assert replays() == 0  # all of it on the fast path


def test_a_batch_larger_than_a_slice_sees_its_own_earlier_items(
    gateway: Gateway, acme_key: str, replays: Callable[[], int],
) -> None:
    # The batch is written in slices, each its own job: a later slice must find what an
    # earlier one wrote, whether matching it or conflicting with it.
    n = api_profiles.BATCH_SLICE + 10
    items: list[Any] = [{"externalId": f"crm-{i}"} for i in range(n)]
    items[0] = {"externalId": "crm-0", "phoneNumber": PHONE}
    items[api_profiles.BATCH_SLICE + 1] = {"phoneNumber": PHONE, "email": "ada@example.com"}
    items[api_profiles.BATCH_SLICE + 2] = {"externalId": "crm-other", "phoneNumber": PHONE}
    items[-1] = {"externalId": "crm-1", "email": "ADA@example.com"}
    results = batch(gateway, acme_key, items)

    first = results[0]["profile"]
    assert results[0]["status"] == 201
    again = results[api_profiles.BATCH_SLICE + 1]
    assert again["status"] == 200 and again["profile"]["id"] == first["id"]
    assert again["profile"]["email"] == "ada@example.com"
    taken = results[api_profiles.BATCH_SLICE + 2]
    assert taken["status"] == 409 and taken["error"]["errors"][0]["field"] == "phoneNumber"
    assert first["id"] in taken["error"]["errors"][0]["message"]
    assert results[-1]["status"] == 409 and results[-1]["error"]["errors"][0]["field"] == "email"
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == n - 3
    assert replays() == 0  # all of it on the fast path


def test_a_batch_item_naming_two_profiles_created_in_the_same_batch(
    gateway: Gateway, acme_key: str, replays: Callable[[], int],
) -> None:
    results = batch(gateway, acme_key, [
        {"externalId": "crm-1"},
        {"phoneNumber": PHONE},
        {"email": "ada@example.com"},
        # crm-1 is the target; the phone and the email belong to the other two profiles.
        {"externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com"},
        {"phoneNumber": PHONE, "email": "ada@example.com"},
        {"phoneNumber": OTHER_PHONE, "externalId": "crm-1"},
        # Still the phone-only profile's number, though an item above matched that profile.
        {"phoneNumber": PHONE, "externalId": "crm-1"},
    ])
    assert [r["status"] for r in results] == [201, 201, 201, 409, 409, 200, 409]
    assert [e["field"] for e in results[3]["error"]["errors"]] == ["phoneNumber", "email"]
    assert results[5]["profile"]["id"] == results[0]["profile"]["id"]
    assert gateway.query("SELECT count(*) FROM profiles")[0][0] == 3
    assert replays() == 0  # all of it on the fast path


@pytest.mark.parametrize("row", [
    ProfileRow(id="prof_01JC0000000000000000000000", brand="acme", external_id="crm-1", phone=PHONE,
               email="ada@example.com", first_name="Ada", last_name="Lovelace", timezone="Europe/London",
               attributes={"plan": "gold", "n": 3, "tags": ["a", {"b": None}], "ratio": 0.5, "ok": True},
               created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
               updated_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)),
    ProfileRow(id="prof_01JC0000000000000000000001", brand="acme", external_id=None, phone=None, email=None,
               first_name=None, last_name=None, timezone=None, attributes={},
               created_at=datetime(2026, 12, 31, 23, 59, 59, 1000, tzinfo=UTC),
               updated_at=datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
], ids=["full", "empty"])
def test_profile_json_is_profileout(row: ProfileRow) -> None:
    # profile_json is built by hand for speed; it must stay what ProfileOut would say.
    expected = ProfileOut(
        id=row.id, external_id=row.external_id, phone_number=row.phone, email=row.email, first_name=row.first_name,
        last_name=row.last_name, timezone=row.timezone, attributes=row.attributes, created_at=row.created_at,
        updated_at=row.updated_at,
    ).model_dump(mode="json")
    got = api_profiles.profile_json(row)
    assert got == expected and list(got) == list(expected)


def test_an_item_no_database_can_store_fails_only_itself(gateway: Gateway, acme_key: str,
                                                         replays: Callable[[], int]) -> None:
    # PostgreSQL text cannot hold NUL: refused on both engines, by validation, before the
    # database sees it, so no slice is replayed. The other items stand.
    results = batch(gateway, acme_key, [
        {"externalId": "crm-1"}, {"externalId": "crm-2", "firstName": "A\u0000da"}, {"externalId": "crm-3"},
    ])
    assert [r["status"] for r in results] == [201, 422, 201]
    assert [e["field"] for e in results[1]["error"]["errors"]] == ["firstName"]
    assert replays() == 0
    stored = {r.external_id for r in gateway.query("SELECT external_id FROM profiles")}
    assert stored == {"crm-1", "crm-3"}
