"""Idempotency-Key on /v1 writes: replay, 422 on another body, 409 while in flight, 24 h, per brand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.auth import create_key
from app.web.idempotency import claim_key
from tests.conftest import Gateway

PHONE = "+14155550123"


def key_for(gateway: Gateway, brand: str = "acme") -> str:
    return str(gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="t"))[1])


def opt_in(phone: str = PHONE) -> dict[str, Any]:
    return {"phoneNumber": phone, "program": "deals", "consentSource": "web",
            "consentedAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "consentProof": {"termsUrl": "https://acme.example/terms"}}


def post(gateway: Gateway, key: str, body: Any, idem: str | None, path: str = "/v1/subscriptions/opt-in") -> Any:
    headers = {"x-api-key": key}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return gateway.client.post(path, json=body, headers=headers)


def test_same_key_and_body_replays_the_stored_answer(gateway: Gateway) -> None:
    key = key_for(gateway)
    body = opt_in()
    first = post(gateway, key, body, "order-1")
    again = post(gateway, key, body, "order-1")
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"] == "application/json"
    gateway.drain()
    # The replay changed nothing and texted nothing.
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == 1
    assert len(gateway.replies(PHONE)) == 1


def test_same_key_other_body_is_422(gateway: Gateway) -> None:
    key = key_for(gateway)
    assert post(gateway, key, opt_in(), "k").status_code == 200
    other = post(gateway, key, opt_in("+14155550124"), "k")
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert gateway.subs("+14155550124") == {}


def test_same_key_on_another_path_is_422(gateway: Gateway) -> None:
    key = key_for(gateway)
    body = {"phoneNumber": PHONE}
    assert post(gateway, key, body, "k2", path="/v1/subscriptions/opt-out").status_code == 200
    assert post(gateway, key, body, "k2", path="/v1/subscriptions/opt-in").status_code == 422


def test_errors_below_500_are_replayed_too(gateway: Gateway) -> None:
    key = key_for(gateway)
    bad = {"phoneNumber": "banana"}
    first = post(gateway, key, bad, "k3", path="/v1/subscriptions/opt-out")
    again = post(gateway, key, bad, "k3", path="/v1/subscriptions/opt-out")
    assert first.status_code == again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"


def test_keys_are_per_brand(gateway: Gateway) -> None:
    acme, bistro = key_for(gateway, "acme"), key_for(gateway, "bistro")
    assert post(gateway, acme, {"phoneNumber": PHONE}, "shared", path="/v1/subscriptions/opt-out").status_code == 200
    other = post(gateway, bistro, {"phoneNumber": "+33612345678"}, "shared", path="/v1/subscriptions/opt-out")
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers


def test_in_flight_key_is_409(gateway: Gateway) -> None:
    key = key_for(gateway)
    # Reserve the key as a first request would, without finishing it.
    import hashlib
    body = b'{"phoneNumber": "+14155550123"}'
    digest = hashlib.sha256(b"\n".join([b"POST", b"/v1/subscriptions/opt-out", b"", body])).hexdigest()
    outcome = gateway.state.writer.call(lambda c, now: claim_key(c, now, brand="acme", key="busy", request_hash=digest))
    assert outcome[0] == "new"
    response = gateway.client.post("/v1/subscriptions/opt-out", content=body,
                                   headers={"x-api-key": key, "Idempotency-Key": "busy",
                                            "Content-Type": "application/json"})
    assert response.status_code == 409


def test_concurrent_requests_with_one_key_act_once(gateway: Gateway) -> None:
    key = key_for(gateway)
    body = opt_in()
    results: list[int] = []

    def go() -> None:
        results.append(post(gateway, key, body, "race").status_code)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) <= {200, 409} and 200 in results
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == 1


def test_keys_expire_after_24_hours(gateway: Gateway) -> None:
    key = key_for(gateway)
    body = {"phoneNumber": PHONE}
    post(gateway, key, body, "old", path="/v1/subscriptions/opt-out")
    gateway.clock.advance(hours=25)
    again = post(gateway, key, body, "old", path="/v1/subscriptions/opt-out")
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers


@pytest.mark.parametrize("idem", ["", "x" * 256], ids=["empty", "too-long"])
def test_bad_keys_are_400(gateway: Gateway, idem: str) -> None:
    response = post(gateway, key_for(gateway), {"phoneNumber": PHONE}, idem, path="/v1/subscriptions/opt-out")
    assert response.status_code == 400


def test_without_a_valid_api_key_the_route_answers_401(gateway: Gateway) -> None:
    assert post(gateway, "nope", {"phoneNumber": PHONE}, "k", path="/v1/subscriptions/opt-out").status_code == 401


def test_reads_ignore_the_header(gateway: Gateway) -> None:
    key = key_for(gateway)
    response = gateway.client.get("/v1/programs", headers={"x-api-key": key, "Idempotency-Key": "r"})
    assert response.status_code == 200 and "idempotent-replayed" not in response.headers
