"""End to end through HTTP: signed webhooks in, replies at the fake Twilio API, the ledger out."""

from __future__ import annotations

from tests.conftest import ACME, Gateway

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def test_join_yes_stop_conversation(gateway: Gateway) -> None:
    phone = "+14155550123"
    response = gateway.text("JOIN", from_=phone)
    assert response.status_code == 200
    assert response.text == EMPTY_TWIML
    assert response.headers["content-type"].startswith("text/xml")
    prompt = gateway.fake.wait_for(1, to=phone, timeout=1.0)[-1]
    assert prompt.body.startswith("ACME Deals: reply YES to confirm")
    assert prompt.from_ == ACME
    assert gateway.subs(phone) == {"deals": "pendingDOI"}

    gateway.text("YES", from_=phone)
    welcome = gateway.fake.wait_for(2, to=phone, timeout=1.0)[-1]
    assert welcome.body.startswith("ACME Deals: you're in!")
    assert gateway.subs(phone) == {"deals": "subscribed"}

    gateway.text("STOP", from_=phone)
    stop = gateway.fake.wait_for(3, to=phone, timeout=1.0)[-1]
    assert stop.body.startswith("ACME: you are unsubscribed from all ACME texts")
    assert gateway.subs(phone)["deals"] == "unsubscribed"

    events = gateway.query(
        "SELECT event, from_status, to_status, source, raw_text, provider_message_id FROM consent_events "
        "WHERE phone = :p AND program = 'deals' ORDER BY id", p=phone)
    assert [(e.event, e.from_status, e.to_status, e.raw_text) for e in events] == [
        ("join", "none", "pendingDOI", "JOIN"),
        ("confirm", "pendingDOI", "subscribed", "YES"),
        ("stop", "subscribed", "unsubscribed", "STOP"),
    ]
    assert all(e.source == "sms" and e.provider_message_id.startswith("SM") for e in events)
