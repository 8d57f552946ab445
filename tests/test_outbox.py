"""SPEC §6 through the real app: the outbox sender against the fake Twilio (real `twilio` library,
real HTTP), on SQLite and PostgreSQL.

Retries of transient failures with backoff, permanent failures, carrier opt-outs (21610 on
send and in a status callback), delivery reports in any order, lease takeover after a dead
sender, the late re-check before a send, and stop replies jumping the queue.

The fake clock only moves when a test moves it, so a row waiting for its backoff stays put
until `settle` advances the clock: retries are driven, never slept for.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from app.db import make_engine
from app.keywords import load_rules
from app.main import create_app
from app.models import outbox
from app.carrier import carrier_opt_out
from app.outbox.dispatch import dispatch
from app.outbox.queue import Claimed, cancel_queued, claim, enqueue_sms
from app.outbox.records import record_failure, record_sent
from app.outbox.reports import record_delivery
from app.outbox.sender import backoff
from app.providers.base import DeliveryStatus, SendError, SendResult
from app.providers.twilio import TwilioProvider
from tests.conftest import ACME, FakeClock, Gateway, explain_plans, make_settings
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID, FakeTwilio, twilio_status_params

PHONE = "+14155550123"
HELP_REPLY = "ACME Coffee alerts. Help: support@acme.example. Msg&data rates may apply. Reply STOP to cancel."
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

# Two programs behind one Messaging Service and a third on a number of its own, so a carrier
# opt-out through the service can be seen to stop at the service's programs.
ZEN_SHARED_SERVICE = """\
version: 1
brands:
  zen:
    name: Zen Tea
    help_contact: help@zen.example
    messages:
      stop: "Zen Tea: unsubscribed from all Zen texts. Help: {help_contact}"
      help: "Zen Tea. Help: {help_contact}. Reply STOP to cancel."
    programs:
      tips:
        name: Zen Tips
        senders: ["%(service)s"]
        double_opt_in: false
        keywords: {join: [TEA]}
        messages: &messages
          welcome: "{program}: you're in. Msg&data rates may apply. Reply HELP for help, STOP to cancel."
          already_subscribed: "{program}: already in. Reply STOP to cancel."
          stop: "{program}: unsubscribed. Help: {help_contact}"
          help: "{program}. Help: {help_contact}. Reply STOP to cancel."
      recipes:
        name: Zen Recipes
        senders: ["%(service)s"]
        double_opt_in: false
        keywords: {join: [RECIPES]}
        messages: *messages
      shop:
        name: Zen Shop
        senders: ["+15005550009"]
        double_opt_in: false
        keywords: {join: [SHOP]}
        messages: *messages
""" % {"service": SERVICE_SID}
ZEN_NUMBER = "+15005550008"  # the pool number Twilio says the text came to, inside the service


# --- helpers -------------------------------------------------------------------------------


def settle(gateway: Gateway, *, timeout: float = 5.0) -> None:
    """Wait until nothing is due or in flight, moving the fake clock past each retry's backoff (cap 0.2 s)."""
    gateway.drain(timeout, advance=0.25)


def outbox_row(gateway: Gateway, phone: str = PHONE) -> Any:
    """The one outbox row to `phone`."""
    [row] = gateway.query(
        "SELECT id, status, attempts, error_code, error_reason, provider_message_id, claimed_by, lease_until "
        "FROM outbox WHERE phone = :p", p=phone)
    return row


def wait_for_status(gateway: Gateway, status: str, *, attempts: int, phone: str = PHONE, timeout: float = 3.0) -> Any:
    """The row to `phone` once it is in `status` after `attempts` attempts (the fake clock does not move meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = gateway.query("SELECT status, attempts FROM outbox WHERE phone = :p", p=phone)
        if rows and (rows[0].status, rows[0].attempts) == (status, attempts):
            return outbox_row(gateway, phone)
        time.sleep(0.02)
    raise AssertionError(f"outbox row to {phone} never reached {status}: {gateway.query('SELECT status FROM outbox')}")


def send_help_reply(gateway: Gateway, phone: str = PHONE) -> str:
    """Text HELP and wait for the reply to reach the fake; returns its MessageSid."""
    assert gateway.text("HELP", from_=phone).status_code == 200
    gateway.drain()
    [message] = gateway.fake.messages(to=phone)
    assert outbox_row(gateway, phone).provider_message_id == message.sid
    return message.sid


def create_requests(fake: FakeTwilio, to: str = PHONE) -> int:
    """How many message-create requests to `to` reached the fake (whatever it answered)."""
    return sum(1 for r in fake.requests if r.method == "POST" and r.form.get("To") == to)


def queue_and_claim(gateway: Gateway, *, worker: str, lease: timedelta, phone: str = PHONE,
                    purpose: str = "help") -> Claimed:
    """Enqueue one text and claim it for `worker` in the same transaction, so the running sender cannot take it first."""

    def job(conn: sa.Connection, now: datetime) -> Claimed:
        row_id = enqueue_sms(conn, now=now, brand="acme", program="deals", phone=phone, body="Hello from ACME",
                             purpose=purpose, from_number=ACME, service_id=None)
        [claimed] = claim(conn, now, worker=worker, limit=10, lease=lease)
        assert claimed.id == row_id
        return claimed

    return gateway.state.writer.call(job)


def fake_sid(n: int) -> str:
    """A well-formed Twilio message SID the fake never issued."""
    return f"SM{n:032x}"


@pytest.fixture
def zen_keywords(tmp_path: Path) -> str:
    path = tmp_path / "zen.yaml"
    path.write_text(ZEN_SHARED_SERVICE, encoding="utf-8")
    load_rules(path)  # fail here, not in the app, if the fixture drifts from the format
    return str(path)


@pytest.fixture
def quiet_gateway(gateway_factory: Callable[..., Gateway], database_url: str) -> Gateway:
    """A gateway whose in-process sender is off: the test claims and sends by hand."""
    return gateway_factory(database_url, inprocess_worker=False)


@pytest.fixture
def slow_timeout_gateway(fake_twilio: FakeTwilio, clock: FakeClock, database_url: str) -> Iterator[Gateway]:
    """A gateway whose Twilio client gives up after 0.25 s (the settings have no knob for it)."""
    settings = make_settings(database_url, fake_twilio)
    provider = TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, api_url=fake_twilio.url, timeout=0.25)
    with TestClient(create_app(settings, provider=provider, clock=clock), raise_server_exceptions=False) as client:
        yield Gateway(client=client, fake=fake_twilio, clock=clock, settings=settings)
    provider.close()


# --- transient failures: retry with backoff, then succeed ------------------------------------


TRANSIENT = [
    pytest.param(lambda fake: fake.fail_http(429, to=PHONE), ["code 20429, HTTP 429"], id="429"),
    pytest.param(lambda fake: fake.fail_http(500, to=PHONE), ["code 20500, HTTP 500"], id="500"),
    pytest.param(lambda fake: fake.fail_http(503, to=PHONE, times=2), ["code 20503, HTTP 503"] * 2, id="503-twice"),
    pytest.param(lambda fake: fake.drop(to=PHONE), ["cannot reach Twilio"], id="dropped-connection"),
    pytest.param(lambda fake: (fake.drop(to=PHONE), fake.fail_http(502, to=PHONE)),
                 ["cannot reach Twilio", "(HTTP 502)"], id="drop-then-502"),
]


@pytest.mark.parametrize("fault,failures", TRANSIENT)
def test_transient_failure_is_retried_until_it_goes_out_once(
    gateway: Gateway, fault: Callable[[FakeTwilio], Any], failures: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    fault(gateway.fake)
    gateway.text("HELP", from_=PHONE)
    gateway.fake.wait_for_requests(1)
    settle(gateway)
    row = outbox_row(gateway)
    assert (row.status, row.attempts) == ("queued", len(failures) + 1)
    assert row.error_code is None  # cleared by the successful send
    assert create_requests(gateway.fake) == len(failures) + 1
    [message] = gateway.fake.messages(to=PHONE)  # no failed attempt created a message
    assert message.body == HELP_REPLY and row.provider_message_id == message.sid
    retried = [r.getMessage() for r in caplog.records if r.name == "optline.outbox" and "will retry" in r.getMessage()]
    assert len(retried) == len(failures)
    assert all(reason in logged for reason, logged in zip(failures, retried, strict=True)), retried


def test_a_retry_waits_for_its_backoff(gateway_factory: Callable[..., Gateway], database_url: str) -> None:
    # A long base makes the first backoff (uniform in [0, 5 s]) visible against the fake clock.
    gateway = gateway_factory(database_url, retry_base_seconds=5.0, retry_cap_seconds=10.0)
    gateway.fake.fail_http(503, to=PHONE)
    gateway.text("HELP", from_=PHONE)
    wait_for_status(gateway, "pending", attempts=1)
    with gateway.state.reader.connect() as conn:  # through the table, so times come back as datetimes
        row = conn.execute(sa.select(outbox.c.status, outbox.c.attempts, outbox.c.error_code,
                                     outbox.c.next_attempt_at, outbox.c.updated_at)).one()
    assert (row.status, row.attempts, row.error_code) == ("pending", 1, 20503)
    assert timedelta(0) < row.next_attempt_at - row.updated_at <= timedelta(seconds=5)
    time.sleep(0.3)  # several sender polls: the clock has not moved, so nothing is due
    assert create_requests(gateway.fake) == 1
    gateway.clock.advance(seconds=10)
    gateway.fake.wait_for(1, to=PHONE)
    gateway.drain()
    assert tuple(outbox_row(gateway)[1:3]) == ("queued", 2)


@pytest.mark.parametrize("retry_after", ["30", "Thu, 01 Jan 2099 00:00:00 GMT"], ids=["seconds", "http-date"])
def test_a_429_waits_at_least_its_retry_after(gateway: Gateway, retry_after: str) -> None:
    # Twilio's library raises without the answer's headers; the adapter keeps Retry-After for the outbox.
    gateway.fake.fail_http(429, to=PHONE, headers={"Retry-After": retry_after})
    gateway.text("HELP", from_=PHONE)
    wait_for_status(gateway, "pending", attempts=1)
    with gateway.state.reader.connect() as conn:
        row = conn.execute(sa.select(outbox.c.error_code, outbox.c.next_attempt_at, outbox.c.updated_at)).one()
    assert row.error_code == 20429
    # The backoff alone is at most 0.05 s here (the tests' base); the provider asked for 30 s, or for
    # a date far ahead (capped at an hour: the deadlines take over beyond that).
    assert row.next_attempt_at - row.updated_at >= timedelta(seconds=29)


def test_a_timeout_is_retried_and_may_deliver_twice(slow_timeout_gateway: Gateway) -> None:
    gateway = slow_timeout_gateway
    gateway.fake.delay(0.6, to=PHONE)  # answers after the client's 0.25 s timeout
    gateway.text("HELP", from_=PHONE)
    gateway.fake.wait_for_requests(1)
    settle(gateway)
    row = outbox_row(gateway)
    assert (row.status, row.attempts) == ("queued", 2)
    assert create_requests(gateway.fake) == 2
    # A timeout leaves the outcome unknown and is retried: at-least-once is the documented
    # semantics. Like the real API, the fake still creates the message of the attempt the
    # client gave up on, so the phone gets the text twice; the row records the retry's SID.
    messages = gateway.fake.wait_for(2, timeout=2.0, to=PHONE)
    assert [m.body for m in messages] == [HELP_REPLY, HELP_REPLY]
    retry = max(messages, key=lambda m: m.received_at)
    assert row.provider_message_id == retry.sid


# --- failures that end the row ---------------------------------------------------------------


def test_retries_end_at_the_deadline_with_the_last_error(gateway_factory: Callable[..., Gateway], database_url: str) -> None:
    gateway = gateway_factory(database_url, deadline_text_seconds=1.0)
    gateway.fake.fail_http(500, to=PHONE, times=None)
    gateway.text("HELP", from_=PHONE)
    gateway.fake.wait_for_requests(1)
    settle(gateway)  # the fake clock moves 0.25 s a poll: past the 1 s deadline after a few retries
    row = outbox_row(gateway)
    assert (row.status, row.error_code) == ("failed", 20500)
    assert row.attempts >= 2 and "HTTP 500" in row.error_reason
    tries = create_requests(gateway.fake)
    assert tries == row.attempts
    gateway.clock.advance(hours=1)
    time.sleep(0.2)
    assert create_requests(gateway.fake) == tries
    assert gateway.fake.messages(to=PHONE) == []


def test_a_stop_reply_outlives_a_provider_outage_longer_than_the_old_retry_budget(
    gateway_factory: Callable[..., Gateway], database_url: str,
) -> None:
    """Twilio down for 30 simulated minutes: the stop reply (1 h deadline) still goes out, once."""
    gateway = gateway_factory(database_url, retry_cap_seconds=120.0)
    gateway.fake.fail_http(503, to=PHONE, times=None)
    gateway.text("STOP", from_=PHONE)
    gateway.fake.wait_for_requests(1)
    give_up = time.monotonic() + 30
    # At least 30 minutes of outage (9 s a step) and far past the 8 attempts the old budget allowed.
    while time.monotonic() < give_up and (gateway.clock() - gateway.clock.start < timedelta(minutes=30)
                                          or create_requests(gateway.fake) <= 8):
        gateway.clock.advance(seconds=9)
        time.sleep(0.02)
    assert create_requests(gateway.fake) > 8
    assert outbox_row(gateway).status in ("pending", "sending", "dispatching")  # still being retried
    # The provider comes back while the row waits out its backoff (up to the 120 s cap): move the
    # clock past that once, rather than 0.25 s a poll, which a loaded machine may not reach in time.
    waiting = time.monotonic() + 30
    while outbox_row(gateway).status != "pending" and time.monotonic() < waiting:
        time.sleep(0.02)
    gateway.fake.clear_rules()
    gateway.clock.advance(seconds=121)
    settle(gateway, timeout=10.0)
    [message] = gateway.fake.messages(to=PHONE)
    assert message.body.startswith("ACME: you are unsubscribed")
    assert outbox_row(gateway).status == "queued"


@pytest.mark.parametrize("code", [21211, 21614, 21408, 21606], ids=["invalid-to", "not-mobile", "region", "from"])
def test_permanent_error_fails_after_one_attempt(gateway: Gateway, code: int) -> None:
    gateway.fake.fail(code, to=PHONE, times=None)
    gateway.text("HELP", from_=PHONE)
    gateway.fake.wait_for_requests(1)
    settle(gateway)
    row = outbox_row(gateway)
    assert (row.status, row.attempts, row.error_code) == ("failed", 1, code)
    assert "HTTP 400" in row.error_reason
    gateway.clock.advance(hours=1)
    time.sleep(0.2)
    assert create_requests(gateway.fake) == 1
    assert gateway.subs(PHONE) == {}  # only 21610 touches consent


def test_21610_through_a_messaging_service_unsubscribes_the_service_programs_only(
    gateway_factory: Callable[..., Gateway], database_url: str, zen_keywords: str
) -> None:
    gateway = gateway_factory(database_url, keywords=zen_keywords)
    via_service = {"to": ZEN_NUMBER, "MessagingServiceSid": SERVICE_SID}
    for text, extra in [("TEA", via_service), ("RECIPES", via_service), ("SHOP", {"to": "+15005550009"})]:
        assert gateway.text(text, from_=PHONE, **extra).status_code == 200
    gateway.drain()
    assert gateway.subs(PHONE) == {"tips": "subscribed", "recipes": "subscribed", "shop": "subscribed"}

    gateway.fake.fail(21610, to=PHONE, times=None)
    gateway.text("HELP", from_=PHONE, **via_service)
    settle(gateway)
    row = gateway.query("SELECT status, attempts, error_code, service_id FROM outbox ORDER BY id DESC LIMIT 1")[0]
    assert tuple(row) == ("failed", 1, 21610, SERVICE_SID)
    assert gateway.fake.requests[-1].form.get("MessagingServiceSid") == SERVICE_SID
    assert gateway.subs(PHONE) == {"tips": "unsubscribed", "recipes": "unsubscribed", "shop": "subscribed"}
    events = gateway.query("SELECT program, event, source, keyword FROM consent_events "
                           "WHERE to_status = 'unsubscribed' ORDER BY program")
    assert [tuple(e) for e in events] == [("recipes", "carrier_opt_out", "carrier", "error 21610"),
                                          ("tips", "carrier_opt_out", "carrier", "error 21610")]


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_21610_in_a_status_callback_unsubscribes_every_program_on_the_sender(gateway: Gateway, status: str) -> None:
    for text in ["JOIN", "YES"]:
        gateway.text(text, from_=PHONE)
        gateway.drain()
    assert gateway.subs(PHONE) == {"deals": "subscribed"}
    welcome = gateway.fake.messages(to=PHONE)[-1].sid

    for _ in range(2):  # Twilio retries callbacks: the second copy changes nothing
        response = gateway.status(welcome, status, ErrorCode="21610")
        assert (response.status_code, response.text) == (200, EMPTY_TWIML)
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    events = gateway.query("SELECT program, from_status, source, provider_message_id FROM consent_events "
                           "WHERE event = 'carrier_opt_out' ORDER BY program")
    assert [tuple(e) for e in events] == [("deals", "subscribed", "carrier", welcome),
                                          ("news", "none", "carrier", welcome)]
    row = gateway.query("SELECT status, error_code FROM outbox WHERE provider_message_id = :s", s=welcome)[0]
    assert tuple(row) == (status, 21610)


def test_21610_callback_arriving_before_record_sent_still_opts_out(gateway: Gateway) -> None:
    claimed = queue_and_claim(gateway, worker="w1", lease=timedelta(seconds=30))
    sid = fake_sid(0x21610)
    # Through a Messaging Service the API answers "accepted" and the failure comes by callback,
    # which can land before the sender has recorded the SID.
    assert gateway.status(sid, "failed", ErrorCode="21610").status_code == 200
    gateway.state.writer.call(lambda c, now: record_sent(c, now, row_id=claimed.id, worker="w1",
                                                         result=SendResult(message_id=sid, status="accepted"),
                                                         rules=gateway.state.rules, opt_out=carrier_opt_out))
    assert tuple(outbox_row(gateway)[1:4]) == ("failed", 1, 21610)
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}


# --- delivery status callbacks ---------------------------------------------------------------


CALLBACKS = [
    pytest.param([("accepted", None)], "queued", None, id="accepted"),
    pytest.param([("sending", None), ("queued", None)], "sending_provider", None, id="sending-then-queued"),
    pytest.param([("sent", None)], "sent", None, id="sent"),
    pytest.param([("sent", None), ("delivered", None)], "delivered", None, id="sent-then-delivered"),
    pytest.param([("delivered", None), ("sent", None)], "delivered", None, id="delivered-then-sent"),
    pytest.param([("delivered", None), ("sending", None), ("queued", None)], "delivered", None,
                 id="delivered-then-older"),
    pytest.param([("sent", None), ("undelivered", "30005")], "undelivered", 30005, id="undelivered-30005"),
    pytest.param([("undelivered", "30003"), ("sent", None)], "undelivered", 30003, id="undelivered-then-sent"),
    pytest.param([("failed", "30008"), ("delivered", None)], "failed", 30008, id="final-is-final"),
    pytest.param([("partially_delivered", "30008")], "undelivered", 30008, id="partially-delivered"),
]


@pytest.mark.parametrize("reports,final,error_code", CALLBACKS)
def test_status_callbacks_move_the_row_forward_only(
    gateway: Gateway, reports: list[tuple[str, str | None]], final: str, error_code: int | None
) -> None:
    sid = send_help_reply(gateway)
    for status, code in reports:
        response = gateway.status(sid, status, ErrorCode=code)
        assert (response.status_code, response.text) == (200, EMPTY_TWIML)
    row = outbox_row(gateway)
    assert (row.status, row.error_code) == (final, error_code)
    report = gateway.query("SELECT status, error_code FROM delivery_reports WHERE message_id = :s", s=sid)[0]
    assert (report.status, report.error_code) == (
        {"sending_provider": "sending"}.get(final, final), error_code)


def test_callback_for_an_unknown_sid_is_kept_and_touches_no_row(gateway: Gateway) -> None:
    sid = send_help_reply(gateway)
    unknown = fake_sid(7)
    assert gateway.status(unknown, "delivered").status_code == 200
    assert gateway.query("SELECT message_id, status FROM delivery_reports") == [(unknown, "delivered")]
    assert tuple(outbox_row(gateway)[1:2]) == ("queued",)
    assert outbox_row(gateway).provider_message_id == sid


@pytest.mark.parametrize("early", [("delivered", None), ("undelivered", 30005), ("sent", None)],
                         ids=["delivered", "undelivered", "sent"])
def test_a_report_that_beats_record_sent_is_merged_into_the_row(gateway: Gateway, early: tuple[str, int | None]) -> None:
    status, code = early
    claimed = queue_and_claim(gateway, worker="w1", lease=timedelta(seconds=30))
    sid = fake_sid(42)
    # The callback comes through the real webhook while the row is still 'sending'.
    response = gateway.status(sid, status, ErrorCode=str(code) if code else None)
    assert response.status_code == 200
    assert tuple(outbox_row(gateway)[1:2]) == ("sending",)
    gateway.state.writer.call(lambda c, now: record_sent(c, now, row_id=claimed.id, worker="w1",
                                                         result=SendResult(message_id=sid, status="queued")))
    row = outbox_row(gateway)
    assert (row.status, row.error_code, row.provider_message_id, row.lease_until) == (status, code, sid, None)
    # And a later, older report still cannot pull it back.
    assert not gateway.state.writer.call(lambda c, now: record_delivery(c, now, message_id=sid,
                                                                         status=DeliveryStatus.QUEUED, error_code=None))
    assert outbox_row(gateway).status == status


MALFORMED_CALLBACKS = [
    pytest.param({"MessageStatus": "exploded", "SmsStatus": "exploded"}, "MessageStatus", id="unknown-status"),
    pytest.param({"MessageStatus": None, "SmsStatus": None}, "MessageStatus", id="no-status"),
    pytest.param({"MessageStatus": "undelivered", "ErrorCode": "thirty"}, "ErrorCode", id="bad-error-code"),
    pytest.param({"MessageSid": "XX123", "SmsSid": "XX123"}, "MessageSid", id="bad-sid"),
]


@pytest.mark.parametrize("changes,field", MALFORMED_CALLBACKS)
def test_malformed_status_callback_is_400_and_changes_nothing(gateway: Gateway, changes: dict[str, str | None],
                                                             field: str) -> None:
    sid = send_help_reply(gateway)
    params = twilio_status_params(sid, "delivered")
    params.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        del params[key]
    response = gateway.post_signed("/webhooks/twilio/status", params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert field in response.text
    assert gateway.query("SELECT count(*) FROM delivery_reports")[0][0] == 0
    assert outbox_row(gateway).status == "queued"


def test_unsigned_status_callback_is_403_and_changes_nothing(gateway: Gateway) -> None:
    sid = send_help_reply(gateway)
    response = gateway.client.post("/webhooks/twilio/status", data=twilio_status_params(sid, "delivered"))
    assert response.status_code == 403
    assert outbox_row(gateway).status == "queued"


# --- leases ----------------------------------------------------------------------------------


def test_a_dead_senders_rows_are_taken_over_after_the_lease_and_sent_once(gateway: Gateway) -> None:
    dead = queue_and_claim(gateway, worker="dead", lease=timedelta(seconds=5))
    time.sleep(0.3)  # several polls of the live sender: the lease still holds
    assert create_requests(gateway.fake) == 0
    assert outbox_row(gateway).claimed_by == "dead"

    gateway.clock.advance(seconds=6)
    gateway.fake.wait_for(1, to=PHONE)
    settle(gateway)
    row = outbox_row(gateway)
    live = gateway.state.sender.worker_id
    assert (row.status, row.attempts, row.claimed_by) == ("queued", 2, live)
    [message] = gateway.fake.messages(to=PHONE)
    assert row.provider_message_id == message.sid

    # The dead sender wakes up and reports late: neither outcome may touch the row.
    before = tuple(outbox_row(gateway))
    writer = gateway.state.writer
    writer.call(lambda c, now: record_sent(c, now, row_id=dead.id, worker="dead",
                                           result=SendResult(message_id=fake_sid(1), status="queued")))
    writer.call(lambda c, now: record_failure(c, now, row=dead, worker="dead", retry_at=now,
                                              error=SendError("late", code=20503, http_status=503, transient=True),
                                              rules=None))
    assert tuple(outbox_row(gateway)) == before
    gateway.clock.advance(minutes=10)
    time.sleep(0.2)
    assert create_requests(gateway.fake) == 1


# --- the re-check just before sending --------------------------------------------------------


def _deliver(gateway: Gateway, row: Claimed) -> None:
    # `_deliver` is the step between claim and send; calling it directly puts the test's change
    # exactly in the window the re-check guards (run_once would claim and send in one go).
    # On the app's own loop, where its provider's connections live; the outcome is recorded
    # in the background, so wait for that too.
    sender = gateway.state.sender

    async def deliver() -> None:
        await sender._deliver(row)
        await sender.recorded()

    gateway.client.portal.call(deliver)  # type: ignore[union-attr]


def test_a_row_cancelled_after_claim_is_not_sent(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    sender = gateway.state.sender
    claimed = queue_and_claim(gateway, worker=sender.worker_id, lease=timedelta(seconds=30))
    # A STOP lands between the claim and the send.
    cancelled = gateway.state.writer.call(
        lambda c, now: cancel_queued(c, [{"brand": "acme", "phone": PHONE, "now": now}], programs=None))
    assert cancelled == 1
    _deliver(gateway, claimed)
    assert gateway.fake.requests == []
    row = outbox_row(gateway)
    assert (row.status, row.attempts, row.provider_message_id) == ("cancelled", 1, None)


def test_a_row_taken_over_after_claim_is_not_sent_by_the_first_sender(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    sender = gateway.state.sender
    claimed = queue_and_claim(gateway, worker=sender.worker_id, lease=timedelta(seconds=5))
    gateway.clock.advance(seconds=6)
    [other] = gateway.state.writer.call(lambda c, now: claim(c, now, worker="other", limit=10, lease=timedelta(seconds=30)))
    assert other.id == claimed.id
    _deliver(gateway, claimed)
    assert gateway.fake.requests == []
    assert tuple(outbox_row(gateway)[1:3]) == ("sending", 2)


def test_a_claimed_row_still_ours_is_sent(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    sender = gateway.state.sender
    claimed = queue_and_claim(gateway, worker=sender.worker_id, lease=timedelta(seconds=30))
    _deliver(gateway, claimed)
    [message] = gateway.fake.messages(to=PHONE)
    assert (message.from_, message.body) == (ACME, "Hello from ACME")
    assert message.status_callback == "https://optline.example.test/webhooks/twilio/status"
    row = outbox_row(gateway)
    assert (row.status, row.provider_message_id, row.lease_until) == ("queued", message.sid, None)


# --- claim order -----------------------------------------------------------------------------


def _enqueue(gateway: Gateway, phone: str, purpose: str) -> int:
    return gateway.state.writer.call(lambda c, now: enqueue_sms(
        c, now=now, brand="acme", program="deals", phone=phone, body=f"{purpose} for {phone}", purpose=purpose,
        from_number=ACME, service_id=None))


def test_stop_replies_are_claimed_before_older_due_rows(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    prompts = [_enqueue(gateway, f"+1415555010{i}", "doi_prompt") for i in range(5)]
    stop = _enqueue(gateway, PHONE, "stop")
    writer = gateway.state.writer
    first = writer.call(lambda c, now: claim(c, now, worker="a", limit=3, lease=timedelta(seconds=30)))
    assert [r.id for r in first] == [stop, prompts[0], prompts[1]]
    rest = writer.call(lambda c, now: claim(c, now, worker="b", limit=10, lease=timedelta(seconds=30)))
    assert [r.id for r in rest] == prompts[2:]


def test_one_phone_gets_its_texts_in_order_one_at_a_time(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    writer = gateway.state.writer
    prompt = _enqueue(gateway, PHONE, "doi_prompt")
    welcome = _enqueue(gateway, PHONE, "welcome")
    other = _enqueue(gateway, "+14155550100", "doi_prompt")
    lease = timedelta(seconds=30)
    first = writer.call(lambda c, now: claim(c, now, worker="a", limit=10, lease=lease))
    assert [r.id for r in first] == [prompt, other], "the welcome waits while its prompt is being sent"
    assert writer.call(lambda c, now: claim(c, now, worker="b", limit=10, lease=lease)) == []
    writer.call(lambda c, now: record_sent(c, now, row_id=prompt, worker="a",
                                           result=SendResult(message_id=fake_sid(1), status="queued")))
    second = writer.call(lambda c, now: claim(c, now, worker="b", limit=10, lease=lease))
    assert [r.id for r in second] == [welcome]


def test_a_due_welcome_brings_its_prompt_forward_past_other_prompts(quiet_gateway: Gateway) -> None:
    """Answers go before prompts; a welcome still behind its own prompt takes that prompt with it, never overtakes it."""
    gateway = quiet_gateway
    writer = gateway.state.writer
    backlog = [_enqueue(gateway, f"+141555502{i:02d}", "doi_prompt") for i in range(20)]
    prompt = _enqueue(gateway, PHONE, "doi_prompt")  # queued after the backlog
    welcome = _enqueue(gateway, PHONE, "welcome")
    lease = timedelta(seconds=30)
    first = writer.call(lambda c, now: claim(c, now, worker="a", limit=3, lease=lease))
    assert {r.id for r in first} == {prompt, backlog[0], backlog[1]}, "the prompt came forward; the welcome waits"
    writer.call(lambda c, now: record_sent(c, now, row_id=prompt, worker="a",
                                           result=SendResult(message_id=fake_sid(2), status="queued")))
    second = writer.call(lambda c, now: claim(c, now, worker="b", limit=1, lease=lease))
    assert [r.id for r in second] == [welcome]


def test_a_stop_reply_does_not_wait_for_the_phones_earlier_texts(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    writer = gateway.state.writer
    prompt = _enqueue(gateway, PHONE, "doi_prompt")
    writer.call(lambda c, now: claim(c, now, worker="a", limit=10, lease=timedelta(seconds=30)))  # in flight
    stop = _enqueue(gateway, PHONE, "stop")
    claimed = writer.call(lambda c, now: claim(c, now, worker="b", limit=10, lease=timedelta(seconds=30)))
    assert [r.id for r in claimed] == [stop], f"the stop went out while prompt {prompt} was in flight"


def test_a_yes_before_the_prompt_went_out_still_gets_prompt_then_welcome(
        gateway_factory: Callable[..., Gateway], database_url: str) -> None:
    gateway = gateway_factory(database_url, inprocess_worker=False, send_concurrency=4)
    assert gateway.text("JOIN", from_=PHONE).status_code == 200
    assert gateway.text("YES", from_=PHONE).status_code == 200  # the prompt is still queued
    while asyncio.run(gateway.state.sender.run_once()):
        pass
    bodies = [m.body for m in gateway.fake.messages(to=PHONE)]
    assert len(bodies) == 2 and "YES" in bodies[0] and "YES" not in bodies[1], bodies


def test_a_stop_reply_not_yet_due_does_not_jump_the_queue(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    prompt = _enqueue(gateway, "+14155550100", "doi_prompt")
    stop = _enqueue(gateway, PHONE, "stop")
    later = gateway.clock() + timedelta(minutes=5)
    gateway.state.writer.call(lambda c, now: c.execute(
        sa.text("UPDATE outbox SET next_attempt_at = :t WHERE id = :i"), {"t": later, "i": stop}))
    claimed = gateway.state.writer.call(lambda c, now: claim(c, now, worker="a", limit=10, lease=timedelta(seconds=30)))
    assert [r.id for r in claimed] == [prompt]


def test_a_stop_goes_out_first_behind_a_burst_of_prompts(gateway_factory: Callable[..., Gateway], database_url: str) -> None:
    gateway = gateway_factory(database_url, inprocess_worker=False, send_concurrency=1)
    joiners = [f"+1415555010{i}" for i in range(6)]
    for phone in joiners:
        assert gateway.text("JOIN", from_=phone).status_code == 200
    assert gateway.text("STOP", from_=PHONE).status_code == 200
    # One pass of a sender that sends one at a time: claim 4 (concurrency x 4), stop first.
    assert asyncio.run(gateway.state.sender.run_once()) == 4
    sent = gateway.fake.messages()
    assert [m.to for m in sent] == [PHONE, *joiners[:3]]
    assert sent[0].body.startswith("ACME: you are unsubscribed")


def test_concurrent_claims_skip_locked_rows_on_postgresql(quiet_gateway: Gateway, database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE; SKIP LOCKED is PostgreSQL's")
    gateway = quiet_gateway
    ids = [_enqueue(gateway, f"+1415555010{i}", "doi_prompt") for i in range(4)]
    engine = sa.create_engine(database_url)
    try:
        now = gateway.clock()
        with engine.connect() as first, engine.connect() as second:
            with first.begin():
                mine = claim(first, now, worker="a", limit=2, lease=timedelta(seconds=30))
                with second.begin():
                    # Blocking on the first claim's locks would be the bug; fail fast instead of hanging.
                    second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                    theirs = claim(second, now, worker="b", limit=10, lease=timedelta(seconds=30))
        assert [r.id for r in mine] == ids[:2]
        assert [r.id for r in theirs] == ids[2:]
    finally:
        engine.dispose()


# --- backoff ---------------------------------------------------------------------------------


BACKOFF = [
    pytest.param(1, 2.0, 600.0, 2.0, id="first"),
    pytest.param(2, 2.0, 600.0, 4.0, id="second"),
    pytest.param(5, 2.0, 600.0, 32.0, id="fifth"),
    pytest.param(9, 2.0, 600.0, 512.0, id="just-under-cap"),
    pytest.param(10, 2.0, 600.0, 600.0, id="capped"),
    pytest.param(100, 2.0, 600.0, 600.0, id="max-attempts"),
    pytest.param(1, 0.05, 0.2, 0.05, id="test-settings-first"),
    pytest.param(4, 0.05, 0.2, 0.2, id="test-settings-capped"),
]


@pytest.mark.parametrize("attempt,base,cap,bound", BACKOFF)
def test_backoff_is_full_jitter_under_the_capped_exponential(attempt: int, base: float, cap: float, bound: float) -> None:
    rng = random.Random(attempt)
    samples = [backoff(attempt, base=base, cap=cap, rng=rng) for _ in range(2000)]
    assert all(0 <= s <= bound for s in samples)
    # Full jitter: spread over the whole interval, not bunched near its top ("equal jitter").
    assert min(samples) < 0.02 * bound and max(samples) > 0.98 * bound
    assert statistics.mean(samples) == pytest.approx(bound / 2, rel=0.05)


def test_backoff_is_reproducible_with_a_seeded_random() -> None:
    first = [backoff(n, base=2.0, cap=600.0, rng=random.Random(7)) for n in range(1, 12)]
    again = [backoff(n, base=2.0, cap=600.0, rng=random.Random(7)) for n in range(1, 12)]
    assert first == again


def test_postgresql_claims_walk_the_due_index_on_a_table_without_statistics(unanalysed_pg_url: str) -> None:
    """Without statistics, PostgreSQL fetched the whole backlog, tested each row's turn and sorted it: a claim cost
    4.5 ms behind 5,000 prompts. Each claim query must walk its index in due order and stop at the limit."""
    engine = make_engine(unanalysed_pg_url, writer=True)
    plans: list[str] = []
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO outbox (channel, brand, program, phone, body, purpose, status, attempts, next_attempt_at,"
                " created_at, updated_at) SELECT 'sms', 'acme', 'deals', '+1415555' || lpad(g::text, 4, '0'),"
                " repeat('x', 150), 'doi_prompt', 'pending', 0, now() - interval '1 hour' + g * interval '1 ms', now(),"
                " now() FROM generate_series(1, 6000) g")  # 200 pages: enough for the planner to prefer a bitmap
        with engine.begin() as conn:
            explain_plans(conn, plans)
            claimed = claim(conn, now, worker="w", limit=8, lease=timedelta(seconds=30), channel="sms")
    finally:
        engine.dispose()
    assert [c.phone for c in claimed] == [f"+1415555{n:04d}" for n in range(1, 9)]
    picks = [plan for plan in plans if "Query Text: SELECT id" in plan and "FROM outbox" in plan]
    assert len(picks) == 3  # stop replies, the others by due time, expired leases
    for plan in picks:
        assert "Index Scan using ix_outbox" in plan, plan
        assert "Sort" not in plan and "Bitmap" not in plan, plan


def test_outbox_retry_redrives_failed_rows_that_are_still_allowed(gateway_factory: Callable[..., Gateway],
                                                                  database_url: str) -> None:
    """`optline outbox retry`: a stop reply and a help reply whose deadline passed go again; a prompt to a phone
    that opted out since, and a text the carrier refused as opted out (21610), stay failed."""
    from app.outbox.queue import Deadlines, redrive

    gateway = gateway_factory(database_url, deadline_stop_seconds=0.5, deadline_text_seconds=0.5)
    gateway.fake.fail_http(503, times=None)
    other = "+14155550100"
    gateway.text("HELP", from_=PHONE)
    gateway.text("JOIN", from_=other)
    settle(gateway)
    gateway.text("STOP", from_=other)  # its prompt failed first; the phone opted out since
    settle(gateway)
    failed = {(r.phone, r.purpose) for r in gateway.query("SELECT phone, purpose FROM outbox WHERE status = 'failed'")}
    assert failed == {(PHONE, "help"), (other, "doi_prompt"), (other, "stop")}
    gateway.fake.clear_rules()
    count = gateway.state.writer.call(lambda c, now: redrive(c, now, since=None, brand="acme", deadlines=Deadlines()))
    assert count == 2
    settle(gateway)
    rows = {(r.phone, r.purpose): r.status for r in gateway.query("SELECT phone, purpose, status FROM outbox")}
    assert rows == {(PHONE, "help"): "queued", (other, "doi_prompt"): "failed", (other, "stop"): "queued"}
    assert [m.body.split(":")[0] for m in gateway.fake.messages(to=other)] == ["ACME"]  # the stop reply, not the prompt


def test_a_row_left_dispatching_by_a_dead_sender_is_seen_as_due_after_its_lease(quiet_gateway: Gateway) -> None:
    """The sender's poll must notice it, or it waits for an unrelated wake-up (seen after a SIGKILL mid-send)."""
    gateway = quiet_gateway
    row_id = _enqueue(gateway, PHONE, "stop")
    lease = timedelta(seconds=30)
    [row] = gateway.state.writer.call(lambda c, now: claim(c, now, worker="dead", limit=1, lease=lease))
    gateway.state.writer.call(lambda c, now: dispatch(c, now, row_id=row.id, worker="dead"))
    assert outbox_row(gateway).status == "dispatching"
    assert not gateway.state.sender._has_due("sms")  # the lease still runs
    gateway.clock.advance(seconds=31)
    assert gateway.state.sender._has_due("sms")
    assert row.id == row_id
