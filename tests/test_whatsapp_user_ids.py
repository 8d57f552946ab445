"""WhatsApp senders named by a business-scoped user id (BSUID), as Twilio posts them.

Meta may withhold a WhatsApp user's phone number and name them by an id scoped to the
business (`whatsapp:US.1234`). Twilio then posts that id as `From`, or beside a phone number
as `ExternalUserId` (the captured forms of tests/data/providers/twilio/, from nyaruka/courier's
handlers/twiml tests). Such a text is stored with its address and no phone, like a Messenger
one; an opt-out from it ends the SMS subscriptions of the phone the id was last seen with in
that brand, and one from an id never seen with a phone changes nothing and is logged.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl

import pytest

from app.auth import create_key
from app.settings import PROJECT_ROOT
from tests.conftest import ACME, Gateway

DATA = PROJECT_ROOT / "tests" / "data" / "providers" / "twilio"
PHONE = "+14133881111"  # the captured forms' phone
USER_ID = "whatsapp:US.1234"  # and their business-scoped user id


def captured(name: str, **values: str) -> dict[str, str]:
    """A captured Twilio form (its first line cites the source), sent to acme's number, with a fresh MessageSid."""
    source, body = (DATA / name).read_text().split("\n", 1)
    assert source.startswith("# source: nyaruka/courier@"), name
    sid = "SM" + uuid.uuid4().hex
    values = {"To": f"whatsapp:{ACME}", "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, **values}
    return {key: values.get(key, value) for key, value in parse_qsl(body.strip(), keep_blank_values=True)}


def post(gateway: Gateway, name: str, **values: str) -> Any:
    response = gateway.post_signed("/webhooks/twilio", captured(name, **values))
    gateway.drain()
    return response


def subscribe(gateway: Gateway) -> None:
    for text in ("JOIN", "YES"):
        assert gateway.text(text, from_=PHONE).status_code == 200
        gateway.drain()
    assert gateway.subs(PHONE) == {"deals": "subscribed"}


@pytest.fixture
def messages(gateway: Gateway) -> Any:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="t"))
    return lambda **params: gateway.client.get("/v1/messages", params=params, headers={"x-api-key": key}).json()


def test_a_text_from_a_user_id_alone_is_stored_and_shown(gateway: Gateway, messages: Any) -> None:
    response = post(gateway, "whatsapp_bsuid_only.txt", Body="hello")
    assert response.status_code == 200, response.text  # was 400: "not an E.164 phone number", nothing stored
    [row] = gateway.query("SELECT channel, from_phone, from_address, brand, body FROM inbound_messages")
    assert tuple(row) == ("whatsapp", None, USER_ID, "acme", "hello")
    [shown] = [m for m in messages()["items"] if m["direction"] == "inbound"]
    assert (shown["channel"], shown["phoneNumber"], shown["address"]) == ("whatsapp", None, USER_ID)


def test_a_text_with_a_phone_and_a_user_id_keeps_the_id_as_its_address(gateway: Gateway) -> None:
    assert post(gateway, "whatsapp_phone_and_bsuid.txt", Body="hello").status_code == 200
    [row] = gateway.query("SELECT channel, from_phone, from_address FROM inbound_messages")
    assert tuple(row) == ("whatsapp", PHONE, USER_ID)


def test_an_external_user_id_that_is_no_user_id_is_ignored(gateway: Gateway) -> None:
    assert post(gateway, "whatsapp_bsuid_invalid.txt", Body="hello").status_code == 200
    [row] = gateway.query("SELECT channel, from_phone, from_address FROM inbound_messages")
    assert tuple(row) == ("whatsapp", PHONE, f"whatsapp:{PHONE}")


def test_a_stop_from_a_user_id_ends_the_phone_it_was_seen_with(gateway: Gateway) -> None:
    subscribe(gateway)
    sent = len(gateway.replies(PHONE))
    assert post(gateway, "whatsapp_phone_and_bsuid.txt", Body="hi there").status_code == 200
    assert gateway.subs(PHONE) == {"deals": "subscribed"}  # a WhatsApp text changes no SMS consent

    stop = captured("whatsapp_bsuid_only.txt", Body="STOP")
    assert gateway.post_signed("/webhooks/twilio", stop).status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"  # and every other program of the brand
    [event] = gateway.query("SELECT source, provider_message_id FROM consent_events WHERE to_status = 'unsubscribed'"
                            " AND program = 'deals'")
    assert tuple(event) == ("whatsapp", stop["MessageSid"])
    row = gateway.query("SELECT from_phone, from_address, kind FROM inbound_messages WHERE message_id = :m",
                        m=stop["MessageSid"])
    assert [tuple(r) for r in row] == [(PHONE, USER_ID, "stop")]
    assert len(gateway.replies(PHONE)) == sent  # no SMS answers a WhatsApp STOP


def test_a_stop_from_a_user_id_never_seen_with_a_phone_changes_nothing(
        gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    subscribe(gateway)
    with caplog.at_level(logging.INFO, logger="optline.webhooks"):
        assert post(gateway, "whatsapp_bsuid_only.txt", Body="STOP").status_code == 200
    assert gateway.subs(PHONE) == {"deals": "subscribed"}
    [row] = gateway.query("SELECT from_phone, from_address, kind FROM inbound_messages WHERE channel = 'whatsapp'")
    assert tuple(row) == (None, USER_ID, "stop")
    assert any("never seen with a phone number" in r.getMessage() for r in caplog.records)


def test_a_user_id_seen_in_another_brand_ends_nothing_here(gateway: Gateway) -> None:
    subscribe(gateway)
    # The id was seen with this phone, but through a number no brand routes: it ties nothing in acme.
    assert post(gateway, "whatsapp_phone_and_bsuid.txt", Body="hi", To="whatsapp:+12028831111").status_code == 200
    assert post(gateway, "whatsapp_bsuid_only.txt", Body="STOP").status_code == 200
    assert gateway.subs(PHONE) == {"deals": "subscribed"}
