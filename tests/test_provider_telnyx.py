"""The Telnyx adapter: captured payloads, Ed25519 signatures, and sends against FakeTelnyx."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidPayload
from app.providers.base import (
    DeliveryStatus,
    InboundSms,
    Media,
    OptOutSignal,
    OutboundSms,
    SendError,
    SendResult,
    StatusUpdate,
    WebhookProvider,
    WebhookRequest,
)
from app.providers.telnyx import ENV, STATUS_MAP, TelnyxProvider
from tests.fake_telnyx import (
    API_KEY,
    PROFILE_ID,
    FakeTelnyx,
    TelnyxKeys,
    event,
    fake_telnyx,  # noqa: F401  (the fixture)
    inbound_payload,
    status_payload,
)
from tests.fake_rest import outbound, refusal, send_all as send

DATA = Path(__file__).parent / "data" / "providers" / "telnyx"
URL = "https://optline.example/webhooks/telnyx"
TO = "+18665550100"
SENDER = "+18445550001"
CALLBACK = "https://optline.example/webhooks/telnyx/status"
def sms(to: str = TO, **kw: Any) -> OutboundSms:
    return outbound(to, sender=SENDER, callback=CALLBACK, **kw)


@pytest.fixture
def keys() -> TelnyxKeys:
    return TelnyxKeys()


def provider_for(fake: FakeTelnyx, keys: TelnyxKeys | None = None, **kw: Any) -> TelnyxProvider:
    options: dict[str, Any] = {"api_key": API_KEY, "public_key": (keys or TelnyxKeys()).public_key,
                               "api_url": fake.url, "timeout": 0.5}
    options.update(kw)
    return TelnyxProvider(**options)


def offline(keys: TelnyxKeys, **kw: Any) -> TelnyxProvider:
    """A provider for verify/parse tests: its API URL is never called."""
    return TelnyxProvider(api_key=API_KEY, public_key=keys.public_key, api_url="http://127.0.0.1:9", **kw)


def signed(keys: TelnyxKeys, body: bytes, timestamp: int | None = None) -> WebhookRequest:
    return WebhookRequest(url=URL, headers=keys.headers(body, timestamp), body=body)


def load(name: str) -> bytes:
    """The `body` of a captured payload file, serialised as Telnyx would post it."""
    document = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert document["source"], name
    return json.dumps(document["body"]).encode("utf-8")


# --- captured payloads ---------------------------------------------------------------------


CAPTURED: list[tuple[str, list[Any]]] = [
    ("inbound_sms.json", [
        {"type": InboundSms, "message_id": "7ee4241c-f127-47e5-9c34-3aac291f8058", "from_phone": "+18665550001",
         "to": "+18445550001", "body": "Hello, World!", "channel": "sms", "media": (), "num_media": 0,
         "opt_out_type": None, "account_id": "b448f9cc-a842-4784-98e9-03c1a5872950",
         "service_id": "0f512bda-ae1e-4597-8e11-e5f5686b97d3"},
    ]),
    ("inbound_mms.json", [
        {"type": InboundSms, "message_id": "f5d7a7e0-1234-5678-90ab-cdef12345678", "from_phone": "+12125550100",
         "to": "+13125550199", "body": "Check out this photo", "num_media": 1,
         "media": (Media("https://media.telnyx.com/abc123", "image/jpeg"),)},
    ]),
    ("inbound_stop_autoresponse.json", [
        {"type": InboundSms, "body": "STOP", "opt_out_type": "STOP", "from_phone": "+18665550001"},
    ]),
    ("delivery_sent_mms.json", [
        StatusUpdate("40385f64-5717-4562-b3fc-2c963f66afa6", DeliveryStatus.QUEUED, None),
    ]),
    ("finalized_delivered.json", [
        StatusUpdate("4031938d-d8ef-4a2c-bb5d-ae8e8e7c8d4c", DeliveryStatus.DELIVERED, None),
    ]),
    ("finalized_failed_40008.json", [
        StatusUpdate("40318f29-5c3f-4689-aa8a-4f41c6d49178", DeliveryStatus.UNDELIVERED, 40008),
    ]),
    ("finalized_blocked_40300.json", [
        StatusUpdate("0a1b2c3d-4e5f-4607-8819-2a3b4c5d6e7f", DeliveryStatus.FAILED, 40300),
        {"type": OptOutSignal, "provider": "telnyx", "phone": "+18665550001", "sender": "+18445550001",
         "kind": "STOP", "message_id": "0a1b2c3d-4e5f-4607-8819-2a3b4c5d6e7f", "error_code": 40300},
    ]),
]


@pytest.mark.parametrize(("name", "expected"), CAPTURED, ids=[name.removesuffix(".json") for name, _ in CAPTURED])
def test_captured_payloads_parse(keys: TelnyxKeys, name: str, expected: list[Any]) -> None:
    body = load(name)
    telnyx = offline(keys)
    request = signed(keys, body)

    assert telnyx.verify(request)
    events = telnyx.parse(request)

    assert len(events) == len(expected)
    for got, want in zip(events, expected, strict=True):
        if isinstance(want, dict):
            assert isinstance(got, want["type"])
            for name_, value in want.items():
                if name_ != "type":
                    assert getattr(got, name_) == value, name_
        else:
            assert got == want
        if isinstance(got, (InboundSms, OptOutSignal)):
            # The raw record: every field flattened to text, the sender's number among them.
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in got.params.items())
            assert got.params["data.event_type"] == json.loads(body)["data"]["event_type"]
    asyncio.run(telnyx.aclose())


def test_every_captured_file_is_in_the_table() -> None:
    assert sorted(p.name for p in DATA.glob("*.json")) == sorted(name for name, _ in CAPTURED)


# --- parsing: built payloads ----------------------------------------------------------------


PARSE_ERRORS: list[tuple[bytes, str]] = [
    (b"not json", "body"),
    (b"[1, 2]", "body"),
    (b'{"meta": {}}', "data"),
    (json.dumps({"data": {"payload": {}}}).encode(), "data.event_type"),
    (event("message.received", inbound_payload(from_="abc")), "data.payload.from.phone_number"),
    (event("message.received", {**inbound_payload(), "from": None}), "data.payload.from"),
    (event("message.received", {**inbound_payload(), "to": []}), "data.payload.to"),
    (event("message.received", {**inbound_payload(), "text": 5}), "data.payload.text"),
    (event("message.received", {**inbound_payload(), "type": "FAX"}), "data.payload.type"),
    (event("message.received", {**inbound_payload(), "media": [{"content_type": "image/png"}]}), "data.payload.media.0.url"),
    (event("message.finalized", status_payload("m1", "teleported")), "data.payload.to.0.status"),
    (event("message.sent", {**status_payload("m1", "sent"), "id": None}), "data.payload.id"),
]


@pytest.mark.parametrize(("body", "field"), PARSE_ERRORS, ids=[
    "not-json", "not-an-object", "no-data", "no-event-type", "from-abc", "from-null", "to-empty", "text-not-text",
    "unknown-type", "media-without-url", "unknown-status", "status-without-id",
])
def test_bad_payloads_name_the_field(keys: TelnyxKeys, body: bytes, field: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        offline(keys).parse(signed(keys, body))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (inbound_payload(text="  Stop please 🙏 "), {"body": "  Stop please 🙏 ", "opt_out_type": None}),
        (inbound_payload(text="stop", autoresponse_type="stop"), {"opt_out_type": "STOP"}),
        (inbound_payload(text="UNSTOP", autoresponse_type="START"), {"opt_out_type": "START"}),
        (inbound_payload(text="INFO", autoresponse_type="help"), {"opt_out_type": "HELP"}),
        (inbound_payload(text="PROMO", autoresponse_type="custom"), {"opt_out_type": None}),
        (inbound_payload(from_="+33 6 12 34 56 78"), {"from_phone": "+33612345678"}),
        (inbound_payload(to="384387"), {"to": "384387"}),  # a short code, as sent
        (inbound_payload(text=None, type="MMS", media=[{"url": "https://m.example/1", "content_type": "image/png"},
                                                       {"url": "https://m.example/2", "content_type": "video/mp4"}]),
         {"body": "", "num_media": 2, "media": (Media("https://m.example/1", "image/png"),
                                                Media("https://m.example/2", "video/mp4"))}),
        (inbound_payload(text=None, type="RCS", body={"text": "Hi from RCS"}), {"channel": "rcs", "body": "Hi from RCS"}),
        (inbound_payload(type="WHATSAPP"), {"channel": "whatsapp"}),
        (inbound_payload(text="a\x00b"), {"body": "a\ufffdb"}),
    ],
    ids=["verbatim-body", "autoresponse-stop", "autoresponse-start", "autoresponse-help", "autoresponse-custom",
         "from-with-spaces", "short-code-to", "media-only-mms", "rcs", "whatsapp", "nul-in-body"],
)
def test_inbound_fields(keys: TelnyxKeys, payload: dict[str, Any], expected: dict[str, Any]) -> None:
    (sms_in,) = offline(keys).parse(signed(keys, event("message.received", payload)))
    assert isinstance(sms_in, InboundSms) and sms_in.provider == "telnyx"
    for name, value in expected.items():
        assert getattr(sms_in, name) == value, name


@pytest.mark.parametrize("status", sorted(STATUS_MAP), ids=sorted(STATUS_MAP))
def test_every_status_is_mapped(keys: TelnyxKeys, status: str) -> None:
    (update,) = offline(keys).parse(signed(keys, event("message.finalized", status_payload("m1", status))))
    assert update == StatusUpdate("m1", STATUS_MAP[status], None)


def test_an_error_without_a_code_keeps_the_status(keys: TelnyxKeys) -> None:
    body = event("message.finalized", status_payload("m1", "delivery_failed", errors=[{"title": "Unreachable"}]))
    assert offline(keys).parse(signed(keys, body)) == [StatusUpdate("m1", DeliveryStatus.UNDELIVERED, None)]


def test_status_map_covers_the_openapi_statuses() -> None:
    assert set(STATUS_MAP) == {"queued", "sending", "sent", "expired", "sending_failed", "delivery_unconfirmed",
                               "delivered", "delivery_failed", "read"}


@pytest.mark.parametrize("event_type", ["call.initiated", "message.deleted", "10dlc.campaign.update"])
def test_events_we_do_not_act_on_parse_to_nothing(keys: TelnyxKeys, event_type: str) -> None:
    assert offline(keys).parse(signed(keys, event(event_type, {"id": "x"}))) == []


# --- signatures -----------------------------------------------------------------------------


def _tamper(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    return headers, body.replace(b"JOIN", b"STOP")


SIGNATURES: list[tuple[str, Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], bool]] = [
    ("good", lambda h, b: (h, b), True),
    ("missing-signature", lambda h, b: ({k: v for k, v in h.items() if k != "telnyx-signature-ed25519"}, b), False),
    ("missing-timestamp", lambda h, b: ({k: v for k, v in h.items() if k != "telnyx-timestamp"}, b), False),
    ("empty-signature", lambda h, b: ({**h, "telnyx-signature-ed25519": ""}, b), False),
    ("signature-not-base64", lambda h, b: ({**h, "telnyx-signature-ed25519": "not base64!"}, b), False),
    ("signature-too-short", lambda h, b: ({**h, "telnyx-signature-ed25519": "AAAA"}, b), False),
    ("timestamp-not-a-number", lambda h, b: ({**h, "telnyx-timestamp": "soon"}, b), False),
    ("timestamp-changed", lambda h, b: ({**h, "telnyx-timestamp": str(int(h["telnyx-timestamp"]) + 1)}, b), False),
    ("tampered-body", _tamper, False),
    ("trailing-byte", lambda h, b: (h, b + b" "), False),
]


@pytest.mark.parametrize(("case", "change", "valid"), SIGNATURES, ids=[c for c, _, _ in SIGNATURES])
def test_signature(keys: TelnyxKeys, case: str, change: Any, valid: bool) -> None:
    body = event("message.received", inbound_payload(text="JOIN"))
    headers, sent = change(keys.headers(body), body)
    assert offline(keys).verify(WebhookRequest(url=URL, headers=headers, body=sent)) is valid


@pytest.mark.parametrize(
    ("age", "valid"),
    [(0, True), (299, True), (-299, True), (301, False), (-301, False), (86400, False)],
    ids=["now", "almost-5-min-old", "almost-5-min-ahead", "expired", "too-far-ahead", "day-old-replay"],
)
def test_signature_timestamp_tolerance(keys: TelnyxKeys, age: int, valid: bool) -> None:
    now = 1_800_000_000
    body = event("message.received", inbound_payload())
    telnyx = offline(keys, clock=lambda: float(now))
    assert telnyx.verify(signed(keys, body, timestamp=now - age)) is valid


def test_signature_from_another_key_is_refused(keys: TelnyxKeys) -> None:
    body = event("message.received", inbound_payload())
    assert not offline(keys).verify(signed(TelnyxKeys(), body))


def test_without_a_public_key_every_webhook_is_refused(keys: TelnyxKeys) -> None:
    body = event("message.received", inbound_payload())
    telnyx = TelnyxProvider(api_key=API_KEY, public_key=None, api_url="http://127.0.0.1:9")
    assert not telnyx.verify(signed(keys, body))


@pytest.mark.parametrize("public_key", ["not base64!", "AAAA"], ids=["not-base64", "too-short"])
def test_a_malformed_public_key_is_refused_at_start(public_key: str) -> None:
    with pytest.raises(ValueError):
        TelnyxProvider(api_key=API_KEY, public_key=public_key)


# --- sending --------------------------------------------------------------------------------




def refused(provider: TelnyxProvider, message: OutboundSms | None = None) -> SendError:
    return refusal(provider, message or sms())


def test_send_speaks_the_wire_format(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    (result,) = send(provider_for(fake_telnyx), sms(body="Bienvenue 🎉 café"))

    (request,) = fake_telnyx.requests
    assert (request.method, request.path) == ("POST", "/v2/messages")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"to": TO, "text": "Bienvenue 🎉 café", "from": SENDER, "webhook_url": CALLBACK}
    (created,) = fake_telnyx.messages()
    assert result == SendResult(message_id=created.id, status="queued")


def test_send_through_a_messaging_profile(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    (result,) = send(provider_for(fake_telnyx), sms(from_number=None, service_id=PROFILE_ID, status_callback=None))

    (request,) = fake_telnyx.requests
    assert request.path == "/v2/messages/number_pool"
    assert request.json == {"to": TO, "text": sms().body, "messaging_profile_id": PROFILE_ID}
    assert isinstance(result, SendResult) and result.message_id == fake_telnyx.messages()[0].id


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (lambda f: f.fail(40300, to=TO), (40300, 409, False, True, None)),
        (lambda f: f.fail(10002, to=TO), (10002, 400, False, False, None)),
        (lambda f: f.fail(40001, to=TO), (40001, 400, False, False, None)),
        (lambda f: f.fail(10007), (10007, 500, True, False, None)),
        (lambda f: f.fail_http(503, body="<html>busy</html>"), (None, 503, True, False, None)),
        (lambda f: f.fail_http(502), (10007, 502, True, False, None)),
        (lambda f: f.rate_limit("2"), (10011, 429, True, False, 2.0)),
        (lambda f: f.rate_limit("0.5"), (10011, 429, True, False, 0.5)),
        (lambda f: f.rate_limit(None), (10011, 429, True, False, None)),
        (lambda f: f.rate_limit("soon"), (10011, 429, True, False, None)),
    ],
    ids=["opted-out-40300", "invalid-number", "not-routable", "unexpected-500", "503-html", "502",
         "429-retry-after-2", "429-retry-after-fraction", "429-no-retry-after", "429-unreadable-retry-after"],
)
def test_refusals_are_classified(fake_telnyx: FakeTelnyx, script: Any, expected: tuple[Any, ...]) -> None:  # noqa: F811
    script(fake_telnyx)
    error = refused(provider_for(fake_telnyx))
    assert (error.code, error.http_status, error.transient, error.opted_out, error.retry_after) == expected


def test_429_with_an_http_date_retry_after(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    fake_telnyx.rate_limit(formatdate(time.time() + 30, usegmt=True))
    error = refused(provider_for(fake_telnyx))
    assert error.retry_after is not None and 25 <= error.retry_after <= 30


def test_opted_out_recipient_only(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    fake_telnyx.fail(40300, to=TO, times=None)
    first, other, again = send(provider_for(fake_telnyx), sms(), sms(to="+18665550199"), sms())
    assert isinstance(first, SendError) and first.opted_out
    assert "existing block rule" in first.reason
    assert isinstance(other, SendResult)
    assert isinstance(again, SendError) and again.opted_out


def test_wrong_api_key_is_permanent(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    error = refused(provider_for(fake_telnyx, api_key="wrong"))
    assert (error.code, error.http_status, error.transient) == (10009, 401, False)


def test_timeout_is_transient(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    fake_telnyx.delay(2.0)
    error = refused(provider_for(fake_telnyx))
    # Raised at all: the answer (a success, after the delay) never arrived, the timeout ended the wait.
    assert (error.transient, error.kind, error.http_status) == (True, "timeout", None)


def test_dropped_connection_is_transient_and_the_next_send_reconnects(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    fake_telnyx.drop(to="+18665550111")
    first, dropped, after = send(provider_for(fake_telnyx), sms(), sms(to="+18665550111"), sms())
    assert isinstance(first, SendResult) and isinstance(after, SendResult)
    assert isinstance(dropped, SendError) and (dropped.transient, dropped.kind) == (True, "connection")
    assert fake_telnyx.requests[1].dropped
    assert len(fake_telnyx.messages()) == 2  # nothing retried behind the outbox's back


def test_unreachable_api_is_transient() -> None:
    with FakeTelnyx() as fake:
        url = fake.url
    error = refused(TelnyxProvider(api_key=API_KEY, public_key=None, api_url=url, timeout=0.5))
    assert (error.transient, error.kind) == (True, "connection")


def test_sends_reuse_one_connection(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    results = send(provider_for(fake_telnyx), *(sms(to=f"+1866555{n:04d}") for n in range(6)))
    assert all(isinstance(r, SendResult) for r in results)
    assert len({r.message_id for r in results if isinstance(r, SendResult)}) == 6
    assert fake_telnyx.connections == 1


def test_concurrent_sends_share_the_pool(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    telnyx = provider_for(fake_telnyx)

    async def scenario() -> list[SendResult]:
        try:
            return await asyncio.gather(*(telnyx.send(sms(to=f"+1866555{n:04d}")) for n in range(20)))
        finally:
            await telnyx.aclose()

    results = asyncio.run(scenario())
    assert len({r.message_id for r in results}) == 20
    assert 1 <= fake_telnyx.connections <= 20


def test_aclose_closes_and_later_sends_are_refused(fake_telnyx: FakeTelnyx) -> None:  # noqa: F811
    telnyx = provider_for(fake_telnyx)

    async def scenario() -> SendError:
        await telnyx.send(sms())
        await telnyx.aclose()
        with pytest.raises(SendError) as info:
            await telnyx.send(sms())
        return info.value

    error = asyncio.run(scenario())
    assert not error.transient
    assert len(fake_telnyx.requests) == 1


@pytest.mark.parametrize("api_url", ["api.telnyx.com", "ftp://api.telnyx.com", "http://"], ids=["no-scheme", "ftp", "no-host"])
def test_a_bad_api_url_is_refused(api_url: str) -> None:
    with pytest.raises(ValueError):
        TelnyxProvider(api_key=API_KEY, public_key=None, api_url=api_url)


def test_env_names() -> None:
    assert ENV == {"api_key": "TELNYX_API_KEY", "public_key": "TELNYX_PUBLIC_KEY"}


def test_it_is_a_webhook_provider() -> None:
    assert isinstance(offline(TelnyxKeys()), WebhookProvider)
