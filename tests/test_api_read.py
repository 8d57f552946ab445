"""Reading state through /v1 with brand-scoped API keys (the rest of the API is tested in its own modules)."""

from __future__ import annotations

from typing import Any

import pytest

from app.auth import create_key, revoke_key
from tests.conftest import Gateway

PHONE = "+14155550123"


def make_key(gateway: Gateway, brand: str) -> str:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="test"))
    return str(key)


@pytest.fixture
def acme_key(gateway: Gateway) -> str:
    return make_key(gateway, "acme")


def get(gateway: Gateway, path: str, key: str | None, *, bearer: bool = False, **params: Any) -> Any:
    headers = {} if key is None else ({"Authorization": f"Bearer {key}"} if bearer else {"x-api-key": key})
    return gateway.client.get(path, headers=headers, params=params)


def test_subscriptions_and_ledger_after_a_conversation(gateway: Gateway, acme_key: str) -> None:
    for text in ("JOIN", "YES", "STOP DEALS"):
        gateway.text(text, from_=PHONE)
    response = get(gateway, "/v1/subscriptions", acme_key, phoneNumber=PHONE)
    assert response.status_code == 200
    body = response.json()
    assert body["nextCursor"] is None
    [sub] = body["items"]
    assert sub["id"].startswith("sub_")
    assert {k: sub[k] for k in ("program", "phoneNumber", "status", "keyword", "subscribedAt", "profile")} == {
        "program": "deals", "phoneNumber": PHONE, "status": "unsubscribed", "keyword": "YES",
        "subscribedAt": None, "profile": None}
    assert sub["unsubscribedAt"].endswith("Z")

    ledger = get(gateway, "/v1/consent-events", acme_key, phoneNumber=PHONE, bearer=True).json()["items"]
    assert [(e["event"], e["fromStatus"], e["toStatus"], e["rawText"]) for e in ledger] == [
        ("join", "none", "pendingDOI", "JOIN"),
        ("confirm", "pendingDOI", "subscribed", "YES"),
        ("stop", "subscribed", "unsubscribed", "STOP DEALS"),
    ]
    assert all(e["source"] == "sms" and e["providerMessageId"].startswith("SM") for e in ledger)


def test_phone_filter_accepts_numbers_without_plus_or_country_code(gateway: Gateway, acme_key: str) -> None:
    gateway.text("JOIN", from_=PHONE)
    for written in ("14155550123", "(415) 555-0123", "+1 415 555 0123"):
        items = get(gateway, "/v1/subscriptions", acme_key, phoneNumber=written).json()["items"]
        assert [i["phoneNumber"] for i in items] == [PHONE], written


@pytest.mark.parametrize("auth", [None, "nope", "olk_deadbeef_notarealkey"], ids=["missing", "garbage", "unknown"])
def test_requests_without_a_valid_key_are_401(gateway: Gateway, auth: str | None) -> None:
    for path in ("/v1/subscriptions", "/v1/consent-events"):
        response = get(gateway, path, auth)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


def test_a_revoked_key_stops_working(gateway: Gateway) -> None:
    key = make_key(gateway, "acme")
    assert get(gateway, "/v1/subscriptions", key).status_code == 200
    prefix = key.split("_")[1]
    gateway.state.writer.call(lambda c, now: revoke_key(c, now, key_or_prefix=prefix))
    assert get(gateway, "/v1/subscriptions", key).status_code == 401  # at once: nothing caches it


def test_a_key_never_sees_another_brands_data(gateway: Gateway, acme_key: str) -> None:
    gateway.text("JOIN", from_=PHONE)
    bistro = make_key(gateway, "bistro")
    assert get(gateway, "/v1/subscriptions", bistro, phoneNumber=PHONE).json()["items"] == []
    assert get(gateway, "/v1/consent-events", bistro).json()["items"] == []
    assert len(get(gateway, "/v1/subscriptions", acme_key).json()["items"]) == 1


@pytest.mark.parametrize("params,field", [
    ({"phoneNumber": "banana"}, "phoneNumber"),
    ({"status": "maybe"}, "status"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "!!!"}, "cursor"),
], ids=["phone", "status", "limit-zero", "limit-over", "limit-text", "cursor"])
def test_bad_filters_are_4xx_naming_the_field(gateway: Gateway, acme_key: str, params: dict[str, str], field: str) -> None:
    response = get(gateway, "/v1/subscriptions", acme_key, **params)
    assert 400 <= response.status_code < 500
    assert field in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize("since", ["yesterday", "2026-01-01T00:00:00"], ids=["not-a-date", "no-zone"])
def test_ledger_since_must_be_an_aware_time(gateway: Gateway, acme_key: str, since: str) -> None:
    response = get(gateway, "/v1/consent-events", acme_key, since=since)
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "since"


def test_cursor_pages_walk_every_row_once(gateway: Gateway, acme_key: str) -> None:
    phones = [f"+1415555{n:04d}" for n in range(7)]
    for phone in phones:
        gateway.text("JOIN", from_=phone)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = get(gateway, "/v1/subscriptions", acme_key, **params).json()
        seen += [i["phoneNumber"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(phones)


def test_health_ready_metrics(gateway: Gateway) -> None:
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    ready = gateway.client.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["keywords"]) == {"sha256"} and "brands" not in ready
    gateway.text("JOIN", from_=PHONE)
    metrics = gateway.client.get("/metrics").text
    assert 'optline_inbound_total{kind="join"} 1.0' in metrics
