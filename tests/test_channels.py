"""Channels (WhatsApp, RCS, Messenger) reach the Twilio webhook with prefixed addresses.

Consent is per channel, an opt-out is not: a JOIN, YES or START on another channel never
creates or confirms SMS consent nor triggers an SMS; a STOP on any channel ends the phone's
SMS subscriptions on that brand, with the channel as the consent event's source.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.auth import create_key
from tests.conftest import ACME, Gateway

PHONE = "+14155550123"


def sms(gateway: Gateway, *texts: str) -> None:
    for text in texts:
        assert gateway.text(text, from_=PHONE).status_code == 200
        gateway.drain()


@pytest.fixture
def messages(gateway: Gateway) -> Any:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="t"))
    return lambda **params: gateway.client.get("/v1/messages", params=params, headers={"x-api-key": key}).json()


@pytest.mark.parametrize("channel", ["whatsapp", "rcs"])
@pytest.mark.parametrize("texts", [("JOIN",), ("JOIN", "YES"), ("START",), ("NEWS", "Y")], ids=lambda t: "-".join(t))
def test_another_channel_never_creates_sms_consent(gateway: Gateway, channel: str, texts: tuple[str, ...]) -> None:
    for text in texts:
        response = gateway.text(text, from_=f"{channel}:{PHONE}", to=f"{channel}:{ACME}")
        assert response.status_code == 200
        gateway.drain()
    assert gateway.subs(PHONE) == {}
    assert gateway.replies(PHONE) == [] and gateway.replies(f"{channel}:{PHONE}") == []
    rows = gateway.query("SELECT channel, from_phone, from_address, brand FROM inbound_messages")
    assert [tuple(r) for r in rows] == [(channel, PHONE, f"{channel}:{PHONE}", "acme")] * len(texts)
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == 0


def test_yes_on_whatsapp_does_not_confirm_a_pending_sms_doi(gateway: Gateway) -> None:
    sms(gateway, "JOIN")
    assert gateway.text("YES", from_=f"whatsapp:{PHONE}", to=f"whatsapp:{ACME}").status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "pendingDOI"
    assert len(gateway.replies(PHONE)) == 1  # the prompt only, no welcome


@pytest.mark.parametrize("channel", ["whatsapp", "rcs"])
def test_a_stop_on_another_channel_ends_sms_consent(gateway: Gateway, channel: str, messages: Any) -> None:
    sms(gateway, "JOIN", "YES", "NEWS", "YES")
    assert gateway.subs(PHONE) == {"deals": "subscribed", "news": "subscribed"}
    sent = len(gateway.replies(PHONE))
    assert gateway.text("STOP", from_=f"{channel}:{PHONE}", to=f"{channel}:{ACME}").status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    sources = gateway.query("SELECT DISTINCT source FROM consent_events WHERE to_status = 'unsubscribed'")
    assert [r[0] for r in sources] == [channel]
    assert len(gateway.replies(PHONE)) == sent  # no SMS answers a WhatsApp STOP
    inbound = [m for m in messages(phoneNumber=PHONE)["items"] if m["direction"] == "inbound"]
    assert inbound[-1]["channel"] == channel and inbound[-1]["status"] == "stop"
    assert inbound[-1]["address"] == f"{channel}:{PHONE}"


def test_a_messenger_stop_is_stored_and_changes_no_phone(gateway: Gateway, messages: Any) -> None:
    sms(gateway, "JOIN", "YES")
    response = gateway.text("STOP", from_="messenger:1234567890123456", to=ACME)
    assert response.status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE) == {"deals": "subscribed"}
    [row] = gateway.query("SELECT channel, from_phone, from_address FROM inbound_messages WHERE channel = 'messenger'")
    assert tuple(row) == ("messenger", None, "messenger:1234567890123456")
    shown = [m for m in messages()["items"] if m["channel"] == "messenger"]
    assert shown and shown[0]["phoneNumber"] is None and shown[0]["address"] == "messenger:1234567890123456"


@pytest.mark.parametrize("raw", ["tel:+14155550123", "sms:+14155550123", "++14155550123", "+1-800-FLOWERS",
                                 "+１４１５５５５０１２３", "whatsapp:nobody", "line:+14155550123"])
def test_a_from_that_is_neither_a_number_nor_a_channel_address_is_400(gateway: Gateway, raw: str) -> None:
    response = gateway.text("STOP", from_=raw)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "From"
    assert gateway.query("SELECT count(*) FROM inbound_messages")[0][0] == 0


def test_mms_media_is_kept_and_shown(gateway: Gateway, messages: Any) -> None:
    response = gateway.text("", from_=PHONE, NumMedia="2")
    assert response.status_code == 200
    urls = [response.params["MediaUrl0"], response.params["MediaUrl1"]]
    [item] = [m for m in messages(phoneNumber=PHONE)["items"] if m["direction"] == "inbound"]
    assert [m["url"] for m in item["media"]] == urls
    assert [m["contentType"] for m in item["media"]] == ["image/jpeg", "image/jpeg"]
    assert item["body"] == "" and item["flagged"] is False


# --- what the detector reads, recorded (opt-outs in plain words, flagged texts) -------------------


def test_an_opt_out_in_plain_words_records_why(gateway: Gateway) -> None:
    sms(gateway, "JOIN", "YES")
    assert gateway.text("Bonjour, je ne veux plus recevoir vos messages, merci", from_=PHONE).status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    [reason] = [r[0] for r in gateway.query("SELECT reason FROM consent_events WHERE event = 'stop' AND program = 'deals'")]
    assert reason  # the rule and the words that fired, for a compliance officer to read


def test_a_flagged_text_changes_nothing_and_is_listed(gateway: Gateway, messages: Any) -> None:
    sms(gateway, "JOIN", "YES")
    sent = len(gateway.replies(PHONE))
    assert gateway.text("don't stop the deals!!", from_=PHONE).status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "subscribed" and len(gateway.replies(PHONE)) == sent
    flagged = messages(flagged="true")["items"]
    assert [m["body"] for m in flagged] == ["don't stop the deals!!"] and flagged[0]["flagged"] is True
    assert all(not m["flagged"] for m in messages(flagged="false")["items"])


def test_a_stop_sign_alone_and_opt_out_vocabulary_are_flagged_not_honoured(gateway: Gateway, messages: Any) -> None:
    sms(gateway, "JOIN", "YES")
    sent = len(gateway.replies(PHONE))
    texts = ["\U0001f6d1", "my lawyer says this breaks the TCPA"]
    for text in texts:
        assert gateway.text(text, from_=PHONE).status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "subscribed" and len(gateway.replies(PHONE)) == sent
    assert sorted(m["body"] for m in messages(flagged="true")["items"]) == sorted(texts)


def test_look_alike_letters_are_a_stop(gateway: Gateway) -> None:
    sms(gateway, "JOIN", "YES")
    assert gateway.text("S\u0422\u041e\u0420", from_=PHONE).status_code == 200  # Cyrillic Т, О, Р
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"
    # the text is stored as sent, look-alikes and all
    assert gateway.query("SELECT body FROM inbound_messages WHERE body LIKE 'S%'")[0][0] == "S\u0422\u041e\u0420"
