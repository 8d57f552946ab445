"""No input a client can send produces a 5xx: every route and both Twilio webhooks, fuzzed on both engines.

Two parts. The known reproductions (deep JSON, non-ASCII digits, forged cursors,
out-of-range numbers, NUL in paths, filters, JSON and form keys, far-off UTC offsets) are
a table, each case with the answer it must get. Then hypothesis throws requests at every
route with every method, and at the webhooks unsigned, badly signed and correctly signed:
whatever comes back must be below 500, and every 4xx must be application/problem+json.
The runs are derandomised and bounded, so CI sees the same requests every time.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from app.auth import create_key
from tests.conftest import PUBLIC_URL, Gateway
from tests.fake_twilio import sign_twilio, twilio_inbound_params, twilio_status_params

PHONE = "+14155550123"
OTHER = "+14155550199"
PROBLEM = "application/problem+json"
DEEP = 1500  # deeper than json's recursion limit
HUGE = "1" + "0" * 30  # 10^30: no database integer holds it
CONSENT = {
    "phoneNumber": OTHER, "program": "deals", "consentSource": "web-checkout",
    "consentedAt": "2026-01-01T00:00:00Z", "consentProof": {"termsUrl": "https://acme.example/terms"},
}


def assert_clean(response: Any, what: str) -> None:
    """Below 500, and a 4xx is problem+json."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith(PROBLEM), (
            f"{what}: {response.status_code} as {response.headers.get('content-type')}")


def legacy_cursor(position: Any) -> str:
    """A cursor as optline made them before they were signed: base64 of the JSON position."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def deep(depth: int = DEEP) -> bytes:
    return b"[" * depth + b"]" * depth


@dataclass(frozen=True)
class Call:
    """One request: method, path, and what it carries."""

    method: str
    path: str
    params: dict[str, str] | None = None
    body: bytes | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _with(template: dict[str, Any], **changes: Any) -> bytes:
    return _json({**template, **changes})


WRITES = [
    ("POST", "/v1/profiles"), ("POST", "/v1/profiles/batch"), ("PATCH", "/v1/profiles/crm-1"),
    ("POST", "/v1/subscriptions/opt-in"), ("POST", "/v1/subscriptions/opt-out"), ("PUT", f"/v1/contacts/{PHONE}"),
]
CURSOR_ROUTES = ["/v1/subscriptions", "/v1/consent-events", "/v1/profiles", "/v1/messages"]
# Positions each route made before cursors were signed: believable, so answered 200 until then.
FORGED = {
    "/v1/subscriptions": [0, "sub_0", ""],
    "/v1/consent-events": [0, -1, 1.5],
    "/v1/profiles": [["2020-01-01T00:00:00+00:00", ""], ["2020-01-01T00:00:00+00:00", "prof_"]],
    "/v1/messages": [["2020-01-01T00:00:00+00:00", "inbound", 0], ["2020-01-01T00:00:00", "outbound", -5]],
}
# What a cursor decoded to when it was a 500: null, true, a number no column holds, text for an integer id.
POISON = {
    "/v1/subscriptions": [None, True, 10**23, "abc"],
    "/v1/consent-events": [None, True, 10**23, "abc"],
    "/v1/profiles": [None, True, ["2020-01-01T00:00:00+00:00", None]],
    "/v1/messages": [None, True, ["2020-01-01T00:00:00+00:00", "inbound", 10**23]],
}

def case(call: Call, expected: set[int], id: str) -> tuple[str, Call, set[int]]:  # noqa: A002 - pytest's word
    return id, call, expected


# (id, request, the statuses it may get): each of these was a 500, or a forged cursor answered 200.
CASES: list[tuple[str, Call, set[int]]] = [
    *(case(Call(m, p, body=deep()), {400}, id=f"deep-json-{m}-{p}") for m, p in WRITES),
    *(case(Call("GET", p, params={"limit": digits}), {400}, id=f"limit-{name}-{p}")
      for p in CURSOR_ROUTES for name, digits in (("superscript", "²"), ("arabic", "٣"), ("fullwidth", "１０"))),
    *(case(Call("GET", p, params={"cursor": legacy_cursor(pos)}), {400}, id=f"poisoned-cursor-{p}-{i}")
      for p, positions in POISON.items() for i, pos in enumerate(positions)),
    *(case(Call("GET", p, params={"cursor": legacy_cursor(pos)}), {400}, id=f"forged-cursor-{p}-{i}")
      for p, positions in FORGED.items() for i, pos in enumerate(positions)),
    *(case(Call(m, p), {400, 404, 422}, id=f"nul-path-{m}-{p}") for m, p in [
        ("GET", "/v1/profiles/a%00b"), ("PATCH", "/v1/profiles/a%00b"), ("DELETE", "/v1/profiles/a%00b"),
        ("GET", "/v1/profiles/by-phone/%00"), ("GET", "/v1/profiles/by-email/a%00@example.com"),
        ("GET", "/v1/contacts/%00"), ("PUT", "/v1/contacts/%00"),
    ]),
    *(case(Call("GET", p, params={name: "a\x00b"}), {200, 400, 422}, id=f"nul-filter-{name}-{p}")
      for p, names in [("/v1/subscriptions", ("program", "phoneNumber", "status")),
                       ("/v1/consent-events", ("program", "phoneNumber", "since")),
                       ("/v1/profiles", ("program", "status", "updatedSince")), ("/v1/messages", ("phoneNumber",))]
      for name in names),
    case(Call("POST", "/v1/subscriptions/opt-in",
                      body=_with(CONSENT, consentProof={"termsUrl": "https://acme.example/\x00"})), {422},
                 id="nul-consent-proof"),
    case(Call("POST", "/v1/subscriptions/opt-in",
                      body=_with(CONSENT, consentProof={"termsUrl": "t", "note\x00": "x"})), {422},
                 id="nul-consent-proof-key"),
    case(Call("POST", "/v1/subscriptions/opt-in", body=_with(CONSENT, consentSource="web\x00")), {422},
                 id="nul-consent-source"),
    case(Call("POST", "/v1/profiles", body=_json({"externalId": "a\x00"})), {422}, id="nul-external-id"),
    case(Call("POST", "/v1/profiles", body=_json({"externalId": "n1", "attributes": {"k\x00": 1}})), {422},
                 id="nul-attribute-key"),
    case(Call("POST", "/v1/profiles", body=_json({"externalId": "n2", "attributes": {"k": ["\x00"]}})),
                 {422}, id="nul-attribute-value"),
    case(Call("PATCH", "/v1/profiles/crm-1", body=_json({"firstName": "A\x00"})), {422}, id="nul-patch"),
    case(Call("POST", "/v1/profiles", body=b'{"externalId": "\\ud800"}'), {422}, id="lone-surrogate"),
    case(Call("POST", "/v1/profiles", body=b'{"externalId": "s1", "attributes": {"\\udfff": 1}}'), {422},
                 id="lone-surrogate-key"),
    *(case(Call("GET", p, params={name: "2026-01-01T00:00:00-20:24"}), {200}, id=f"far-offset-{name}")
      for p, name in [("/v1/consent-events", "since"), ("/v1/profiles", "updatedSince")]),
    *(case(Call("GET", p, params={name: "2026-01-01T00:00:00+23:59"}), {200}, id=f"far-offset-east-{name}")
      for p, name in [("/v1/consent-events", "since"), ("/v1/profiles", "updatedSince")]),
]


def make_key(gateway: Gateway, brand: str = "acme") -> str:
    return str(gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="fuzz"))[1])


@pytest.fixture
def key(gateway: Gateway) -> str:
    """acme's key, with a profile (crm-1) and a conversation to read."""
    key = make_key(gateway)
    gateway.client.post("/v1/profiles", json={"externalId": "crm-1", "phoneNumber": PHONE}, headers={"x-api-key": key})
    gateway.text("JOIN", from_=PHONE)
    return key


def send(gateway: Gateway, key: str | None, call: Call, **headers: str) -> Any:
    if key is not None:
        headers["x-api-key"] = key
    if call.body is not None:
        headers.setdefault("content-type", "application/json")
    return gateway.client.request(call.method, call.path, params=call.params, content=call.body, headers=headers)


def test_known_bad_input_is_a_clear_4xx(gateway: Gateway, key: str, subtests: pytest.Subtests) -> None:
    # One gateway for the whole table: a gateway per case cost more than the rest of this file.
    for name, call, expected in CASES:
        with subtests.test(msg=name):
            response = send(gateway, key, call)
            assert_clean(response, name)
            assert response.status_code in expected, response.text


def test_cursors_made_by_optline_still_page(gateway: Gateway, key: str) -> None:
    for n in range(3):
        gateway.client.post("/v1/profiles", json={"externalId": f"p{n}"}, headers={"x-api-key": key})
        gateway.text("JOIN", from_=f"+1415555020{n}")
    for path in CURSOR_ROUTES:
        seen: list[Any] = []
        params: dict[str, Any] = {"limit": 1}
        for _ in range(50):
            page = gateway.client.get(path, params=params, headers={"x-api-key": key})
            assert page.status_code == 200, (path, page.text)
            body = page.json()
            seen += body["items"]
            if body["nextCursor"] is None:
                break
            params["cursor"] = body["nextCursor"]
        whole = gateway.client.get(path, params={"limit": 1000}, headers={"x-api-key": key}).json()["items"]
        assert len(whole) >= 2 and seen == whole, path


def test_a_cursor_from_another_route_or_altered_is_refused(gateway: Gateway, key: str) -> None:
    for n in range(2):
        gateway.client.post("/v1/profiles", json={"externalId": f"p{n}"}, headers={"x-api-key": key})
    cursor = gateway.client.get("/v1/profiles", params={"limit": 1}, headers={"x-api-key": key}).json()["nextCursor"]
    assert cursor
    altered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for path, sent in [("/v1/profiles", altered), ("/v1/messages", cursor), ("/v1/subscriptions", cursor)]:
        response = gateway.client.get(path, params={"cursor": sent}, headers={"x-api-key": key})
        assert_clean(response, path)
        assert response.status_code == 400 and response.json()["errors"][0]["field"] == "cursor", (path, response.text)


# --- the webhooks ----------------------------------------------------------------------------


def post_form(gateway: Gateway, path: str, pairs: list[tuple[str, str]], *, sign: str = "good") -> Any:
    """POST `pairs`, form-encoded, to a webhook: signed as Twilio would, badly, or not at all."""
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    return post_raw(gateway, path, body, sign=sign)


def post_raw(gateway: Gateway, path: str, body: bytes, *, sign: str = "good") -> Any:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if sign != "none":
        try:
            signed = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            signed = []
        signature = sign_twilio(PUBLIC_URL + path, signed)
        headers["x-twilio-signature"] = signature if sign == "good" else signature[::-1]
    return gateway.client.post(path, content=body, headers=headers)


def test_nul_in_a_form_key_keeps_the_stop(gateway: Gateway) -> None:
    for text in ("JOIN", "YES"):
        assert gateway.text(text, from_=PHONE).status_code == 200
    assert gateway.subs(PHONE) == {"deals": "subscribed"}
    params = twilio_inbound_params(Body="STOP", From=PHONE)
    response = post_form(gateway, "/webhooks/twilio", [*params.items(), ("X-Extra\x00", "v\x00")])
    assert response.status_code == 200, response.text
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    [raw] = gateway.query("SELECT body FROM inbound_messages WHERE message_id = :m", m=params["MessageSid"])
    assert raw.body == "STOP"


NUMBERS = [("superscript", "²"), ("arabic-indic", "٣"), ("fullwidth", "１"), ("10^30", HUGE), ("2^31", str(2**31)),
           ("negative", "-1")]


def test_webhook_numbers_out_of_range_are_a_400_naming_them(gateway: Gateway, subtests: pytest.Subtests) -> None:
    for name, value in NUMBERS:
        inbound = twilio_inbound_params(Body="hello")
        inbound["NumMedia"] = value  # the helper would read it as a count
        status = twilio_status_params("SM" + "0" * 32, "undelivered", ErrorCode=value)
        for path, params, field in [("/webhooks/twilio", inbound, "NumMedia"),
                                    ("/webhooks/twilio/status", status, "ErrorCode")]:
            with subtests.test(msg=f"{field}={name}"):
                response = post_form(gateway, path, list(params.items()))
                assert_clean(response, name)
                assert response.status_code == 400, response.text
                assert response.json()["errors"][0]["field"] == field, response.text
