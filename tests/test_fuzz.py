"""No input a client can send produces a 5xx: every route and both Twilio webhooks, fuzzed on both engines.

Three parts. The known reproductions (deep JSON, non-ASCII digits, forged cursors,
out-of-range numbers, NUL in paths, filters, JSON and form keys, far-off UTC offsets) are
a table, each case with the answer it must get. A sweep bends every query parameter, path
parameter, body field and webhook field of a valid request, one at a time, with each kind
of bad value. And hypothesis throws combinations at every route with every method, and at
the webhooks unsigned, badly signed and correctly signed. Whatever comes back must be below
500, and every 4xx application/problem+json. Everything is deterministic (hypothesis is
derandomised) and bounded; OPTLINE_FUZZ_EXAMPLES=2000 runs a deeper hypothesis search.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
    *(case(Call("GET", p, params={name: "a\x00b"}), {400, 422}, id=f"nul-filter-{name}-{p}")
      for p, names in [("/v1/subscriptions", ("program", "phoneNumber", "status")),
                       ("/v1/consent-events", ("program", "phoneNumber", "since")),
                       ("/v1/profiles", ("program", "status", "updatedSince")), ("/v1/messages", ("phoneNumber",))]
      for name in names),
    case(Call("POST", "/v1/subscriptions/opt-in",
              body=_with(CONSENT, consentProof={"termsUrl": "https://acme.example/\x00"})), {422}, id="nul-consent-proof"),
    case(Call("POST", "/v1/subscriptions/opt-in", body=_with(CONSENT, consentProof={"termsUrl": "t", "note\x00": "x"})),
         {422}, id="nul-consent-proof-key"),
    case(Call("POST", "/v1/subscriptions/opt-in", body=_with(CONSENT, consentSource="web\x00")), {422},
         id="nul-consent-source"),
    case(Call("POST", "/v1/profiles", body=_json({"externalId": "a\x00"})), {422}, id="nul-external-id"),
    case(Call("POST", "/v1/profiles", body=_json({"externalId": "n1", "attributes": {"k\x00": 1}})), {422},
         id="nul-attribute-key"),
    case(Call("POST", "/v1/profiles", body=_json({"externalId": "n2", "attributes": {"k": ["\x00"]}})), {422},
         id="nul-attribute-value"),
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


def test_a_time_filter_at_any_offset_means_the_same_instant(gateway: Gateway, key: str) -> None:
    # -20:24 is a real ISO 8601 offset that PostgreSQL refuses to bind; it is turned into UTC first.
    [event] = gateway.client.get("/v1/consent-events", headers={"x-api-key": key}).json()["items"]
    [profile] = gateway.client.get("/v1/profiles", headers={"x-api-key": key}).json()["items"]
    for path, name, at, field in [("/v1/consent-events", "since", event["createdAt"], "createdAt"),
                                  ("/v1/profiles", "updatedSince", profile["updatedAt"], "updatedAt")]:
        instant = datetime.fromisoformat(at.replace("Z", "+00:00"))
        far_west = timezone(-timedelta(hours=20, minutes=24))
        for moved, found in [(timedelta(0), [at]), (timedelta(seconds=1), [])]:
            since = (instant + moved).astimezone(far_west).isoformat()
            items = gateway.client.get(path, params={name: since}, headers={"x-api-key": key}).json()["items"]
            assert [i[field] for i in items] == found, (path, since)


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


# --- the fuzz ----------------------------------------------------------------------------------
#
# Requests are built from valid ones, then bent: a field replaced by any JSON value, a key
# added, a number written in other digits; or a body that is not JSON at all. Valid starts
# reach the code behind validation (the database, the consent rules), where the 500s were.

SETTINGS = settings(
    max_examples=int(os.environ.get("OPTLINE_FUZZ_EXAMPLES", "120")), deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
NASTY = [
    "", " ", "\x00", "a\x00b", "²", "٣", "１２", "-1", "0", "1e9", HUGE, "9" * 5000, "😀", "null", "[]", "%", "%00",
    "%ZZ", "%C3", "prof_", "crm-1", PHONE, "14155550123", "+1", "ada@example.com", "deals", "news", "subscribed",
    "unsubscribed", "pendingDOI", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00-20:24", "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59", "2026-13-45", "../", "/", "a/b", "\u202e", "ﬀ", "İ", "\ufeff", "\U0010ffff",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
text = st.one_of(st.sampled_from(NASTY), st.sampled_from(NASTY), st.text(max_size=12))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**31 - 2, max_value=2**80),
                   st.floats(allow_nan=False, allow_infinity=False), text)
json_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=8)
RAW_BODIES = [
    deep(), deep(40), b"{" + b'"a":{' * 40 + b"}" * 41, b'{"items": ' + deep() + b"}", b'{"externalId": "\\ud800"}',
    b'{"\\udc00": 1}', b'{"externalId": "\\u0000"}', b"", b"{", b'{"externalId": "x"', b"\xff\xfe", b"NaN",
    b'{"a": Infinity}', b"[]", b"null", b'"x"', b"1" * 5000, b'{"items": [' + b'{"externalId": "b"},' * 3 + b"1]}",
]
PROFILE = {"externalId": "crm-1", "phoneNumber": PHONE, "email": "ada@example.com", "firstName": "Ada",
           "lastName": "L", "timezone": "Europe/Paris", "attributes": {"plan": "gold", "n": 1}}
TEMPLATES: dict[str, dict[str, Any]] = {
    "profile": PROFILE,
    "batch": {"items": [PROFILE, {"externalId": "crm-2"}]},
    "opt-in": {**CONSENT, "doubleOptIn": True},
    "opt-out": {"phoneNumber": PHONE, "program": "deals", "notify": True},
    "contact": {"channels": {"sms": {"programs": {"deals": {"subscribeStatus": "subscribed"},
                                                  "news": {"subscribeStatus": "unsubscribed"}}}}},
    # The vendor dialects (app/dialects), each in its vendor's shape.
    "noticia-profile": {"externalId": "crm-1", "phoneNumber": PHONE, "firstName": "Ada", "attributes": {"tier": "gold"}},
    "noticia-opt-in": {**{k: v for k, v in CONSENT.items() if k != "program"}, "profileId": "crm-1"},
    "noticia-opt-out": {"phoneNumber": PHONE, "program": "deals"},
    "synerise-client": {"email": "ada@example.com", "phone": PHONE, "customId": "crm-1", "firstName": "Ada",
                        "city": "Krakow", "sex": "FEMALE", "agreements": {"email": True, "sms": False},
                        "attributes": {"a": 1}, "tags": ["vip"]},
    "synerise-batch": [{"email": "ada@example.com", "firstName": "Ada"}, {"customId": "crm-2"}],  # type: ignore[dict-item]
    "cordial-contact": {"channels": {"sms": {"address": "14155550123", "programs": {
        "deals": {"keyword": "JOIN", "subscribeStatus": "subscribed"}, "news": {"subscribeStatus": "unsubscribed"}}}}},
    "sonar-customer": {"phone_number": PHONE, "email": "ada@example.com", "first_name": "Ada",
                       "picture_url": "http://pics.example/ada.png", "properties": {"a": "b"},
                       "timezone": "America/Los_Angeles"},
    "send-check": {"items": [{"phoneNumber": PHONE, "program": "deals", "at": "2026-01-01T00:00:00Z"},
                             {"phoneNumber": OTHER, "program": "news"}]},
    "sends": {"items": [{"phoneNumber": PHONE, "program": "deals", "sentAt": "2026-01-01T00:00:00Z",
                         "externalId": "c-1"}]},
    "opt-out-import": [{"phoneNumber": PHONE, "optedOutAt": "2026-01-01T00:00:00Z", "program": "news"},
                       {"phoneNumber": OTHER}],
}


@dataclass(frozen=True)
class Op:
    """A route as the fuzz sees it: its path, the methods it serves, its query names and body template."""

    path: str
    methods: tuple[str, ...]
    query: tuple[str, ...] = ()
    body: str | None = None
    auth: str = "x-api-key"  # how the route takes its key: x-api-key, bearer, basic or x-token


def auth_headers(style: str, key: str) -> dict[str, str]:
    """The key as a route of `style` takes it."""
    if style == "bearer":
        return {"authorization": f"Bearer {key}"}
    if style == "basic":
        return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    if style == "x-token":
        return {"x-token": key}
    return {"x-api-key": key}


LIST = ("limit", "cursor")
OPS = [
    Op("/v1/subscriptions", ("GET",), (*LIST, "phoneNumber", "program", "status")),
    Op("/v1/consent-events", ("GET",), (*LIST, "phoneNumber", "program", "since")),
    Op("/v1/profiles", ("GET",), (*LIST, "updatedSince", "program", "status")),
    Op("/v1/profiles", ("POST",), body="profile"),
    Op("/v1/profiles/batch", ("POST",), body="batch"),
    Op("/v1/profiles/by-phone/{phone}", ("GET",)),
    Op("/v1/profiles/by-email/{email}", ("GET",)),
    Op("/v1/profiles/{ref:path}", ("GET", "DELETE")),
    Op("/v1/profiles/{ref:path}", ("PATCH",), body="profile"),
    Op("/v1/subscriptions/opt-in", ("POST",), body="opt-in"),
    Op("/v1/subscriptions/opt-out", ("POST",), body="opt-out"),
    Op("/v1/contacts/{phone}", ("GET",)),
    Op("/v1/contacts/{phone}", ("PUT",), body="contact"),
    Op("/v1/programs", ("GET",)),
    Op("/v1/messages", ("GET",), (*LIST, "phoneNumber")),
    Op("/v1/send-check", ("POST",), body="send-check"),
    Op("/v1/sends", ("POST",), body="sends"),
    Op("/v1/opt-outs/import", ("POST",), body="opt-out-import"),
    Op("/v1/opt-outs", ("GET",), (*LIST, "since", "format")),
    Op("/v1/contacts/{phone}/evidence", ("GET",)),
    Op("/v1/contacts/{phone}/erase", ("POST",)),
    Op("/v1/ledger/checkpoints", ("GET",), ("limit", "before")),
    *(Op(path, ("GET",)) for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")),
    Op("/compat/noticia/v1/profiles", ("POST",), body="noticia-profile"),
    Op("/compat/noticia/v1/profiles/{ref:path}", ("GET",)),
    Op("/compat/noticia/v1/subscriptions/opt-in", ("POST",), body="noticia-opt-in"),
    Op("/compat/noticia/v1/subscriptions/opt-out", ("POST",), body="noticia-opt-out"),
    Op("/compat/synerise/v4/clients", ("POST",), body="synerise-client", auth="bearer"),
    Op("/compat/synerise/v4/clients/batch", ("POST",), body="synerise-batch", auth="bearer"),
    Op("/compat/synerise/crm/v1/list", ("GET",), ("limit",), auth="bearer"),
    *(op for segment in ("by-email/", "by-phone/", "by-customId/", "by-uuid/", "") for op in (
        Op(f"/compat/synerise/v4/clients/{segment}{{value}}", ("GET", "DELETE"), auth="bearer"),
        Op(f"/compat/synerise/v4/clients/{segment}{{value}}", ("POST",), body="synerise-client", auth="bearer"))),
    Op("/compat/cordial/v2/contacts", ("POST",), body="cordial-contact", auth="basic"),
    Op("/compat/cordial/v2/contacts/{key}", ("GET",), auth="basic"),
    Op("/compat/cordial/v2/contacts/{key}", ("PUT",), body="cordial-contact", auth="basic"),
    Op("/compat/sonar/api/v1/customers", ("POST",), body="sonar-customer", auth="x-token"),
]
WEBHOOKS = {"/webhooks/twilio": ("POST",), "/webhooks/twilio/status": ("POST",)}
# Every other provider's routes: fuzzed with each provider's own signed payloads in test_provider_fuzz.py.
# GET only tells a Vonage SMS API account to switch (tests/test_vonage_sms_api.py fuzzes it).
PROVIDER_WEBHOOKS = {"/webhooks/{provider}": ("GET", "POST"), "/webhooks/{provider}/status": ("GET", "POST")}
PATH_VALUES = {"ref": ["crm-1", "crm-2", "prof_00000000000000000000000000"], "phone": [PHONE, OTHER, "14155550123"],
               "email": ["ada@example.com", "ADA@example.com"], "key": ["sms:14155550123", "14155550123", PHONE],
               "value": ["ada@example.com", "crm-1", PHONE, "2149203825", "24f539a0-d257-11ea-92f0-23c0f0aec77f"]}


def test_the_fuzz_covers_every_route(gateway_factory: Any, sqlite_url: str) -> None:
    app = gateway_factory(sqlite_url).client.app
    served = {(r.path, m) for r in app.routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    fuzzed = {(op.path, m) for op in OPS for m in op.methods} | {
        (p, m) for p, ms in (WEBHOOKS | PROVIDER_WEBHOOKS).items() for m in ms}
    assert served == fuzzed


@st.composite
def bent(draw: st.DrawFn, template: dict[str, Any]) -> Any:
    """`template` with a few fields replaced, added, removed, or inside objects bent the same way."""
    value: Any = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(0, 3))):
        target = value
        # Walk into a nested object (consentProof, attributes, items.0, channels.sms...) now and then.
        while isinstance(target, (dict, list)) and target and draw(st.booleans()):
            child = (target[draw(st.sampled_from(sorted(target)))] if isinstance(target, dict)
                     else target[draw(st.integers(0, len(target) - 1))])
            if not isinstance(child, (dict, list)):
                break
            target = child
        if isinstance(target, dict):
            names = sorted(target) + ["extra", "items", "\x00", "attributes"]
            name = draw(st.sampled_from(names) | text)
            if draw(st.integers(0, 4)) == 0:
                target.pop(name, None)
            else:
                target[name] = draw(json_value)
        elif isinstance(target, list):
            target.append(draw(json_value))
    return value


GOOD_QUERY = {"limit": ["1", "2", "1000"], "phoneNumber": [PHONE, "14155550123"], "program": ["deals", "news"],
              "status": ["subscribed", "unsubscribed"], "since": ["2020-01-01T00:00:00Z"],
              "updatedSince": ["2020-01-01T00:00:00+02:00"], "cursor": [""]}


def often(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], bad_in: int = 3) -> Any:
    """Mostly `good`, one time in `bad_in` `bad`: most of a request stays valid, so the bent part gets far."""
    return draw(bad) if draw(st.integers(1, bad_in)) == 1 else draw(good)


@st.composite
def api_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for TestClient.request: any route, any method, bent query, path and body."""
    op = draw(st.sampled_from(OPS))
    if op.body is None and not op.query and draw(st.booleans()):
        op = draw(st.sampled_from([o for o in OPS if o.body or o.query]))  # where the input goes furthest
    method = often(draw, st.sampled_from(op.methods), st.sampled_from(METHODS), 10)
    path = op.path.replace(":path", "")
    for name, known in PATH_VALUES.items():
        if "{" + name + "}" in path:
            raw = often(draw, st.sampled_from(known), text)
            path = path.replace("{" + name + "}", quote(raw, safe="") if draw(st.booleans()) else quote(raw))
    params: list[tuple[str, str]] = []
    for name in draw(st.lists(st.sampled_from(op.query), max_size=3, unique=True)) if op.query else []:
        params.append((name, often(draw, st.sampled_from(GOOD_QUERY[name]), text)))
    if draw(st.integers(0, 5)) == 0:
        params.append((draw(text), draw(text)))  # a parameter nobody asked for, or a name repeated
    headers: dict[str, Any] = {}
    content: bytes | None = None
    if op.body is not None or draw(st.integers(0, 9)) == 0:
        kind = draw(st.sampled_from(["bent"] * 5 + ["any", "raw", "raw"]))
        if kind == "bent":
            content = json.dumps(draw(bent(TEMPLATES[op.body or "profile"]))).encode()
        elif kind == "any":
            content = json.dumps(draw(json_value)).encode()
        else:
            content = draw(st.sampled_from(RAW_BODIES))
        headers["content-type"] = often(draw, st.just("application/json"), st.sampled_from(
            ["application/merge-patch+json", "text/plain", "application/x-www-form-urlencoded", "", "json"]), 8)
    if draw(st.integers(0, 9)) == 0:
        # Bytes: a header is latin-1 on the wire, and httpx would encode a str as ASCII.
        headers["idempotency-key"] = often(draw, st.text(st.characters(min_codepoint=32, max_codepoint=255),
                                                         max_size=12), st.text(max_size=300), 6).encode("latin-1", "replace")
    return {"method": method, "url": path, "params": params, "content": content, "headers": headers,
            "auth": often(draw, st.just("key"), st.sampled_from(["other", "bearer", "none", "garbage"]), 8),
            "style": op.auth}


def test_no_request_to_the_api_is_a_5xx(gateway: Gateway, key: str) -> None:
    other = make_key(gateway, "bistro")
    gateway.client.post("/v1/profiles", json={"externalId": "crm-2"}, headers={"x-api-key": key})
    gateway.text("YES", from_=PHONE)
    cursors = [gateway.client.get(p, params={"limit": 1}, headers={"x-api-key": key}).json()["nextCursor"]
               for p in ("/v1/profiles", "/v1/consent-events")]
    assert all(cursors)

    @SETTINGS
    @given(request=api_requests(), cursor=st.sampled_from(cursors))
    def check(request: dict[str, Any], cursor: str) -> None:
        auth = request.pop("auth")
        style = request.pop("style")
        headers = request["headers"]
        if auth in ("key", "other"):
            headers.update(auth_headers(style, key if auth == "key" else other))
        elif auth == "bearer":
            headers["authorization"] = f"Bearer {key}"
        elif auth == "garbage":
            headers["x-api-key"] = "olk_deadbeef_garbage"
        # A real cursor, perhaps another route's.
        request["params"] = [(n, cursor if n == "cursor" and v == "" else v) for n, v in request["params"]]
        response = gateway.client.request(**request)
        assert_clean(response, f"{request['method']} {request['url']} {request['params']!r} {request['content']!r:.300}")

    check()


# --- the sweep: every field of every route bent one at a time --------------------------------
#
# The random requests above find combinations; this sweep guarantees that each query
# parameter, path parameter and body field meets each kind of bad value at least once, with
# the rest of the request valid. Deterministic, so it is a table in all but name.

BAD_TEXT = ["\x00", "a\x00b", "²", "٣", "１２", HUGE, "-1", "0", "9" * 5000, "", "😀", "%",
            "2026-01-01T00:00:00-20:24", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "null"]
BAD_PATH = ["\x00", "a\x00b", "²", HUGE, "9" * 300, "😀", "%", "..", "a/b", " ", "\u202e"]
BAD_JSON: list[Any] = [None, True, -1, 10**30, 1e308, "", "\x00", "a\x00", "\ud800", "²", "x" * 6000, [], {},
                       {"\x00": "\x00"}, json.loads(deep(40))]


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value, containers included, the root excepted."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found: list[tuple[Any, ...]] = []
    for key, child in children:
        found += [(*path, key), *leaf_paths(child, (*path, key))]
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


def sweep(op: Op) -> list[dict[str, Any]]:
    """Requests for `op` with one thing bent each: a query parameter, a path parameter, a body field or the body."""
    path = op.path.replace(":path", "")
    names = [n for n in PATH_VALUES if "{" + n + "}" in path]
    good_path = path
    for name in names:
        good_path = good_path.replace("{" + name + "}", quote(PATH_VALUES[name][0], safe=""))
    requests: list[dict[str, Any]] = []
    for method in op.methods:
        body = json.dumps(TEMPLATES[op.body]).encode() if op.body else None
        for name in names:
            requests += [{"method": method, "url": path.replace("{" + name + "}", quote(bad, safe="")), "content": body}
                         for bad in BAD_PATH]
        requests += [{"method": method, "url": good_path, "params": {name: bad}, "content": body}
                     for name in op.query for bad in BAD_TEXT]
        if op.body:
            template = TEMPLATES[op.body]
            requests += [{"method": method, "url": good_path, "content": json.dumps(replaced(template, at, bad)).encode()}
                         for at in leaf_paths(template) for bad in BAD_JSON]
            # A NUL in a field name (an opt-out import is a bare array: one of its rows carries it).
            extra = ({**template, "extra\x00": 1} if isinstance(template, dict)
                     else [*template, {"phoneNumber": PHONE, "extra\x00": 1}])
            requests += [{"method": method, "url": good_path, "content": json.dumps(extra).encode()}]
            requests += [{"method": method, "url": good_path, "content": raw} for raw in RAW_BODIES]
    return [{**r, "style": op.auth} for r in requests]


def test_every_field_of_every_route_bent_one_at_a_time(gateway: Gateway, key: str) -> None:
    # Deletes last, so the profile the other requests name is there for them.
    requests = [r for op in sorted(OPS, key=lambda o: "DELETE" in o.methods) for r in sweep(op)]
    failures = []
    for request in requests:
        style = request.pop("style")
        response = gateway.client.request(**request, headers={**auth_headers(style, key),
                                                              "content-type": "application/json"})
        if response.status_code >= 500 or (
                response.status_code >= 400 and not response.headers.get("content-type", "").startswith(PROBLEM)):
            failures.append(f"{response.status_code} {request['method']} {request['url'][:80]} "
                            f"{request.get('params')!r:.80} {request.get('content')!r:.200}: {response.text[:200]}")
    assert not failures, f"{len(failures)} of {len(requests)}:\n" + "\n".join(failures[:30])


# --- the webhooks, fuzzed -----------------------------------------------------------------------

BAD_FORM = ["\x00", "a\x00", "STOP\x00", "²", "٣", "１", HUGE, "-1", "", " ", "😀" * 50, "x" * 2000, "%", "%4", "%ZZ",
            "whatsapp:+14155550123", "messenger:123", "tel:+14155550123", "++14155550123", "+1-800-FLOWERS", "null"]
EXTRA_KEYS = ["X\x00", "\x00", "NumMedia", "MediaUrl0", "MediaContentType0", "OptOutType", "ErrorCode", "😀", ""]
# Fragments appended to a body as they are, unencoded: cut-off percent-encoding, bare keys, empty fields.
JUNK = ["%", "%4", "%ZZ", "%C3", "%FF%FE", "=", "&&", "a=%", "%00=%00", "+", "Body", "Body=%E2%82", "From=%00"]
STATUSES = ["delivered", "undelivered", "failed", "sent", "read", "DELIVERED", "bogus"]
WEBHOOK_SETTINGS = settings(SETTINGS, max_examples=max(1, SETTINGS.max_examples // 2))


def inbound_pairs(body: str = "STOP", from_: str = PHONE) -> list[tuple[str, str]]:
    return list(twilio_inbound_params(Body=body, From=from_).items())


def status_pairs(sid: str, status: str = "undelivered") -> list[tuple[str, str]]:
    return list(twilio_status_params(sid, status, ErrorCode="21610").items())


def encode(pairs: list[tuple[str, str]], junk: str = "") -> bytes:
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs)
    return (body + ("&" + junk if junk else "")).encode()


def test_every_webhook_field_bent_one_at_a_time(gateway: Gateway) -> None:
    gateway.text("JOIN", from_=PHONE)
    gateway.drain()
    sids = [m.sid for m in gateway.fake.messages()]
    assert sids
    forms = [("/webhooks/twilio", inbound_pairs), ("/webhooks/twilio/status", lambda: status_pairs(sids[0]))]
    requests: list[tuple[str, bytes]] = []
    for path, make in forms:
        base = make()
        for index, (name, _) in enumerate(base):
            requests += [(path, encode([*base[:index], (name, bad), *base[index + 1:]])) for bad in BAD_FORM]
        requests += [(path, encode([*make(), (name, bad)])) for name in EXTRA_KEYS for bad in BAD_FORM[:8]]
        requests += [(path, encode(make(), junk)) for junk in JUNK]
        requests += [(path, encode(make() + make()))]  # every key twice, with two MessageSids
    failures = []
    for path, body in requests:
        response = post_raw(gateway, path, body)
        if response.status_code >= 500 or (
                response.status_code >= 400 and not response.headers.get("content-type", "").startswith(PROBLEM)):
            failures.append(f"{response.status_code} {path} {body!r:.300}: {response.text[:200]}")
    assert not failures, f"{len(failures)} of {len(requests)}:\n" + "\n".join(failures[:30])


@st.composite
def webhook_requests(draw: st.DrawFn, sids: list[str]) -> tuple[str, bytes, str]:
    """(path, raw body, how it is signed): a real form with keys and values bent, repeated or added."""
    path = draw(st.sampled_from(list(WEBHOOKS)))
    if path == "/webhooks/twilio":
        body = draw(st.sampled_from(["STOP", "JOIN", "YES", "HELP", "START", "stop please", "Stop\x00"]) | text)
        from_ = often(draw, st.sampled_from([PHONE, OTHER, "+447700900123", "whatsapp:+14155550123"]), text)
        pairs = inbound_pairs(body, from_)
    else:
        pairs = status_pairs(draw(st.sampled_from(sids)), draw(st.sampled_from(STATUSES) | text))
        pairs = [(k, often(draw, st.sampled_from(["21610", "30003", "0"]), text) if k == "ErrorCode" else v)
                 for k, v in pairs]
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "add", "repeat", "drop"]))
        index = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        if action == "set" and pairs:
            pairs[index] = (pairs[index][0], draw(text))
        elif action == "add":
            pairs.append((draw(st.sampled_from(EXTRA_KEYS) | text), draw(text)))
        elif action == "repeat" and pairs:
            pairs.append((pairs[index][0], draw(text)))
        elif pairs:
            pairs.pop(index)
    junk = draw(st.sampled_from(["", "", "", *JUNK]))
    return path, encode(pairs, junk), draw(st.sampled_from(["good", "good", "good", "bad", "none"]))


def test_no_request_to_the_webhooks_is_a_5xx(gateway: Gateway) -> None:
    gateway.text("JOIN", from_=PHONE)
    gateway.drain()
    sids = [m.sid for m in gateway.fake.messages()] + ["SM" + "0" * 32]

    @WEBHOOK_SETTINGS
    @given(request=webhook_requests(sids))
    def check(request: tuple[str, bytes, str]) -> None:
        path, body, sign = request
        response = post_raw(gateway, path, body, sign=sign)
        assert_clean(response, f"{path} ({sign}) {body!r:.300}")
        if sign != "good":
            assert response.status_code == 403, response.text

    check()
