"""Idempotency-Key on /v1 writes: replay, 422 on another body, 409 while in flight, 24 h, per brand."""

from __future__ import annotations

import hashlib
import json
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


def digest(body: bytes, query: bytes = b"") -> str:
    return hashlib.sha256(b"\n".join([query, body])).hexdigest()


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


def test_a_key_is_scoped_to_method_and_path(gateway: Gateway) -> None:
    key = key_for(gateway)
    assert post(gateway, key, {"phoneNumber": PHONE}, "k2", path="/v1/subscriptions/opt-out").status_code == 200
    other = post(gateway, key, opt_in("+14155550124"), "k2", path="/v1/subscriptions/opt-in")
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers


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
    body = b'{"phoneNumber": "+14155550123"}'
    outcome = gateway.state.writer.call(lambda c, now: claim_key(
        c, now, brand="acme", method="POST", path="/v1/subscriptions/opt-out", key="busy", request_hash=digest(body)))
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


# --- a key cannot be poisoned -----------------------------------------------------------------


def test_a_key_held_by_a_request_that_died_is_free_after_its_lease(gateway: Gateway) -> None:
    """The process died after claiming the key: the retry is refused only until the lease lapses."""
    key = key_for(gateway)
    body = json.dumps({"phoneNumber": PHONE}).encode()
    gateway.state.writer.call(lambda c, now: claim_key(
        c, now, brand="acme", method="POST", path="/v1/subscriptions/opt-out", key="crashed",
        request_hash=digest(body)))
    headers = {"x-api-key": key, "Idempotency-Key": "crashed", "Content-Type": "application/json"}
    assert gateway.client.post("/v1/subscriptions/opt-out", content=body, headers=headers).status_code == 409
    gateway.clock.advance(seconds=31)
    retry = gateway.client.post("/v1/subscriptions/opt-out", content=body, headers=headers)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers


@pytest.mark.parametrize("refused", [
    pytest.param(lambda g, k: g.client.post("/v1/subscriptions/opt-out", content=b'{"phoneNumber": "+1415',
                                            headers={"x-api-key": k, "Idempotency-Key": "p",
                                                     "Content-Type": "application/json"}), id="cut-off-json-400"),
    pytest.param(lambda g, k: g.client.post("/v1/subscriptions/opt-out", content=b"phoneNumber=x",
                                            headers={"x-api-key": k, "Idempotency-Key": "p",
                                                     "Content-Type": "text/plain"}), id="not-json-415"),
    pytest.param(lambda g, k: g.client.post("/v1/subscriptions/opt-out", content=b"x" * (2 * 1024 * 1024),
                                            headers={"x-api-key": k, "Idempotency-Key": "p",
                                                     "Content-Type": "application/json"}), id="too-large-413"),
    pytest.param(lambda g, k: g.client.put("/v1/subscriptions/opt-out", json={"phoneNumber": PHONE},
                                           headers={"x-api-key": k, "Idempotency-Key": "p"}), id="wrong-method-405"),
    pytest.param(lambda g, k: g.client.post("/v1/subscriptions/opt-out", json={"phoneNumber": PHONE},
                                            headers={"x-api-key": "wrong", "Idempotency-Key": "p"}), id="bad-key-401"),
])
def test_a_request_refused_before_it_ran_never_poisons_its_key(gateway: Gateway, refused: Any) -> None:
    key = key_for(gateway)
    first = refused(gateway, key)
    assert 400 <= first.status_code < 500 and first.status_code not in (409, 422), first.text
    retry = post(gateway, key, {"phoneNumber": PHONE}, "p", path="/v1/subscriptions/opt-out")
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert gateway.query("SELECT count(*) FROM idempotency_keys WHERE status = 'done'")[0][0] == 1


def test_a_client_that_drops_mid_upload_stores_nothing(gateway: Gateway) -> None:
    """The body is cut off by a disconnect (not just malformed): nothing runs and the key stays free."""
    key = key_for(gateway)
    app = gateway.client.app
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b'{"phoneNumber": "+1415', "more_body": True},
             {"type": "http.disconnect"}]

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return parts.pop(0) if parts else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/subscriptions/opt-out", "raw_path": b"/v1/subscriptions/opt-out", "query_string": b"",
                 "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1), "app": app,
                 "headers": [(b"x-api-key", key.encode()), (b"idempotency-key", b"dropped"),
                             (b"content-type", b"application/json"), (b"content-length", b"40")]}
        await app(scope, receive, send)  # type: ignore[operator]

    gateway.client.portal.call(call)  # type: ignore[union-attr]
    assert gateway.query("SELECT count(*) FROM idempotency_keys")[0][0] == 0
    retry = post(gateway, key, {"phoneNumber": PHONE}, "dropped", path="/v1/subscriptions/opt-out")
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
