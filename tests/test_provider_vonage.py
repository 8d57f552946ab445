"""The Vonage adapter (Messages API): captured webhooks, signed-JWT webhooks, and sends against FakeVonage."""

from __future__ import annotations

import asyncio
import json
import time
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
from app.providers.vonage import ENV, STATUS_MAP, VonageProvider
from tests.fake_vonage import (
    API_KEY,
    API_SECRET,
    APPLICATION_ID,
    FakeVonage,
    VonageKeys,
    body_of,
    fake_vonage,  # noqa: F401  (the fixture)
    inbound_payload,
    status_payload,
    vonage_keys,  # noqa: F401  (the fixture)
)
from tests.fake_rest import outbound, refusal, send_all as send

DATA = Path(__file__).parent / "data" / "providers" / "vonage"
URL = "https://optline.example/webhooks/vonage"
TO = "+447700900123"
SENDER = "+447700900001"
CALLBACK = "https://optline.example/webhooks/vonage/status"
def sms(to: str = TO, **kw: Any) -> OutboundSms:
    return outbound(to, sender=SENDER, callback=CALLBACK, **kw)


def offline(keys: VonageKeys, **kw: Any) -> VonageProvider:
    options: dict[str, Any] = {"signature_secret": keys.signature_secret, "api_key": API_KEY, "api_secret": API_SECRET,
                               "api_url": "http://127.0.0.1:9"}
    options.update(kw)
    return VonageProvider(**options)


def signed(keys: VonageKeys, body: bytes, **kw: Any) -> WebhookRequest:
    return WebhookRequest(url=URL, headers=keys.webhook_headers(body, **kw), body=body)


def load(name: str) -> bytes:
    document = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert document["source"], name
    return json.dumps(document["body"]).encode("utf-8")


# --- captured webhooks ---------------------------------------------------------------------


CAPTURED: list[tuple[str, list[Any]]] = [
    ("inbound_sms.json", [
        {"type": InboundSms, "message_id": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "from_phone": "+447700900001",
         "to": "+447700900000", "body": "Hello, world!", "channel": "sms", "media": (), "opt_out_type": None},
    ]),
    ("inbound_mms_vcard.json", [
        {"type": InboundSms, "channel": "sms", "body": "", "num_media": 1,
         "media": (Media("ftp://example.com/contact.vcf", None),)},
    ]),
    ("status_submitted_throttled.json", [
        StatusUpdate("aaaaaaaa-bbbb-cccc-dddd-0123456789ab", DeliveryStatus.SENT, 1000),
    ]),
    ("status_delivered.json", [
        StatusUpdate("aaaaaaaa-bbbb-cccc-dddd-0123456789ab", DeliveryStatus.DELIVERED, None),
    ]),
    ("status_rejected_barred.json", [
        StatusUpdate("dddddddd-eeee-4fff-8aaa-0123456789ab", DeliveryStatus.FAILED, 1050),
    ]),
    ("status_rejected_opted_out.json", [
        StatusUpdate("cccccccc-dddd-4eee-8fff-0123456789ab", DeliveryStatus.FAILED, None),
        {"type": OptOutSignal, "provider": "vonage", "phone": "+447700900000", "sender": "+447700900001",
         "kind": "STOP", "message_id": "cccccccc-dddd-4eee-8fff-0123456789ab", "error_code": None},
    ]),
]


@pytest.mark.parametrize(("name", "expected"), CAPTURED, ids=[name.removesuffix(".json") for name, _ in CAPTURED])
def test_captured_webhooks_parse(vonage_keys: VonageKeys, name: str, expected: list[Any]) -> None:  # noqa: F811
    body = load(name)
    vonage = offline(vonage_keys)
    request = signed(vonage_keys, body)

    assert vonage.verify(request)
    events = vonage.parse(request)

    assert len(events) == len(expected)
    for got, want in zip(events, expected, strict=True):
        if isinstance(want, dict):
            assert isinstance(got, want["type"])
            for field_name, value in want.items():
                if field_name != "type":
                    assert getattr(got, field_name) == value, field_name
            assert got.params["message_uuid"] == json.loads(body)["message_uuid"]
        else:
            assert got == want


def test_every_captured_file_is_in_the_table() -> None:
    assert sorted(p.name for p in DATA.glob("*.json")) == sorted(name for name, _ in CAPTURED)


# --- parsing: built payloads ----------------------------------------------------------------


PARSE_ERRORS: list[tuple[bytes, str]] = [
    (b"not json", "body"),
    (b"[]", "body"),
    (body_of(inbound_payload(message_uuid=None)), "message_uuid"),
    (body_of(inbound_payload(**{"from": "abc"})), "from"),
    (body_of(inbound_payload(**{"from": None})), "from"),
    (body_of(inbound_payload(to=None)), "to"),
    (body_of(inbound_payload(channel="pigeon")), "channel"),
    (body_of(inbound_payload(text=7)), "text"),
    (body_of(inbound_payload(message_type="image", text=None)), "image.url"),
    (body_of(status_payload("m1", "exploded")), "status"),
    (body_of(status_payload("m1", "rejected", error="boom")), "error"),
    (body_of(status_payload("m1", "rejected", to="x", error={"title": "opted out"})), "to"),
]


@pytest.mark.parametrize(("body", "field"), PARSE_ERRORS, ids=[
    "not-json", "not-an-object", "no-uuid", "from-abc", "no-from", "no-to", "unknown-channel", "text-not-text",
    "image-without-url", "unknown-status", "error-not-an-object", "opted-out-to-not-a-number",
])
def test_bad_payloads_name_the_field(vonage_keys: VonageKeys, body: bytes, field: str) -> None:  # noqa: F811
    with pytest.raises(InvalidPayload) as info:
        offline(vonage_keys).parse(signed(vonage_keys, body))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (inbound_payload(text="  Stop please 🙏 "), {"body": "  Stop please 🙏 "}),
        (inbound_payload(**{"from": "33612345678"}), {"from_phone": "+33612345678"}),
        (inbound_payload(to="384387"), {"to": "384387"}),
        (inbound_payload(channel="mms", message_type="image", text=None,
                         image={"url": "https://m.example/1.jpg", "caption": "look"}),
         {"body": "look", "num_media": 1, "media": (Media("https://m.example/1.jpg", None),)}),
        (inbound_payload(channel="whatsapp"), {"channel": "whatsapp"}),
        (inbound_payload(text="a\x00b"), {"body": "a\ufffdb"}),
    ],
    ids=["verbatim-body", "from-country-code", "short-code-to", "mms-image-caption", "whatsapp", "nul-in-body"],
)
def test_inbound_fields(vonage_keys: VonageKeys, payload: dict[str, Any], expected: dict[str, Any]) -> None:  # noqa: F811
    (sms_in,) = offline(vonage_keys).parse(signed(vonage_keys, body_of(payload)))
    assert isinstance(sms_in, InboundSms) and sms_in.provider == "vonage"
    for name, value in expected.items():
        assert getattr(sms_in, name) == value, name


@pytest.mark.parametrize("status", sorted(STATUS_MAP), ids=sorted(STATUS_MAP))
def test_every_status_is_mapped(vonage_keys: VonageKeys, status: str) -> None:  # noqa: F811
    (update,) = offline(vonage_keys).parse(signed(vonage_keys, body_of(status_payload("m1", status))))
    assert update == StatusUpdate("m1", STATUS_MAP[status], None)


@pytest.mark.parametrize(
    ("status", "error", "opted_out"),
    [
        ("rejected", {"type": "https://developer.nexmo.com/api-errors/messages-olympus#9", "title": 9}, True),
        ("rejected", {"title": "Unsubscribed", "detail": "The user has unsubscribed"}, True),
        ("undeliverable", {"detail": "recipient opted-out"}, True),
        ("rejected", {"title": 1050, "detail": "Number barred"}, False),
        ("delivered", {"detail": "opted out"}, False),  # a delivered text is never an opt-out
    ],
    ids=["code-9", "unsubscribed-words", "opted-out-words", "barred", "delivered"],
)
def test_opt_out_reports(vonage_keys: VonageKeys, status: str, error: dict[str, Any], opted_out: bool) -> None:  # noqa: F811
    events = offline(vonage_keys).parse(signed(vonage_keys, body_of(status_payload("m1", status, error=error))))
    assert any(isinstance(e, OptOutSignal) for e in events) is opted_out


# --- signatures -----------------------------------------------------------------------------


def test_signature_good(vonage_keys: VonageKeys) -> None:  # noqa: F811
    body = body_of(inbound_payload())
    assert offline(vonage_keys).verify(signed(vonage_keys, body))


def _with_auth(value: str | None) -> Any:
    def change(headers: dict[str, str], body: bytes, keys: VonageKeys) -> tuple[dict[str, str], bytes]:
        if value is None:
            return {k: v for k, v in headers.items() if k != "authorization"}, body
        return {**headers, "authorization": value}, body
    return change


SIGNATURES: list[tuple[str, Any]] = [
    ("missing", _with_auth(None)),
    ("empty", _with_auth("")),
    ("basic-not-bearer", _with_auth("Basic YWJjOmRlZg==")),
    ("not-a-jwt", _with_auth("Bearer not.a.jwt")),
    ("tampered-body", lambda h, b, k: (h, b.replace(b"JOIN", b"STOP"))),
    ("wrong-secret", lambda h, b, k: (k.webhook_headers(b, secret="another-secret-of-32-bytes-length!"), b)),
    ("hash-of-another-body", lambda h, b, k: (k.webhook_headers(b"{}"), b)),
    ("no-payload-hash", lambda h, b, k: (k.webhook_headers(b, payload_hash=""), b)),
    ("expired-iat", lambda h, b, k: (k.webhook_headers(b, iat=time.time() - 301), b)),
    ("future-iat", lambda h, b, k: (k.webhook_headers(b, iat=time.time() + 301), b)),
    ("day-old-replay", lambda h, b, k: (k.webhook_headers(b, iat=time.time() - 86400), b)),
]


@pytest.mark.parametrize(("case", "change"), SIGNATURES, ids=[c for c, _ in SIGNATURES])
def test_bad_signatures_are_refused(vonage_keys: VonageKeys, case: str, change: Any) -> None:  # noqa: F811
    body = body_of(inbound_payload(text="JOIN"))
    headers, sent = change(vonage_keys.webhook_headers(body), body, vonage_keys)
    assert not offline(vonage_keys).verify(WebhookRequest(url=URL, headers=headers, body=sent))


def test_without_a_signature_secret_every_webhook_is_refused(vonage_keys: VonageKeys) -> None:  # noqa: F811
    body = body_of(inbound_payload())
    assert not offline(vonage_keys, signature_secret=None).verify(signed(vonage_keys, body))


# --- sending --------------------------------------------------------------------------------


def provider_for(fake: FakeVonage, **kw: Any) -> VonageProvider:
    options: dict[str, Any] = {"signature_secret": fake.keys.signature_secret, "application_id": APPLICATION_ID,
                               "private_key": fake.keys.private_pem, "api_url": fake.url, "timeout": 0.5}
    options.update(kw)
    return VonageProvider(**options)




def refused(provider: VonageProvider, message: OutboundSms | None = None) -> SendError:
    return refusal(provider, message or sms())


def test_send_speaks_the_wire_format(fake_vonage: FakeVonage) -> None:  # noqa: F811
    (result,) = send(provider_for(fake_vonage), sms(body="Bienvenue 🎉 café"))

    (request,) = fake_vonage.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["authorization"].startswith("Bearer ")
    assert request.json == {"message_type": "text", "channel": "sms", "to": TO[1:], "from": SENDER[1:],
                            "text": "Bienvenue 🎉 café", "webhook_url": CALLBACK}
    (created,) = fake_vonage.messages()
    assert created.auth == "jwt"
    assert result == SendResult(message_id=created.message_uuid, status="accepted")


def test_send_with_api_key_and_secret(fake_vonage: FakeVonage) -> None:  # noqa: F811
    vonage = provider_for(fake_vonage, application_id=None, private_key=None, api_key=API_KEY, api_secret=API_SECRET)
    (result,) = send(vonage, sms())
    assert isinstance(result, SendResult)
    assert [m.auth for m in fake_vonage.messages()] == ["basic"]


def test_one_application_jwt_serves_many_sends(fake_vonage: FakeVonage) -> None:  # noqa: F811
    results = send(provider_for(fake_vonage), *(sms(to=f"+4477009{n:05d}") for n in range(5)))
    assert all(isinstance(r, SendResult) for r in results)
    assert len({r.headers["authorization"] for r in fake_vonage.requests}) == 1
    assert fake_vonage.connections == 1  # and one connection


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (lambda f: f.fail(1020, "Invalid params", "The value of the `to` parameter is invalid."), (1020, 422, False, None)),
        (lambda f: f.fail(1120, "Invalid sender", "The `from` parameter is invalid for the given channel."), (1120, 422, False, None)),
        (lambda f: f.fail(1000, "Throttled", "You have exceeded the submission capacity", status=422), (1000, 422, True, None)),
        (lambda f: f.fail_http(500), (1030, 500, True, None)),
        (lambda f: f.fail_http(503, body="<html>busy</html>"), (None, 503, True, None)),
        (lambda f: f.rate_limit("1"), (1010, 429, True, 1.0)),
        (lambda f: f.rate_limit(None), (1010, 429, True, None)),
    ],
    ids=["invalid-params", "illegal-sender", "throttled-1000", "500", "503-html", "429-retry-after", "429-no-retry-after"],
)
def test_refusals_are_classified(fake_vonage: FakeVonage, script: Any, expected: tuple[Any, ...]) -> None:  # noqa: F811
    script(fake_vonage)
    error = refused(provider_for(fake_vonage))
    assert (error.code, error.http_status, error.transient, error.retry_after) == expected
    assert not error.opted_out  # Vonage reports an opted-out recipient in the status webhook


def test_wrong_credentials_are_permanent(fake_vonage: FakeVonage) -> None:  # noqa: F811
    error = refused(provider_for(fake_vonage, private_key=VonageKeys(slot=1).private_pem))
    assert (error.http_status, error.transient) == (401, False)


def test_a_messaging_service_is_refused_without_a_request(fake_vonage: FakeVonage) -> None:  # noqa: F811
    error = refused(provider_for(fake_vonage), sms(from_number=None, service_id="MG123"))
    assert not error.transient and fake_vonage.requests == []


def test_timeout_is_transient(fake_vonage: FakeVonage) -> None:  # noqa: F811
    fake_vonage.delay(2.0)
    error = refused(provider_for(fake_vonage))
    # Raised at all: the answer (a success, after the delay) never arrived, the timeout ended the wait.
    assert (error.transient, error.kind) == (True, "timeout")


def test_dropped_connection_is_transient(fake_vonage: FakeVonage) -> None:  # noqa: F811
    fake_vonage.drop(to="447700900111")
    first, dropped, after = send(provider_for(fake_vonage), sms(), sms(to="+447700900111"), sms())
    assert isinstance(first, SendResult) and isinstance(after, SendResult)
    assert isinstance(dropped, SendError) and (dropped.transient, dropped.kind) == (True, "connection")
    assert len(fake_vonage.messages()) == 2


def test_unreachable_api_is_transient(vonage_keys: VonageKeys) -> None:  # noqa: F811
    with FakeVonage(vonage_keys) as fake:
        url = fake.url
    error = refused(VonageProvider(signature_secret=None, api_key=API_KEY, api_secret=API_SECRET, api_url=url, timeout=0.5))
    assert (error.transient, error.kind) == (True, "connection")


def test_aclose_closes_and_later_sends_are_refused(fake_vonage: FakeVonage) -> None:  # noqa: F811
    vonage = provider_for(fake_vonage)

    async def scenario() -> SendError:
        await vonage.send(sms())
        await vonage.aclose()
        with pytest.raises(SendError) as info:
            await vonage.send(sms())
        return info.value

    assert not asyncio.run(scenario()).transient
    assert len(fake_vonage.requests) == 1


def test_credentials_are_required() -> None:
    with pytest.raises(ValueError):
        VonageProvider(signature_secret="s", api_key=API_KEY)


def test_env_names() -> None:
    assert ENV == {"application_id": "VONAGE_APPLICATION_ID", "private_key": "VONAGE_PRIVATE_KEY",
                   "api_key": "VONAGE_API_KEY", "api_secret": "VONAGE_API_SECRET",
                   "signature_secret": "VONAGE_SIGNATURE_SECRET"}


def test_it_is_a_webhook_provider() -> None:
    assert isinstance(offline(VonageKeys()), WebhookProvider)
