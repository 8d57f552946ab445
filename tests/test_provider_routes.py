"""/webhooks/{provider}: what the route does for every adapter that owns its webhooks (Telnyx stands in).

Conversations per provider are the contract suite's (tests/test_provider_contract.py); here
is the edge: a provider not enabled, a missing secret, bodies too big or not text, the
spool, and the provider's opt-out report turned into a carrier opt-out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.spool import Record, Spool, drain_once
from tests.conftest import ACME, Gateway
from tests.fake_telnyx import FakeTelnyx, TelnyxKeys, event, fake_telnyx, inbound_payload, status_payload  # noqa: F401

PHONE = "+14155550123"


@pytest.fixture
def keys() -> TelnyxKeys:
    return TelnyxKeys()


@pytest.fixture
def telnyx(gateway_factory: Callable[..., Gateway], database_url: str, keys: TelnyxKeys,
           fake_telnyx: FakeTelnyx) -> Gateway:
    """Twilio (the default) and Telnyx in one deployment."""
    return gateway_factory(database_url, providers="twilio,telnyx", telnyx_api_key="KEY_test",
                           telnyx_public_key=keys.public_key, telnyx_api_url=fake_telnyx.url)


def post(gateway: Gateway, keys: TelnyxKeys, body: bytes, path: str = "/webhooks/telnyx") -> object:
    return gateway.client.post(path, content=body, headers=keys.headers(body))


def inbound(text: str, phone: str = PHONE) -> bytes:
    return event("message.received", inbound_payload(text=text, from_=phone, to=ACME))


def test_an_inbound_text_goes_through_the_pipeline(telnyx: Gateway, keys: TelnyxKeys) -> None:
    response = post(telnyx, keys, inbound("JOIN"))
    assert (response.status_code, response.content) == (200, b"")  # type: ignore[attr-defined]
    assert telnyx.subs(PHONE) == {"deals": "pendingDOI"}
    assert telnyx.query("SELECT provider FROM inbound_messages")[0][0] == "telnyx"


def test_a_replay_changes_nothing(telnyx: Gateway, keys: TelnyxKeys) -> None:
    body = inbound("JOIN")
    for _ in range(3):
        assert post(telnyx, keys, body).status_code == 200  # type: ignore[attr-defined]
    telnyx.drain()
    assert telnyx.query("SELECT count(*) FROM inbound_messages")[0][0] == 1
    assert len(telnyx.replies(PHONE)) == 1


def test_a_provider_not_enabled_is_404(telnyx: Gateway, keys: TelnyxKeys) -> None:
    response = telnyx.client.post("/webhooks/plivo", content=b"From=1&To=2", headers={
        "content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 404
    assert "OPTLINE_PROVIDERS" in response.json()["detail"]


@pytest.mark.parametrize("case", ["unsigned", "other key", "stale timestamp"])
def test_a_bad_signature_is_403_and_stores_nothing(telnyx: Gateway, keys: TelnyxKeys, case: str) -> None:
    body = inbound("STOP")
    headers = {"unsigned": {"content-type": "application/json"},
               "other key": TelnyxKeys().headers(body),
               "stale timestamp": keys.headers(body, timestamp=int(datetime.now(UTC).timestamp()) - 3600)}[case]
    response = telnyx.client.post("/webhooks/telnyx", content=body, headers=headers)
    assert response.status_code == 403
    assert telnyx.query("SELECT count(*) FROM inbound_messages")[0][0] == 0


def test_without_its_public_key_telnyx_is_refused_and_start_up_says_so(
    gateway_factory: Callable[..., Gateway], sqlite_url: str, keys: TelnyxKeys, fake_telnyx: FakeTelnyx,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="optline"):
        gateway = gateway_factory(sqlite_url, providers="twilio,telnyx", telnyx_api_key="KEY_test",
                                  telnyx_api_url=fake_telnyx.url)
    assert any("TELNYX_PUBLIC_KEY is not set: every telnyx webhook will be refused" in r.getMessage()
               for r in caplog.records)
    assert post(gateway, keys, inbound("STOP")).status_code == 403  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "status"), [
    (b"x" * (64 * 1024 + 1), 413),
    (b"\xff\xfe not text", 400),
    (b"{\"data\": ", 400),  # cut off
    (b"[1, 2]", 400),
    (json.dumps({"data": {"event_type": "message.received", "payload": {"id": "m1"}}}).encode(), 400),
])
def test_bad_bodies_are_4xx_and_store_nothing(telnyx: Gateway, keys: TelnyxKeys, body: bytes, status: int) -> None:
    assert post(telnyx, keys, body).status_code == status  # type: ignore[attr-defined]
    assert telnyx.query("SELECT count(*) FROM inbound_messages")[0][0] == 0


def test_an_event_optline_does_not_act_on_is_acknowledged(telnyx: Gateway, keys: TelnyxKeys) -> None:
    body = event("number_order.complete", {"id": "x"})
    assert post(telnyx, keys, body).status_code == 200  # type: ignore[attr-defined]


def test_a_blocked_by_stop_report_is_a_carrier_opt_out(telnyx: Gateway, keys: TelnyxKeys) -> None:
    for text in ("JOIN", "YES"):
        post(telnyx, keys, inbound(text))
    telnyx.drain()
    assert telnyx.subs(PHONE) == {"deals": "subscribed"}
    payload = status_payload("40385f64-5717-4562-b3fc-2c963f66afa6", "sending_failed", to=PHONE,
                             errors=[{"code": "40300", "title": "Blocked due to STOP message"}])
    payload["from"]["phone_number"] = ACME
    assert post(telnyx, keys, event("message.finalized", payload), "/webhooks/telnyx/status").status_code == 200  # type: ignore[attr-defined]
    # Every program on that sender, as for Twilio's 21610.
    assert set(telnyx.subs(PHONE).values()) == {"unsubscribed"}
    (source, event_name) = telnyx.query("SELECT source, event FROM consent_events ORDER BY id DESC LIMIT 1")[0]
    assert (source, event_name) == ("carrier", "carrier_opt_out")
    telnyx.drain()
    assert not any("unsubscribed" in reply for reply in telnyx.replies(PHONE))  # the carrier answered, not us


def test_a_spooled_telnyx_stop_applies_later(telnyx: Gateway, keys: TelnyxKeys, tmp_path: Path) -> None:
    for text in ("JOIN", "YES"):
        post(telnyx, keys, inbound(text))
    telnyx.drain()
    spool = Spool(tmp_path, database="test")
    body = inbound("STOP").decode()

    async def apply_later() -> None:
        await spool.append(Record(kind="event", provider="telnyx", received_at=telnyx.clock(), form=(),
                                  body=body, content_type="application/json"))
        from app.receive import apply_spooled

        assert await drain_once(spool, lambda records: apply_spooled(telnyx.state, records))

    telnyx.client.portal.call(apply_later)  # type: ignore[union-attr]
    spool.close()
    assert set(telnyx.subs(PHONE).values()) == {"unsubscribed"}
    assert telnyx.query("SELECT provider FROM inbound_messages WHERE kind = 'stop'")[0][0] == "telnyx"
