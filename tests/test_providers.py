"""Provider adapters: the real twilio library against FakeTwilio, payload parsing, signatures, console."""

from __future__ import annotations

import asyncio

import base64
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from starlette.datastructures import FormData
from twilio.rest import Client

from app.errors import InvalidPayload
from app.providers.base import (
    DeliveryStatus,
    InboundSms,
    Media,
    OutboundSms,
    Provider,
    SendError,
    SendResult,
    StatusUpdate,
)
from app.providers.console import ConsoleProvider
from app.providers.twilio import (
    ERROR_UNSUBSCRIBED,
    STATUS_MAP,
    TwilioProvider,
    TwilioSignature,
    parse_inbound,
    parse_status,
    send_error,
)
from tests.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SERVICE_SID,
    FakeTwilio,
    fake_twilio,  # noqa: F401  (the fixture)
    sign_twilio,
    twilio_inbound_params,
    twilio_status_params,
)

TO = "+14155550100"
OTHER = "+14155550199"
SENDER = "+15005550006"
CALLBACK = "https://optline.example/webhooks/twilio/status"
WEBHOOK_URL = "https://optline.example/webhooks/twilio"


def sms(to: str = TO, body: str = "You're in! Reply STOP to opt out.", **kw: Any) -> OutboundSms:
    """An outbound text from SENDER unless a service_id is given."""
    fields: dict[str, Any] = {"from_number": SENDER, "service_id": None, "status_callback": CALLBACK}
    fields.update(kw)
    return OutboundSms(to=to, body=body, **fields)


@pytest.fixture
def provider(fake_twilio: FakeTwilio) -> Iterator[TwilioProvider]:  # noqa: F811
    with TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=fake_twilio.url, timeout=0.5) as twilio:
        yield twilio


def send_refused(provider: TwilioProvider, message: OutboundSms | None = None) -> SendError:
    """The SendError a send raises (failing the test when it succeeds)."""
    with pytest.raises(SendError) as info:
        provider.send(message or sms())
    return info.value


# --- TwilioProvider.send against the fake API ----------------------------------------------


def test_send_from_number_speaks_the_wire_format(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:  # noqa: F811
    result = provider.send(sms(body="Bienvenue 🎉 café"))

    (request,) = fake_twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()
    ).decode()
    assert request.form == {"To": TO, "From": SENDER, "Body": "Bienvenue 🎉 café", "StatusCallback": CALLBACK}
    (created,) = fake_twilio.messages()
    assert result == SendResult(message_id=created.sid, status="queued")
    assert created.sid.startswith("SM") and len(created.sid) == 34
    assert isinstance(provider, Provider)


def test_send_through_messaging_service(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:  # noqa: F811
    result = provider.send(sms(from_number=None, service_id=SERVICE_SID, status_callback=None))

    (request,) = fake_twilio.requests
    assert request.form == {"To": TO, "MessagingServiceSid": SERVICE_SID, "Body": sms().body}
    (created,) = fake_twilio.messages(to=TO)
    assert created.service_id == SERVICE_SID and created.from_ is None
    # The API answers "accepted" while the service has not picked a sender yet.
    assert result == SendResult(message_id=created.sid, status="accepted")


def test_unsubscribed_recipient_is_opted_out_not_transient(
    provider: TwilioProvider, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    fake_twilio.fail(ERROR_UNSUBSCRIBED, to=TO, times=None)
    caplog.set_level(logging.INFO, logger="optline.twilio")

    error = send_refused(provider)
    assert (error.code, error.http_status, error.opted_out, error.transient) == (21610, 400, True, False)
    assert error.reason == "Attempt to send to unsubscribed recipient"
    # Only that recipient is refused; the rule stays for every later send to it.
    assert provider.send(sms(to=OTHER)).message_id
    assert send_refused(provider).opted_out
    assert [m.to for m in fake_twilio.messages()] == [OTHER]
    assert TO not in caplog.text and "+1415***0100" in caplog.text


@pytest.mark.parametrize("code", [21211, 21408, 21614, 21612], ids=["invalid-to", "region", "not-mobile", "unreachable"])
def test_refusals_with_a_4xx_code_are_permanent(provider: TwilioProvider, fake_twilio: FakeTwilio, code: int) -> None:  # noqa: F811
    fake_twilio.fail(code, to=TO)

    error = send_refused(provider)
    assert (error.code, error.http_status, error.transient, error.opted_out) == (code, 400, False, False)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [(429, None, 20429), (500, None, 20500), (503, None, 20503), (502, "<html>Bad gateway</html>", None)],
    ids=["429", "500", "503", "502-html"],
)
def test_rate_limits_and_server_errors_are_transient(
    provider: TwilioProvider, fake_twilio: FakeTwilio, status: int, body: str | None, code: int | None  # noqa: F811
) -> None:
    fake_twilio.fail_http(status, body=body)

    error = send_refused(provider)
    assert (error.http_status, error.code, error.transient, error.opted_out) == (status, code, True, False)
    assert provider.send(sms()).message_id  # the fault applied once


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("soon", None), (None, None)],
                         ids=["seconds", "unreadable", "absent"])
def test_a_429_carries_its_retry_after_on_both_clients(
    provider: TwilioProvider, fake_twilio: FakeTwilio, header: str | None, expected: float | None  # noqa: F811
) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    fake_twilio.fail_http(429, headers=headers, times=2)
    assert send_refused(provider).retry_after == expected  # requests, from a thread

    async def send_async() -> SendError:
        try:
            await provider.send_async(sms())
        except SendError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError("the 429 was not refused")

    assert asyncio.run(send_async()).retry_after == expected  # aiohttp, on a loop


def test_timeout_is_transient(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:  # noqa: F811
    fake_twilio.delay(2.0)
    error = send_refused(provider)
    # Raised at all: the answer (a success, after the delay) never arrived, the timeout ended the wait.
    assert (error.transient, error.http_status, error.code) == (True, None, None)
    assert "0.5s" in error.reason


def test_dropped_connection_is_transient_and_the_next_send_reconnects(
    provider: TwilioProvider, fake_twilio: FakeTwilio  # noqa: F811
) -> None:
    provider.send(sms())  # leaves a pooled keep-alive connection that the fault then cuts
    fake_twilio.drop()

    error = send_refused(provider)
    assert (error.transient, error.http_status) == (True, None)
    assert fake_twilio.requests[1].dropped
    assert provider.send(sms()).message_id
    assert len(fake_twilio.messages()) == 2  # nothing was retried behind our back


def test_wrong_credentials_are_permanent(fake_twilio: FakeTwilio) -> None:  # noqa: F811
    with TwilioProvider(ACCOUNT_SID, "not-the-token", api_url=fake_twilio.url, timeout=0.5) as twilio:
        error = send_refused(twilio)
    assert (error.http_status, error.code, error.transient) == (401, 20003, False)


def test_api_validation_errors_are_permanent(provider: TwilioProvider) -> None:
    error = send_refused(provider, sms(body=""))
    assert (error.code, error.transient) == (21602, False)


def test_unreachable_api_is_transient() -> None:
    with FakeTwilio() as fake:
        url = fake.url  # the port is free again once the fake is closed
    with TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=url, timeout=0.5) as twilio:
        error = send_refused(twilio)
    assert (error.transient, error.http_status) == (True, None)


def test_twilio_region_and_edge_do_not_redirect_sends(
    fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    # The library on its own would rewrite the host from these variables.
    stock = Client(ACCOUNT_SID, AUTH_TOKEN)
    assert stock.get_hostname("https://api.twilio.com/x") == "https://api.sydney.au1.twilio.com/x"
    stock.http_client.session.close()  # type: ignore[attr-defined]

    with TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=fake_twilio.url, timeout=0.5) as twilio:
        result = twilio.send(sms())
    assert [m.sid for m in fake_twilio.messages()] == [result.message_id]


def test_concurrent_sends_from_several_threads(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:  # noqa: F811
    results: list[SendResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(5):
            try:
                result = provider.send(sms(to=f"+1415555{n:02d}{i:02d}"))
            except BaseException as exc:  # reported below, not lost in the thread
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({r.message_id for r in results}) == 40
    assert len(fake_twilio.wait_for(40, timeout=1.0)) == 40


def test_a_closed_provider_refuses_to_send(provider: TwilioProvider) -> None:
    provider.close()
    assert not send_refused(provider).transient


@pytest.mark.parametrize("api_url", ["api.twilio.com", "ftp://api.twilio.com", "http://"], ids=["no-scheme", "ftp", "no-host"])
def test_provider_refuses_a_bad_api_url(api_url: str) -> None:
    with pytest.raises(ValueError):
        TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=api_url)


@pytest.mark.parametrize(
    ("http_status", "code", "transient", "opted_out"),
    [
        (400, 21610, False, True),
        (400, 21211, False, False),
        (404, 20404, False, False),
        (400, None, False, False),
        (429, 20429, True, False),
        (500, None, True, False),
        (503, 20503, True, False),
        (500, 21211, False, False),  # a permanent code wins over a 5xx
    ],
    ids=["21610", "21211", "404", "400-bare", "429", "500-bare", "503", "5xx-permanent-code"],
)
def test_error_classification(http_status: int, code: int | None, transient: bool, opted_out: bool) -> None:
    error = send_error(http_status, code, "")
    assert (error.transient, error.opted_out, error.code, error.http_status) == (transient, opted_out, code, http_status)
    assert error.reason == f"Twilio answered HTTP {http_status}"


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_number", "service_id"), [(None, None), (SENDER, SERVICE_SID)], ids=["neither", "both"]
)
def test_outbound_needs_exactly_one_sender(from_number: str | None, service_id: str | None) -> None:
    with pytest.raises(ValueError):
        OutboundSms(to=TO, body="hi", from_number=from_number, service_id=service_id, status_callback=None)


@pytest.mark.parametrize(
    ("current", "new", "advances"),
    [
        (None, DeliveryStatus.QUEUED, True),
        (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, True),
        (DeliveryStatus.QUEUED, DeliveryStatus.SENT, True),
        (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, True),
        (DeliveryStatus.SENDING, DeliveryStatus.FAILED, True),
        (DeliveryStatus.DELIVERED, DeliveryStatus.SENT, False),
        (DeliveryStatus.SENT, DeliveryStatus.QUEUED, False),
        (DeliveryStatus.SENT, DeliveryStatus.SENT, False),
        (DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, False),
        (DeliveryStatus.FAILED, DeliveryStatus.DELIVERED, False),
    ],
    ids=lambda v: str(v),
)
def test_delivery_status_only_moves_forward(current: DeliveryStatus | None, new: DeliveryStatus, advances: bool) -> None:
    assert new.advances(current) is advances


def test_final_delivery_statuses() -> None:
    assert {s for s in DeliveryStatus if s.final} == {"delivered", "undelivered", "failed"}


# --- parse_inbound -----------------------------------------------------------------------------

SID = "SM" + "a1" * 16
MMS_SID = "MM" + "b2" * 16

INBOUND_CASES: list[tuple[dict[str, str | None], dict[str, Any] | str]] = [
    # (overrides of a full Twilio payload, expected InboundSms fields or the field InvalidPayload names)
    (
        {"MessageSid": SID, "Body": "JOIN", "From": "+14155550123", "To": SENDER},
        {"message_id": SID, "account_id": ACCOUNT_SID, "from_phone": "+14155550123", "to": SENDER,
         "service_id": None, "body": "JOIN", "num_media": 0, "opt_out_type": None},
    ),
    ({"MessageSid": MMS_SID, "NumMedia": "2", "Body": None}, {"message_id": MMS_SID, "body": "", "num_media": 2}),
    ({"MessagingServiceSid": SERVICE_SID}, {"service_id": SERVICE_SID}),
    ({"Body": "  Stop please 🙏 ", "NumSegments": "1"}, {"body": "  Stop please 🙏 "}),
    ({"Body": "stop", "OptOutType": "stop"}, {"opt_out_type": "STOP", "body": "stop"}),
    ({"OptOutType": "Help"}, {"opt_out_type": "HELP"}),
    ({"OptOutType": "START"}, {"opt_out_type": "START"}),
    ({"OptOutType": "SOMETHING_NEW"}, {"opt_out_type": None}),
    ({"From": "+33 6 12 34 56 78"}, "From"),
    ({"From": "+33612345678"}, {"from_phone": "+33612345678", "channel": "sms", "from_address": None}),
    ({"From": "whatsapp:+14155550123", "To": "whatsapp:" + SENDER},
     {"from_phone": "+14155550123", "to": SENDER, "channel": "whatsapp", "from_address": "whatsapp:+14155550123"}),
    ({"From": "rcs:+14155550123"}, {"from_phone": "+14155550123", "channel": "rcs"}),
    ({"From": "messenger:1234567890123456"},
     {"from_phone": None, "channel": "messenger", "from_address": "messenger:1234567890123456"}),
    ({"MessageSid": MMS_SID, "NumMedia": "2", "Body": None, "MediaUrl0": "https://api.twilio.com/m/ME1",
      "MediaContentType0": "image/jpeg", "MediaUrl1": "https://api.twilio.com/m/ME2", "MediaContentType1": "video/mp4"},
     {"media": (Media("https://api.twilio.com/m/ME1", "image/jpeg"), Media("https://api.twilio.com/m/ME2", "video/mp4"))}),
    ({"From": "tel:+14155550123"}, "From"),
    ({"From": "sms:+14155550123"}, "From"),
    ({"From": "++14155550123"}, "From"),
    ({"From": "+1-800-FLOWERS"}, "From"),
    ({"From": "+１４１５５５５０１２３"}, "From"),  # full-width digits
    ({"From": "fax:+14155550123"}, "From"),
    ({"From": "whatsapp:hello"}, "From"),
    ({"From": "messenger:"}, "From"),
    ({"AccountSid": None}, {"account_id": None}),
    ({"MessageSid": None}, "MessageSid"),
    ({"MessageSid": ""}, "MessageSid"),
    ({"MessageSid": "CA" + "a1" * 16}, "MessageSid"),
    ({"MessageSid": "SM123"}, "MessageSid"),
    ({"From": "abc"}, "From"),
    ({"From": ""}, "From"),
    ({"From": None}, "From"),
    ({"To": None}, "To"),
    ({"NumMedia": "two"}, "NumMedia"),
]
INBOUND_IDS = [
    "good", "mms-no-body", "messaging-service", "emoji-body-verbatim", "opt-out-lowercase", "opt-out-mixed-case",
    "opt-out-start", "opt-out-unknown", "from-with-spaces", "from-e164", "from-whatsapp", "from-rcs",
    "from-messenger", "mms-media", "from-tel-uri", "from-sms-uri", "from-double-plus", "from-vanity",
    "from-full-width", "from-unknown-channel", "from-whatsapp-not-a-number", "from-messenger-empty", "no-account-sid", "missing-message-sid",
    "empty-message-sid", "call-sid", "short-sid", "from-abc", "from-empty", "from-missing", "to-missing",
    "num-media-not-a-number",
]


@pytest.mark.parametrize(("overrides", "expected"), INBOUND_CASES, ids=INBOUND_IDS)
def test_parse_inbound(overrides: dict[str, str | None], expected: dict[str, Any] | str) -> None:
    params = twilio_inbound_params(**overrides)
    if isinstance(expected, str):
        with pytest.raises(InvalidPayload) as info:
            parse_inbound(params)
        assert info.value.field == expected
        return
    sms_in = parse_inbound(params)
    assert isinstance(sms_in, InboundSms) and sms_in.provider == "twilio"
    for name, value in expected.items():
        assert getattr(sms_in, name) == value, name
    assert sms_in.params == params  # every parameter received, for the raw record


# --- parse_status --------------------------------------------------------------------------------

STATUS_CASES: list[tuple[str, dict[str, str | None], StatusUpdate | str]] = [
    ("sent", {}, StatusUpdate(SID, DeliveryStatus.SENT, None)),
    ("delivered", {}, StatusUpdate(SID, DeliveryStatus.DELIVERED, None)),
    ("undelivered", {"ErrorCode": "30003"}, StatusUpdate(SID, DeliveryStatus.UNDELIVERED, 30003)),
    ("failed", {"ErrorCode": "30007"}, StatusUpdate(SID, DeliveryStatus.FAILED, 30007)),
    ("failed", {"ErrorCode": ""}, StatusUpdate(SID, DeliveryStatus.FAILED, None)),
    ("accepted", {"MessagingServiceSid": SERVICE_SID}, StatusUpdate(SID, DeliveryStatus.QUEUED, None)),
    ("queued", {}, StatusUpdate(SID, DeliveryStatus.QUEUED, None)),
    ("sending", {}, StatusUpdate(SID, DeliveryStatus.SENDING, None)),
    ("canceled", {}, StatusUpdate(SID, DeliveryStatus.FAILED, None)),
    ("read", {}, StatusUpdate(SID, DeliveryStatus.DELIVERED, None)),
    ("Delivered", {}, StatusUpdate(SID, DeliveryStatus.DELIVERED, None)),
    ("exploded", {}, "MessageStatus"),
    ("", {}, "MessageStatus"),
    ("failed", {"ErrorCode": "oops"}, "ErrorCode"),
    ("sent", {"MessageSid": None}, "MessageSid"),
]
STATUS_IDS = [
    "sent", "delivered", "undelivered-30003", "failed-30007", "failed-blank-code", "accepted", "queued", "sending",
    "canceled", "read", "capitalised", "unknown-status", "empty-status", "error-code-not-a-number", "no-message-sid",
]


@pytest.mark.parametrize(("status", "overrides", "expected"), STATUS_CASES, ids=STATUS_IDS)
def test_parse_status(status: str, overrides: dict[str, str | None], expected: StatusUpdate | str) -> None:
    params = twilio_status_params(SID, status, **overrides)
    if isinstance(expected, str):
        with pytest.raises(InvalidPayload) as info:
            parse_status(params)
        assert info.value.field == expected
    else:
        assert parse_status(params) == expected


def test_status_map_covers_every_twilio_message_status() -> None:
    twilio_statuses = {
        "accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled",
        "read", "receiving", "received", "partially_delivered",
    }
    assert set(STATUS_MAP) == twilio_statuses
    assert all(isinstance(status, DeliveryStatus) for status in STATUS_MAP.values())


# --- signatures ----------------------------------------------------------------------------------


def _tampered(params: dict[str, str]) -> dict[str, str]:
    return {**params, "Body": "STOP"}


def _extra(params: dict[str, str]) -> dict[str, str]:
    return {**params, "OptOutType": "STOP"}


def _missing(params: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in params.items() if key != "NumSegments"}


@pytest.mark.parametrize(
    ("url", "change", "signature", "valid"),
    [
        (WEBHOOK_URL, None, "computed", True),
        (WEBHOOK_URL, None, None, False),
        (WEBHOOK_URL, None, "", False),
        (WEBHOOK_URL, None, "wrong-token", False),
        (WEBHOOK_URL, _tampered, "computed", False),
        (WEBHOOK_URL, _extra, "computed", False),
        (WEBHOOK_URL, _missing, "computed", False),
        (WEBHOOK_URL + "?brand=acme", None, "computed", False),
        ("https://optline.example:443/webhooks/twilio", None, "computed", True),  # Twilio may sign with the port
    ],
    ids=["valid", "missing", "empty", "wrong-token", "tampered-param", "extra-param", "missing-param",
         "other-url", "explicit-port"],
)
def test_signature(url: str, change: Any, signature: str | None, valid: bool) -> None:
    signed = twilio_inbound_params(Body="JOIN")
    if signature == "computed":
        signature = sign_twilio(WEBHOOK_URL, signed, AUTH_TOKEN)
    elif signature == "wrong-token":
        signature = sign_twilio(WEBHOOK_URL, signed, "another-token")
    received = change(signed) if change else signed
    assert TwilioSignature(AUTH_TOKEN).valid(url, received, signature) is valid


def test_signature_counts_every_value_of_a_repeated_parameter() -> None:
    pairs = [*twilio_inbound_params(NumMedia="0").items(), ("MediaUrl", "https://a.example/1"), ("MediaUrl", "https://a.example/2")]
    signature = sign_twilio(WEBHOOK_URL, pairs)
    checker = TwilioSignature(AUTH_TOKEN)

    assert checker.valid(WEBHOOK_URL, FormData(pairs), signature)  # starlette's multi-dict
    assert checker.valid(WEBHOOK_URL, pairs, signature)
    assert checker.valid(WEBHOOK_URL, {"MediaUrl": ["https://a.example/1", "https://a.example/2"], **dict(pairs[:-2])}, signature)
    assert not checker.valid(WEBHOOK_URL, FormData(pairs[:-1]), signature)  # one value dropped
    assert not checker.valid(WEBHOOK_URL, dict(pairs), signature)  # a plain dict keeps only one
    assert checker.sign(WEBHOOK_URL, FormData(pairs)) == signature


# --- ConsoleProvider -------------------------------------------------------------------------------


def test_console_provider_keeps_and_logs_replies_with_the_phone_masked(caplog: pytest.LogCaptureFixture) -> None:
    console = ConsoleProvider(keep=2)
    caplog.set_level(logging.INFO, logger="optline.console")

    results = [console.send(sms(body=f"reply {n} ✓")) for n in range(3)]

    assert isinstance(console, Provider)
    assert all(r.status == "sent" and r.message_id.startswith("CONSOLE") and len(r.message_id) == 39 for r in results)
    assert len({r.message_id for r in results}) == 3
    assert [(m.body, r) for m, r in console.sent] == [("reply 1 ✓", results[1]), ("reply 2 ✓", results[2])]
    assert [m.body for m in console.messages(to=TO)] == ["reply 1 ✓", "reply 2 ✓"]
    assert console.messages(to=OTHER) == []
    assert "reply 0 ✓" in caplog.text and "+1415***0100" in caplog.text
    assert TO not in caplog.text


# --- the fake itself -------------------------------------------------------------------------------


def test_fake_serves_created_messages_and_refuses_bad_credentials(
    provider: TwilioProvider, fake_twilio: FakeTwilio  # noqa: F811
) -> None:
    sid = provider.send(sms()).message_id
    url = f"{fake_twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"
    with requests.Session() as session:
        fetched = session.get(url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=1)
        refused = session.get(url, auth=(ACCOUNT_SID, "wrong"), timeout=1)
    assert fetched.status_code == 200
    assert {k: fetched.json()[k] for k in ("sid", "to", "from", "status", "num_segments")} == {
        "sid": sid, "to": TO, "from": SENDER, "status": "queued", "num_segments": "1",
    }
    assert refused.status_code == 401 and refused.json()["code"] == 20003


def test_fake_closes_promptly_with_a_request_in_flight() -> None:
    errors: list[SendError] = []
    with FakeTwilio() as fake, TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=fake.url, timeout=60) as twilio:
        fake.delay(60.0)  # far longer than the bound below: a close that waited it out fails the test

        def send() -> None:
            try:
                twilio.send(sms())
            except SendError as exc:
                errors.append(exc)

        thread = threading.Thread(target=send)
        thread.start()
        fake.wait_for_requests(1, timeout=10.0)
        started = time.monotonic()
        fake.close()
        assert time.monotonic() - started < 30  # closing does not wait out the delay (generous: CI is loaded)
        thread.join(timeout=30.0)
    assert [e.transient for e in errors] == [True]


def test_fake_wait_for_reports_what_it_got() -> None:
    with FakeTwilio() as fake, pytest.raises(AssertionError, match="expected 1 messages to \\+14155550100"):
        fake.wait_for(1, timeout=0.05, to=TO)


def test_proxy_settings_from_the_environment_still_apply(fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The session no longer reads the environment per request; what it held at start-up still counts."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=fake_twilio.url, timeout=0.5) as proxied:
        error = send_refused(proxied)
        assert error.kind == "connection" and error.transient
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=fake_twilio.url, timeout=0.5) as bypassing:
        assert bypassing.send(sms()).message_id.startswith("SM")
    assert len(fake_twilio.messages()) == 1
