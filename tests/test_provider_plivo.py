"""The Plivo adapter: captured callbacks, V3 signatures, and sends against FakePlivo."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

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
from app.providers.plivo import ENV, STATUS_MAP, PlivoProvider
from tests.fake_plivo import (
    AUTH_ID,
    AUTH_TOKEN,
    POWERPACK,
    FakePlivo,
    fake_plivo,  # noqa: F401  (the fixture)
    form_body,
    inbound_pairs,
    sign_plivo,
    signed_headers,
    status_pairs,
)
from tests.fake_rest import outbound, refusal, send_all as send

DATA = Path(__file__).parent / "data" / "providers" / "plivo"
URL = "https://optline.example/webhooks/plivo"
TO = "+14155550100"
SENDER = "+14155550199"
CALLBACK = "https://optline.example/webhooks/plivo/status"
def sms(to: str = TO, **kw: Any) -> OutboundSms:
    return outbound(to, sender=SENDER, callback=CALLBACK, **kw)


def offline() -> PlivoProvider:
    return PlivoProvider(auth_id=AUTH_ID, auth_token=AUTH_TOKEN, api_url="http://127.0.0.1:9")


def request_for(pairs: list[tuple[str, str]], url: str = URL, headers: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(url=url, headers=headers if headers is not None else signed_headers(url, pairs),
                          body=form_body(pairs), form=tuple(pairs))


def load(name: str) -> list[tuple[str, str]]:
    """The form of a captured callback file (its # lines cite the source)."""
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# source: "), name
    (body,) = [line for line in lines if line and not line.startswith("#")]
    return parse_qsl(body, keep_blank_values=True)


# --- captured callbacks --------------------------------------------------------------------


CAPTURED: list[tuple[str, list[Any]]] = [
    # This 2017 capture's numbers have no leading 1: Plivo posts numbers with their country
    # code and no "+" (the other captures), so 4795961111 reads as +47 (Norway), possible there.
    ("inbound_sms.txt", [
        {"type": InboundSms, "message_id": "7a242edc-2f57-11e7-98c9-06ab0bf64327", "from_phone": "+4795961111",
         "to": "+4759440448", "body": "Msg", "channel": "sms", "num_media": 0, "media": (), "opt_out_type": None},
    ]),
    ("inbound_short_code.txt", [
        {"type": InboundSms, "message_id": "abc1234", "from_phone": "+60124361111", "to": "2020", "body": "Hello"},
    ]),
    ("inbound_mms.txt", [
        {"type": InboundSms, "body": "Look at this", "num_media": 2, "channel": "sms",
         "media": (Media("https://media.plivo.com/Account/MAXXXX/Media/a1", None),
                   Media("https://media.plivo.com/Account/MAXXXX/Media/b2", None))},
    ]),
    ("inbound_stop_intent.txt", [
        {"type": InboundSms, "body": "STOP", "opt_out_type": "STOP", "from_phone": "+14155550123"},
    ]),
    ("status_delivered.txt", [
        StatusUpdate("83876bdb-2033-4876-bfaf-0ff8693705af", DeliveryStatus.DELIVERED, None),
    ]),
    ("status_undelivered_20.txt", [
        StatusUpdate("7d2e3f40-1f2e-11ee-9a3f-0242ac110003", DeliveryStatus.UNDELIVERED, 20),
    ]),
    ("status_failed_dnd_200.txt", [
        StatusUpdate("6c1d2e3f-1f2e-11ee-9a3f-0242ac110003", DeliveryStatus.FAILED, 200),
        {"type": OptOutSignal, "provider": "plivo", "phone": "+14155550123", "sender": "+14155550100", "kind": "STOP",
         "message_id": "6c1d2e3f-1f2e-11ee-9a3f-0242ac110003", "error_code": 200},
    ]),
]


@pytest.mark.parametrize(("name", "expected"), CAPTURED, ids=[name.removesuffix(".txt") for name, _ in CAPTURED])
def test_captured_callbacks_parse(name: str, expected: list[Any]) -> None:
    pairs = load(name)
    plivo = offline()
    request = request_for(pairs)

    assert plivo.verify(request)
    events = plivo.parse(request)

    assert len(events) == len(expected)
    for got, want in zip(events, expected, strict=True):
        if isinstance(want, dict):
            assert isinstance(got, want["type"])
            for field_name, value in want.items():
                if field_name != "type":
                    assert getattr(got, field_name) == value, field_name
            assert got.params == dict(pairs)
        else:
            assert got == want
    asyncio.run(plivo.aclose())


def test_every_captured_file_is_in_the_table() -> None:
    assert sorted(p.name for p in DATA.glob("*.txt")) == sorted(name for name, _ in CAPTURED)


# --- parsing: built forms ----------------------------------------------------------------------


PARSE_ERRORS: list[tuple[list[tuple[str, str]], str]] = [
    (inbound_pairs(MessageUUID=None), "MessageUUID"),
    (inbound_pairs(MessageUUID=""), "MessageUUID"),
    (inbound_pairs(From="MTN"), "From"),
    (inbound_pairs(From=None), "From"),
    (inbound_pairs(To=None), "To"),
    (inbound_pairs(Type="fax"), "Type"),
    (inbound_pairs(Type="mms", MediaCount="two"), "MediaCount"),
    (inbound_pairs(Type="mms", MediaCount="2", Media1="https://m.example/1"), "Media2"),
    (status_pairs("u1", "UNKNOWN"), "Status"),
    (status_pairs("u1", ""), "Status"),
    (status_pairs("u1", "failed", ErrorCode="x1"), "ErrorCode"),
    (status_pairs("u1", "failed", ErrorCode="200", To="abc"), "To"),
]


@pytest.mark.parametrize(("pairs", "field"), PARSE_ERRORS, ids=[
    "no-uuid", "empty-uuid", "from-not-a-number", "no-from", "no-to", "unknown-type", "media-count-not-a-number",
    "media-missing", "unknown-status", "empty-status", "error-code-not-a-number", "opted-out-to-not-a-number",
])
def test_bad_callbacks_name_the_field(pairs: list[tuple[str, str]], field: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        offline().parse(request_for(pairs))
    assert info.value.field == field


def test_a_body_that_is_not_a_form_is_refused() -> None:
    request = WebhookRequest(url=URL, headers={}, body=b'{"a": 1}', form=None)
    with pytest.raises(InvalidPayload) as info:
        offline().parse(request)
    assert info.value.field == "body"


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (inbound_pairs(Text="  Stop please 🙏 "), {"body": "  Stop please 🙏 ", "opt_out_type": None}),
        (inbound_pairs(Text="START", MessageIntent="optin"), {"opt_out_type": "START"}),
        (inbound_pairs(Text="HELP", MessageIntent="help"), {"opt_out_type": "HELP"}),
        (inbound_pairs(MessageIntent="something-new"), {"opt_out_type": None}),
        (inbound_pairs(From="+33 6 12 34 56 78"), {"from_phone": "+33612345678"}),
        (inbound_pairs(To="384387"), {"to": "384387"}),
        (inbound_pairs(Type="mms", Text=None, Body=None, MediaCount="1", Media1="https://m.example/1"),
         {"body": "", "num_media": 1, "media": (Media("https://m.example/1", None),)}),
        (inbound_pairs(Type="whatsapp", Text=None, Body="hola", MediaCount="1", Media1="https://m.example/v",
                       MimeType="video/mp4"),
         {"channel": "whatsapp", "body": "hola", "media": (Media("https://m.example/v", "video/mp4"),)}),
        (inbound_pairs(PowerpackUUID=POWERPACK), {"service_id": POWERPACK}),
        (inbound_pairs(Text="a\x00b"), {"body": "a\ufffdb"}),
    ],
    ids=["verbatim-body", "intent-optin", "intent-help", "intent-unknown", "from-with-spaces", "short-code-to",
         "media-only-mms", "whatsapp-media", "powerpack", "nul-in-body"],
)
def test_inbound_fields(pairs: list[tuple[str, str]], expected: dict[str, Any]) -> None:
    (sms_in,) = offline().parse(request_for(pairs))
    assert isinstance(sms_in, InboundSms) and sms_in.provider == "plivo"
    for name, value in expected.items():
        assert getattr(sms_in, name) == value, name


@pytest.mark.parametrize("status", sorted(STATUS_MAP), ids=sorted(STATUS_MAP))
def test_every_status_is_mapped(status: str) -> None:
    (update,) = offline().parse(request_for(status_pairs("u1", status)))
    assert update == StatusUpdate("u1", STATUS_MAP[status], None)


@pytest.mark.parametrize(("code", "expected"), [("", None), ("000", None), ("30", 30), ("200", 200)],
                         ids=["blank", "success-000", "spam", "dnd"])
def test_error_codes(code: str, expected: int | None) -> None:
    update = offline().parse(request_for(status_pairs("u1", "failed", ErrorCode=code)))[0]
    assert isinstance(update, StatusUpdate) and update.error_code == expected


# --- signatures -----------------------------------------------------------------------------


def test_the_fake_signs_exactly_like_the_sdk() -> None:
    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

    from app.providers.plivo import _signed_params

    for url in (URL, URL + "?brand=acme&a=1"):
        pairs = [*inbound_pairs(Text="JOIN now"), ("Tag", "b"), ("Tag", "a")]
        canonical = construct_post_url(url, _signed_params(tuple(pairs))).decode()
        sdk = get_signature_v3(AUTH_TOKEN.encode(), canonical, b"n0nce").decode()
        assert sign_plivo(url, pairs, "n0nce") == sdk


def _without(name: str) -> Any:
    return lambda headers, pairs, url: ({k: v for k, v in headers.items() if k != name}, pairs, url)


SIGNATURES: list[tuple[str, Any, bool]] = [
    ("good", lambda h, p, u: (h, p, u), True),
    ("missing-signature", _without("x-plivo-signature-v3"), False),
    ("missing-nonce", _without("x-plivo-signature-v3-nonce"), False),
    ("other-nonce", lambda h, p, u: ({**h, "x-plivo-signature-v3-nonce": "another"}, p, u), False),
    ("tampered-param", lambda h, p, u: (h, [(k, "STOP" if k == "Text" else v) for k, v in p], u), False),
    ("extra-param", lambda h, p, u: (h, [*p, ("MessageIntent", "optout")], u), False),
    ("missing-param", lambda h, p, u: (h, [(k, v) for k, v in p if k != "Units"], u), False),
    ("other-url", lambda h, p, u: (h, p, u + "?brand=acme"), False),
    ("wrong-token", lambda h, p, u: (signed_headers(u, p, "another-token"), p, u), False),
    ("one-of-several", lambda h, p, u: ({**h, "x-plivo-signature-v3": "bm9wZQ==," + h["x-plivo-signature-v3"]}, p, u), True),
    ("garbage", lambda h, p, u: ({**h, "x-plivo-signature-v3": "\u00e9\u00e9"}, p, u), False),
]


@pytest.mark.parametrize(("case", "change", "valid"), SIGNATURES, ids=[c for c, _, _ in SIGNATURES])
def test_signature(case: str, change: Any, valid: bool) -> None:
    pairs = inbound_pairs(Text="JOIN")
    headers, received, url = change(signed_headers(URL, pairs), pairs, URL)
    assert offline().verify(request_for(received, url=url, headers=headers)) is valid


def test_signature_counts_every_value_of_a_repeated_parameter() -> None:
    pairs = [*inbound_pairs(), ("Tag", "b"), ("Tag", "a")]
    headers = signed_headers(URL, pairs)
    assert offline().verify(request_for(pairs, headers=headers))
    assert not offline().verify(request_for(pairs[:-1], headers=headers))


def test_a_replayed_callback_still_verifies() -> None:
    """V3 has no timestamp; a replay is stopped by the stored message UUID, not here (see the module)."""
    pairs = inbound_pairs()
    request = request_for(pairs)
    assert offline().verify(request) and offline().verify(request)


def test_a_form_less_request_is_refused() -> None:
    pairs = inbound_pairs()
    request = WebhookRequest(url=URL, headers=signed_headers(URL, pairs), body=b"{}", form=None)
    assert not offline().verify(request)


# --- sending --------------------------------------------------------------------------------


def provider_for(fake: FakePlivo, **kw: Any) -> PlivoProvider:
    options: dict[str, Any] = {"auth_id": AUTH_ID, "auth_token": AUTH_TOKEN, "api_url": fake.url, "timeout": 0.5}
    options.update(kw)
    return PlivoProvider(**options)




def refused(provider: PlivoProvider) -> SendError:
    return refusal(provider, sms())


def test_send_speaks_the_wire_format(fake_plivo: FakePlivo) -> None:  # noqa: F811
    (result,) = send(provider_for(fake_plivo), sms(body="Bienvenue 🎉 café"))

    (request,) = fake_plivo.requests
    assert (request.method, request.path) == ("POST", f"/v1/Account/{AUTH_ID}/Message/")
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"dst": TO, "text": "Bienvenue 🎉 café", "src": SENDER, "url": CALLBACK, "method": "POST"}
    (created,) = fake_plivo.messages()
    assert result == SendResult(message_id=created.uuid, status="queued")


def test_send_through_a_powerpack(fake_plivo: FakePlivo) -> None:  # noqa: F811
    (result,) = send(provider_for(fake_plivo), sms(from_number=None, service_id=POWERPACK, status_callback=None))
    assert fake_plivo.requests[0].json == {"dst": TO, "text": sms().body, "powerpack_uuid": POWERPACK}
    assert isinstance(result, SendResult)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (lambda f: f.refuse(400, "invalid_parameter: dst"), (400, False, None)),
        (lambda f: f.refuse(404, "not found"), (404, False, None)),
        (lambda f: f.fail_http(500), (500, True, None)),
        (lambda f: f.fail_http(503, body="<html>busy</html>"), (503, True, None)),
        (lambda f: f.rate_limit("3"), (429, True, 3.0)),
        (lambda f: f.rate_limit(None), (429, True, None)),
    ],
    ids=["400", "404", "500", "503-html", "429-retry-after", "429-no-retry-after"],
)
def test_refusals_are_classified(fake_plivo: FakePlivo, script: Any, expected: tuple[Any, ...]) -> None:  # noqa: F811
    script(fake_plivo)
    error = refused(provider_for(fake_plivo))
    assert (error.http_status, error.transient, error.retry_after) == expected
    assert not error.opted_out  # Plivo reports an opted-out recipient in the callback, never here


def test_429_with_an_http_date_retry_after(fake_plivo: FakePlivo) -> None:  # noqa: F811
    fake_plivo.rate_limit(formatdate(time.time() + 60, usegmt=True))
    error = refused(provider_for(fake_plivo))
    assert error.retry_after is not None and 55 <= error.retry_after <= 60


def test_wrong_credentials_are_permanent(fake_plivo: FakePlivo) -> None:  # noqa: F811
    error = refused(provider_for(fake_plivo, auth_token="wrong"))
    assert (error.http_status, error.transient, error.reason) == (401, False, "authentication_failed")


def test_timeout_is_transient(fake_plivo: FakePlivo) -> None:  # noqa: F811
    fake_plivo.delay(2.0)
    error = refused(provider_for(fake_plivo))
    # Raised at all: the answer (a success, after the delay) never arrived, the timeout ended the wait.
    assert (error.transient, error.kind) == (True, "timeout")


def test_dropped_connection_is_transient(fake_plivo: FakePlivo) -> None:  # noqa: F811
    fake_plivo.drop(to="+14155550111")
    first, dropped, after = send(provider_for(fake_plivo), sms(), sms(to="+14155550111"), sms())
    assert isinstance(first, SendResult) and isinstance(after, SendResult)
    assert isinstance(dropped, SendError) and (dropped.transient, dropped.kind) == (True, "connection")
    assert len(fake_plivo.messages()) == 2


def test_unreachable_api_is_transient() -> None:
    with FakePlivo() as fake:
        url = fake.url
    error = refused(PlivoProvider(auth_id=AUTH_ID, auth_token=AUTH_TOKEN, api_url=url, timeout=0.5))
    assert (error.transient, error.kind) == (True, "connection")


def test_sends_reuse_one_connection(fake_plivo: FakePlivo) -> None:  # noqa: F811
    results = send(provider_for(fake_plivo), *(sms(to=f"+1415555{n:04d}") for n in range(6)))
    assert all(isinstance(r, SendResult) for r in results)
    assert fake_plivo.connections == 1


def test_aclose_closes_and_later_sends_are_refused(fake_plivo: FakePlivo) -> None:  # noqa: F811
    plivo = provider_for(fake_plivo)

    async def scenario() -> SendError:
        await plivo.send(sms())
        await plivo.aclose()
        with pytest.raises(SendError) as info:
            await plivo.send(sms())
        return info.value

    assert not asyncio.run(scenario()).transient
    assert len(fake_plivo.requests) == 1


def test_missing_credentials_are_refused() -> None:
    with pytest.raises(ValueError):
        PlivoProvider(auth_id=AUTH_ID, auth_token="")


def test_env_names() -> None:
    assert ENV == {"auth_id": "PLIVO_AUTH_ID", "auth_token": "PLIVO_AUTH_TOKEN"}


def test_it_is_a_webhook_provider() -> None:
    assert isinstance(offline(), WebhookProvider)
