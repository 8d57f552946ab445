"""Accepted means storable: every time and identifier a client can give is refused (4xx) before any write,
or stored so that both engines read it back in every list and export.

Found on PostgreSQL: an opt-in with consentedAt 0001-01-01T00:00:00+14:00 (year 1 BC in UTC) was
answered 500 after it had committed, and from then on the ledger, the subscriptions, the contact,
the console and the CSV export all failed reading that row; a signed MessageSid over 64
characters was a 500 (the column's length).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth import create_key
from app.cli import main
from tests.conftest import ACME, Gateway
from tests.fake_telnyx import FakeTelnyx, TelnyxKeys, event, fake_telnyx, inbound_payload  # noqa: F401

PHONE = "+14155550123"
PROOF = {"termsUrl": "https://acme.example/terms"}
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def key(gateway: Gateway) -> str:
    _info, plain = gateway.state.writer.call(lambda conn, now: create_key(conn, now, brand="acme", name="crm"))
    return plain


def opt_in(gateway: Gateway, key: str, consented_at: str, phone: str = PHONE) -> Any:
    return gateway.client.post("/v1/subscriptions/opt-in", headers={"x-api-key": key}, json={
        "phoneNumber": phone, "program": "deals", "consentSource": "web", "consentedAt": consented_at,
        "consentProof": PROOF})


def read_everything_back(gateway: Gateway, key: str, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """Every list and export that reads consent rows and texts answers 200 (exit 0)."""
    headers = {"x-api-key": key}
    for path in ("/v1/consent-events", "/v1/subscriptions", f"/v1/contacts/{PHONE}", "/v1/messages",
                 "/v1/profiles", "/v1/programs"):
        response = gateway.client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text[:300])
    monkeypatch.setenv("OPTLINE_DATABASE_URL", gateway.settings.database_url)
    monkeypatch.setenv("OPTLINE_KEYWORDS", gateway.settings.keywords)
    capsys.readouterr()
    assert main(["export", "consent", "--brand", "acme"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("consented_at", "status"), [
    ("0001-01-01T00:00:00+14:00", 422),  # year 1 BC in UTC: PostgreSQL stored it and could not read it back
    ("0001-01-01T00:00:00-14:00", 422),
    ("1969-12-31T23:59:59Z", 422),
    ("2026-01-01T00:00:00+15:00", 422),  # no zone is that far from UTC
    ("2026-01-01T00:00:00-15:59", 422),
    ("1970-01-01T00:00:00Z", 200),
    ("2026-01-01T00:00:00+14:00", 200),  # Kiribati
    ("2026-01-01T00:00:00-12:00", 200),
], ids=lambda value: str(value))
def test_consent_times_are_refused_before_any_write_or_stored_readably(
    gateway: Gateway, key: str, consented_at: str, status: int, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = opt_in(gateway, key, consented_at)
    assert response.status_code == status, response.text
    stored = gateway.query("SELECT count(*) FROM consent_events")[0][0]
    assert stored == (1 if status == 200 else 0)
    read_everything_back(gateway, key, monkeypatch, capsys)


def test_a_provider_id_too_long_to_store_is_400_and_nothing_is_stored(
    gateway_factory: Callable[..., Gateway], database_url: str, fake_telnyx: FakeTelnyx,
) -> None:
    """Telnyx's ids are free-form (Twilio's are checked for their SM… shape): 65 characters is 400, 64 is kept."""
    keys = TelnyxKeys()
    gateway = gateway_factory(database_url, providers="twilio,telnyx", telnyx_api_key="KEY_test",
                              telnyx_public_key=keys.public_key, telnyx_api_url=fake_telnyx.url)

    def post(message_id: str) -> Any:
        body = event("message.received", inbound_payload(text="STOP", from_=PHONE, to=ACME, id=message_id))
        return gateway.client.post("/webhooks/telnyx", content=body, headers=keys.headers(body))

    refused = post("m" * 65)
    assert refused.status_code == 400 and "longer than 64" in refused.text
    assert gateway.query("SELECT count(*) FROM inbound_messages")[0][0] == 0
    assert post("m" * 64).status_code == 200
    assert gateway.query("SELECT length(message_id) FROM inbound_messages")[0][0] == 64


offsets = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-(24 * 60 - 1), 24 * 60 - 1))
any_time = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets)
recent = st.datetimes(min_value=datetime(1969, 12, 31), max_value=datetime.now() + timedelta(minutes=10),
                      timezones=offsets)


def test_any_consent_time_is_a_clean_answer_and_every_list_reads_back(
    gateway: Gateway, key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Property: whatever time a CRM sends (year 1 to 9999, any offset up to ±23:59), the answer is 200, 409 or
    422, and what was accepted reads back everywhere."""
    answers: set[int] = set()

    @SETTINGS
    @given(when=st.one_of(any_time, recent), put=st.booleans())
    def post(when: datetime, put: bool) -> None:
        value = when.isoformat()
        if put:
            response = gateway.client.put(f"/v1/contacts/{PHONE}", headers={"x-api-key": key}, json={
                "channels": {"sms": {"programs": {"news": {"subscribeStatus": "subscribed", "consentedAt": value}}}}})
        else:
            response = opt_in(gateway, key, value)
        assert response.status_code in (200, 409, 422), (value, response.status_code, response.text[:300])
        answers.add(response.status_code)

    post()
    assert {200, 422} <= answers
    events = gateway.client.get("/v1/consent-events", headers={"x-api-key": key}, params={"limit": 1000}).json()
    for item in events["items"]:
        if item.get("consentedAt"):
            assert datetime.fromisoformat(item["consentedAt"]).astimezone(UTC).year >= 1970
    read_everything_back(gateway, key, monkeypatch, capsys)


def test_any_signed_message_id_is_a_clean_answer_and_messages_read_back(
    gateway: Gateway, key: str,
) -> None:
    """Property: a signed MessageSid of any length and characters is 200 or 400, never 5xx; stored ones read back."""

    @SETTINGS
    @given(sid=st.text(alphabet=string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=120))
    def post(sid: str) -> None:
        response = gateway.text("HELP", MessageSid=sid)
        assert response.status_code in (200, 400), (sid, response.status_code, response.text[:200])

    post()
    response = gateway.client.get("/v1/messages", headers={"x-api-key": key}, params={"limit": 1000})
    assert response.status_code == 200
