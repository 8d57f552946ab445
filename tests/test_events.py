"""SPEC §7 brand events: payloads, Standard Webhooks signing, delivery through the outbox, start-up checks.

Deliveries go to `tests.event_receiver`, a real HTTP server that verifies every request with
the `standardwebhooks` library as a brand's receiver would. The outbox tests run the real
in-process sender on SQLite and PostgreSQL; the fake clock only moves when `settle` moves
it, so backed-off retries are driven, never slept for.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app import cli
from app.errors import ConfigError
from app.events import (
    CHANNEL,
    MESSAGE_RECEIVED,
    SUBSCRIPTION_UPDATED,
    EventPoster,
    event_row,
    event_environ,
    iso,
    load_event_secrets,
    message_received_event,
    parse_secret,
    subscription_event,
)
from app.consent import Writes
from app.keywords import Brand, Rules, load_rules
from app.main import build_state
from app.models import consent_events, inbound_messages
from app.outbox.queue import CHANNEL_EVENT, Claimed, OutboxStatus
from app.providers.base import SendError
from app.sql import Raw
from app.subscriptions import Event, Source, Status
from tests.conftest import KEYWORDS, Gateway, make_settings
from tests.event_receiver import SECRET, EventReceiver, event_receiver  # noqa: F401 - the fixture
from tests.fake_twilio import FakeTwilio

SECRET_ENV = "TEST_EVENTS_SECRET"
ZEN = "+15005550008"  # zen's sender; zen sends events
QUIET = "+15005550009"  # quiet's sender; quiet has no events.url
PHONE = "+14155550123"
T0 = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
# record_sent marks an accepted send 'queued' (for a text, the provider's first status). For an
# event a 2xx answer is final, so 'delivered' would be the better word; either means "done".
EVENT_DONE = ("queued", "delivered")

EVENTS_KEYWORDS = """\
version: 1
brands:
  zen:
    name: Zen Tea
    help_contact: help@zen.example
    events:
      url: "%(url)s"
      secret_env: %(env)s
    programs:
      tips:
        name: Zen Tips
        senders: ["%(zen)s"]
        keywords: {join: [TEA]}
        messages: &messages
          doi_prompt: "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."
          welcome: "{program}: you're in. Reply STOP to cancel."
          stop: "{program}: unsubscribed. Help: {help_contact}"
          help: "{program}. Help: {help_contact}. Reply STOP to cancel."
  quiet:
    name: Quiet Shop
    help_contact: help@quiet.example
    programs:
      news:
        name: Quiet News
        senders: ["%(quiet)s"]
        keywords: {join: [NEWS]}
        messages: *messages
"""


# --- helpers -------------------------------------------------------------------------------


def write_keywords(folder: Path, url: str) -> Path:
    path = folder / "events.yaml"
    path.write_text(EVENTS_KEYWORDS % {"url": url, "env": SECRET_ENV, "zen": ZEN, "quiet": QUIET}, encoding="utf-8")
    return path


def secret(nbytes: int = 32) -> str:
    return "whsec_" + base64.b64encode(bytes(range(nbytes))).decode()


def settle(gateway: Gateway, *, timeout: float = 2.5) -> None:
    """Wait until nothing is due or in flight, moving the fake clock past each retry's backoff (cap 0.2 s)."""
    gateway.drain(timeout, advance=0.25)


def typed(gateway: Gateway, query: sa.Select[Any]) -> list[Any]:
    """The first column of `query`'s rows, through the table types (aware UTC datetimes on both engines)."""
    with gateway.state.reader.connect() as conn:
        return list(conn.execute(query).scalars())


def event_rows(gateway: Gateway) -> list[Any]:
    return gateway.query(
        "SELECT id, channel, brand, program, phone, body, purpose, status, attempts, url, payload, error_code, "
        "error_reason, provider_message_id FROM outbox WHERE channel = 'event' ORDER BY id")


def payload_of(row: Any) -> dict[str, Any]:
    """The stored payload (a dict on both engines; a JSON string if a driver hands back text)."""
    return json.loads(row.payload) if isinstance(row.payload, str) else dict(row.payload)


def queue_event(conn: sa.Connection, now: datetime, *, brand: Brand, type: str = SUBSCRIPTION_UPDATED,
                data: dict[str, Any] | None = None) -> int | None:
    """Queue one event in the caller's transaction, as the hot path does; its outbox id (None: no events.url)."""
    row = event_row(now, brand=brand, type=type, data=data or sample_data(now))
    if row is None:
        return None
    writes = Writes()
    writes.event(row)
    writes.flush(conn)
    return int(Raw(conn).scalar("SELECT max(id) FROM outbox WHERE channel = 'event'"))


def enqueue(gateway: Gateway, *, brand: str = "zen", type: str = SUBSCRIPTION_UPDATED,
            data: dict[str, Any] | None = None) -> int | None:
    """Queue one event through the gateway's writer."""
    brand_rules = gateway.state.rules.brand(brand)
    return gateway.state.writer.call(  # type: ignore[no-any-return]
        lambda conn, now: queue_event(conn, now, brand=brand_rules, type=type, data=data))


def sample_data(now: datetime) -> dict[str, Any]:
    return subscription_event(
        brand="zen", program="tips", phone=PHONE, subscription_id="sub_01TEST", event=Event.JOIN,
        from_status=Status.NONE, to_status=Status.PENDING, source=Source.SMS, occurred_at=now, keyword="TEA",
        provider_message_id="SM" + "0" * 32,
    )


def claimed(url: str, *, brand: str = "zen", payload: Any = None, row_id: int = 1) -> Claimed:
    """An event row as the sender hands it to the poster."""
    if payload is None:
        payload = {"id": f"evt_TEST{row_id}", "type": SUBSCRIPTION_UPDATED, "timestamp": "2026-03-01T12:30:45Z",
                   "data": sample_data(T0)}
    return Claimed(id=row_id, channel=CHANNEL_EVENT, brand=brand, program=None, phone=None, body="",
                   purpose=SUBSCRIPTION_UPDATED, from_number=None, service_id=None, attempts=1, url=url,
                   payload=payload, created_at=T0, deadline_at=None)


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/optline"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def events_keywords(tmp_path: Path, event_receiver: EventReceiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A keywords file whose brand `zen` sends events to the receiver, with its secret in the environment."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return write_keywords(tmp_path, event_receiver.url)


@pytest.fixture
def events_rules(events_keywords: Path) -> Rules:
    return load_rules(events_keywords)


@pytest.fixture
def poster(events_rules: Rules) -> Iterator[EventPoster]:
    poster = EventPoster(events_rules, timeout=2.0, environ={SECRET_ENV: SECRET})
    yield poster
    poster.close()


@pytest.fixture
def events_gateway(gateway_factory: Callable[..., Gateway], database_url: str, events_keywords: Path) -> Gateway:
    """optline on each database, sending texts to the fake Twilio and events to the receiver."""
    return gateway_factory(database_url, keywords=str(events_keywords))


@pytest.fixture
def quiet_events_gateway(gateway_factory: Callable[..., Gateway], database_url: str, events_keywords: Path) -> Gateway:
    """The same, with the in-process sender off: rows stay as enqueued."""
    return gateway_factory(database_url, keywords=str(events_keywords), inprocess_worker=False)


# --- payloads (pure) -----------------------------------------------------------------------


def test_subscription_event_data_is_camel_case_with_utc_times() -> None:
    data = subscription_event(
        brand="zen", program="tips", phone=PHONE, subscription_id="sub_01TEST", event=Event.CONFIRM,
        from_status=Status.PENDING, to_status=Status.SUBSCRIBED, source=Source.SMS, occurred_at=T0,
        keyword="YES", provider_message_id="SM123",
    )
    assert data == {
        "brand": "zen", "program": "tips", "phoneNumber": PHONE, "subscriptionId": "sub_01TEST",
        "event": "confirm", "fromStatus": "pendingDOI", "toStatus": "subscribed", "source": "sms",
        "keyword": "YES", "providerMessageId": "SM123", "occurredAt": "2026-03-01T12:30:45.123456Z",
    }
    assert json.loads(json.dumps(data)) == data  # plain JSON: storable in the outbox as is


def test_subscription_event_accepts_plain_strings_and_defaults() -> None:
    data = subscription_event(
        brand="zen", program="tips", phone=PHONE, subscription_id="sub_1", event="api_opt_out",
        from_status="subscribed", to_status="unsubscribed", source="api", occurred_at=T0,
    )
    assert (data["event"], data["fromStatus"], data["toStatus"], data["source"]) == (
        "api_opt_out", "subscribed", "unsubscribed", "api")
    assert data["keyword"] is None and data["providerMessageId"] is None


def test_message_received_event_data() -> None:
    data = message_received_event(brand="zen", phone=PHONE, to=ZEN, body="what time do you open?",
                                  provider_message_id="SM42", received_at=T0)
    assert data == {
        "brand": "zen", "program": None, "channel": "sms", "phoneNumber": PHONE, "address": PHONE, "to": ZEN,
        "body": "what time do you open?", "media": [], "providerMessageId": "SM42",
        "receivedAt": "2026-03-01T12:30:45.123456Z",
    }


def test_outbox_constants_agree_with_app_outbox() -> None:
    from app import events

    assert CHANNEL == CHANNEL_EVENT
    assert events._PENDING == OutboxStatus.PENDING.value


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("value,nbytes", [
    pytest.param(secret(32), 32, id="whsec-32"),
    pytest.param(secret(24), 24, id="whsec-24"),
    pytest.param(secret(32).removeprefix("whsec_"), 32, id="bare-base64"),
    pytest.param(secret(32).rstrip("="), 32, id="unpadded"),
    pytest.param(f"  {secret(64)}\n", 64, id="surrounding-space"),
    pytest.param(SECRET, 24, id="spec-example"),
])
def test_parse_secret_accepts_standard_webhooks_secrets(value: str, nbytes: int) -> None:
    assert len(parse_secret(value)) == nbytes


@pytest.mark.parametrize("value", [
    pytest.param("", id="empty"),
    pytest.param("whsec_", id="prefix-only"),
    pytest.param("correct horse battery staple", id="passphrase"),
    pytest.param("whsec_not*base64*at*all*", id="not-base64"),
    pytest.param(secret(16), id="too-short"),
])
def test_parse_secret_refuses_others(value: str) -> None:
    with pytest.raises(ValueError):
        parse_secret(value)


def test_shipped_keywords_need_no_events_secret() -> None:
    # `make run` must start with no secret set: the shipped brand's events block is commented out.
    assert load_event_secrets(load_rules(KEYWORDS), {}) == {}


def test_event_secrets_are_read_from_dotenv_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"{SECRET_ENV}={SECRET}\nOTHER=from-file\n", encoding="utf-8")
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("OTHER", "from-environment")
    environ = event_environ(env_file)
    assert environ[SECRET_ENV] == SECRET
    assert environ["OTHER"] == "from-environment"  # the environment wins, as in the settings
    rules = load_rules(write_keywords(tmp_path, "https://crm.zen.example/hooks"))
    assert set(load_event_secrets(rules, environ)) == {"zen"}


MISSING = [
    pytest.param(None, "is unset or empty", id="unset"),
    pytest.param("", "is unset or empty", id="empty"),
    pytest.param("   ", "is unset or empty", id="blank"),
    pytest.param("hunter2", "is not a Standard Webhooks secret", id="not-base64"),
    pytest.param(secret(8), "is not a Standard Webhooks secret", id="too-short"),
]


@pytest.mark.parametrize("value,problem", MISSING)
def test_build_state_refuses_a_missing_events_secret(
    value: str | None, problem: str, tmp_path: Path, sqlite_url: str, fake_twilio: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if value is None:
        monkeypatch.delenv(SECRET_ENV, raising=False)
    else:
        monkeypatch.setenv(SECRET_ENV, value)
    keywords = write_keywords(tmp_path, "https://crm.zen.example/hooks")
    with pytest.raises(ConfigError) as caught:
        build_state(make_settings(sqlite_url, fake_twilio, keywords=str(keywords)))
    message = str(caught.value)
    assert "\n" not in message
    assert "brand 'zen'" in message and SECRET_ENV in message and problem in message
    assert str(keywords) in message


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_stop_with_one_line_when_the_secret_is_missing(
    command: str, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("OPTLINE_KEYWORDS", str(write_keywords(tmp_path, "https://crm.zen.example/hooks")))
    monkeypatch.setenv("OPTLINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPTLINE_PROVIDER", "console")
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert cli.main([command]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("optline: ") and SECRET_ENV in line and "brand 'zen'" in line


# --- EventPoster against the receiver ------------------------------------------------------


def test_poster_signs_so_a_standard_webhooks_receiver_verifies(poster: EventPoster, event_receiver: EventReceiver) -> None:
    row = claimed(event_receiver.url)
    poster(row)
    [delivery] = event_receiver.wait_for(1)
    assert delivery.verified and delivery.answered == 204
    assert delivery.payload == row.payload
    assert delivery.webhook_id == row.payload["id"]
    assert delivery.headers["content-type"] == "application/json"
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 5  # signed at send time
    assert delivery.headers["webhook-signature"].startswith("v1,")


def test_poster_sends_utf8_json_that_verifies(poster: EventPoster, event_receiver: EventReceiver) -> None:
    data = message_received_event(brand="zen", phone=PHONE, to=ZEN, body="Arrêt ☕ 你好", provider_message_id="SM1",
                                  received_at=T0)
    row = claimed(event_receiver.url, payload={"id": "evt_UTF8", "type": MESSAGE_RECEIVED,
                                               "timestamp": "2026-03-01T12:30:45Z", "data": data})
    poster(row)
    [delivery] = event_receiver.wait_for(1)
    assert delivery.payload["data"]["body"] == "Arrêt ☕ 你好"


ANSWERS = [
    pytest.param(500, True, id="500"),
    pytest.param(502, True, id="502"),
    pytest.param(503, True, id="503"),
    pytest.param(429, True, id="429"),
    pytest.param(408, True, id="408"),
    pytest.param(404, False, id="404"),
    pytest.param(410, False, id="410-gone"),
    pytest.param(413, False, id="413"),
    pytest.param(422, False, id="422"),
    pytest.param(301, False, id="301-not-followed"),
]


@pytest.mark.parametrize("status,transient", ANSWERS)
def test_poster_turns_answers_into_send_errors(
    status: int, transient: bool, poster: EventPoster, event_receiver: EventReceiver,
) -> None:
    event_receiver.fail(status)
    with pytest.raises(SendError) as caught:
        poster(claimed(event_receiver.url))
    assert caught.value.transient is transient
    assert caught.value.http_status == status
    assert not caught.value.opted_out
    assert f"answered {status}" in str(caught.value)
    poster(claimed(event_receiver.url))  # the next one goes through on the same client
    assert len(event_receiver.deliveries) == 1


def test_receiver_refuses_a_wrong_signature_and_the_row_fails(events_rules: Rules, event_receiver: EventReceiver) -> None:
    wrong = EventPoster(events_rules, environ={SECRET_ENV: secret(32)})
    try:
        with pytest.raises(SendError) as caught:
            wrong(claimed(event_receiver.url))
    finally:
        wrong.close()
    assert (caught.value.http_status, caught.value.transient) == (400, False)
    [request] = event_receiver.requests
    assert not request.verified and request.answered == 400
    assert event_receiver.deliveries == []


def test_poster_timeout_is_transient(events_rules: Rules, event_receiver: EventReceiver) -> None:
    impatient = EventPoster(events_rules, timeout=0.2, environ={SECRET_ENV: SECRET})
    event_receiver.delay(1.0)
    try:
        with pytest.raises(SendError) as caught:
            impatient(claimed(event_receiver.url))
        # Raised at all: the answer (a success, after the delay) never arrived, the timeout ended the wait.
        assert caught.value.transient and caught.value.http_status is None
        assert "no answer" in str(caught.value)
    finally:
        impatient.close()


def test_poster_connection_refused_is_transient(poster: EventPoster) -> None:
    with pytest.raises(SendError) as caught:
        poster(claimed(closed_port_url()))
    assert caught.value.transient and "cannot reach 127.0.0.1" in str(caught.value)


@pytest.mark.parametrize("row", [
    pytest.param(lambda url: claimed(url, brand="quiet"), id="brand-without-events"),
    pytest.param(lambda url: claimed(url, brand="gone"), id="brand-no-longer-configured"),
    pytest.param(lambda url: claimed(url, payload={"type": "x"}), id="payload-without-id"),
    pytest.param(lambda url: claimed("ftp://127.0.0.1/hooks"), id="not-http"),
])
def test_poster_fails_rows_it_cannot_send(row: Callable[[str], Claimed], poster: EventPoster,
                                          event_receiver: EventReceiver) -> None:
    with pytest.raises(SendError) as caught:
        poster(row(event_receiver.url))
    assert not caught.value.transient
    assert event_receiver.requests == []


def test_poster_is_safe_to_share_between_sender_threads(poster: EventPoster, event_receiver: EventReceiver) -> None:
    errors: list[BaseException] = []

    def post(worker: int) -> None:
        try:
            for n in range(5):
                poster(claimed(event_receiver.url, row_id=worker * 10 + n,
                               payload={"id": f"evt_{worker}_{n}", "type": SUBSCRIPTION_UPDATED,
                                        "timestamp": "2026-03-01T12:30:45Z", "data": {}}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(d.webhook_id or "" for d in event_receiver.wait_for(40)) == sorted(
        f"evt_{w}_{n}" for w in range(8) for n in range(5))


def test_closed_poster_refuses_transiently(events_rules: Rules, event_receiver: EventReceiver) -> None:
    closing = EventPoster(events_rules, environ={SECRET_ENV: SECRET})
    closing(claimed(event_receiver.url))
    closing.close()
    closing.close()  # idempotent
    with pytest.raises(SendError) as caught:
        closing(claimed(event_receiver.url))
    assert caught.value.transient  # another sender (or this one, restarted) will deliver it


# --- through the outbox --------------------------------------------------------------------


def test_an_event_is_queued_as_a_pending_event_row(quiet_events_gateway: Gateway, event_receiver: EventReceiver) -> None:
    gateway = quiet_events_gateway
    outbox_id = enqueue(gateway)
    [row] = event_rows(gateway)
    assert row.id == outbox_id
    assert (row.channel, row.brand, row.purpose, row.status, row.attempts, row.body) == (
        "event", "zen", SUBSCRIPTION_UPDATED, "pending", 0, "")
    assert (row.program, row.phone, row.provider_message_id) == (None, None, None)
    assert row.url == event_receiver.url
    payload = payload_of(row)
    assert set(payload) == {"id", "type", "timestamp", "data"}
    assert payload["id"].startswith("evt_") and len(payload["id"]) == 30
    assert payload["type"] == SUBSCRIPTION_UPDATED
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["occurredAt"] == payload["timestamp"]  # both are the transaction's `now`
    assert payload["data"]["phoneNumber"] == PHONE
    assert event_receiver.requests == []


def test_no_event_is_queued_for_a_brand_without_events(quiet_events_gateway: Gateway) -> None:
    assert enqueue(quiet_events_gateway, brand="quiet") is None
    assert event_rows(quiet_events_gateway) == []


def test_a_queued_event_belongs_to_the_callers_transaction(quiet_events_gateway: Gateway) -> None:
    gateway = quiet_events_gateway
    brand = gateway.state.rules.brand("zen")

    def job(conn: sa.Connection, now: datetime) -> None:
        queue_event(conn, now, brand=brand)
        raise RuntimeError("the status change failed")

    with pytest.raises(RuntimeError):
        gateway.state.writer.call(job)
    assert event_rows(gateway) == []


def test_event_is_delivered_signed_through_the_outbox(events_gateway: Gateway, event_receiver: EventReceiver) -> None:
    gateway = events_gateway
    outbox_id = enqueue(gateway)
    [delivery] = event_receiver.wait_for(1)
    settle(gateway)
    [row] = event_rows(gateway)
    assert row.id == outbox_id
    assert (row.status, row.attempts, row.error_reason) in [(done, 1, None) for done in EVENT_DONE]
    assert row.provider_message_id == f"event-{outbox_id}"
    assert delivery.verified and delivery.payload == payload_of(row)
    assert delivery.webhook_id == payload_of(row)["id"]
    assert gateway.fake.requests == []  # events never go to the SMS provider


TRANSIENT = [
    pytest.param(lambda r: r.fail(503, times=2), 3, id="503-twice"),
    pytest.param(lambda r: r.fail(500), 2, id="500"),
    pytest.param(lambda r: r.fail(429), 2, id="429"),
    pytest.param(lambda r: r.fail(502, times=3), 4, id="502-three-times"),
    pytest.param(lambda r: (r.fail(429), r.fail(500)), 3, id="429-then-500"),
]


@pytest.mark.parametrize("fault,attempts", TRANSIENT)
def test_transient_failures_are_retried_with_the_same_webhook_id(
    fault: Callable[[EventReceiver], Any], attempts: int, events_gateway: Gateway, event_receiver: EventReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = events_gateway
    fault(event_receiver)
    enqueue(gateway)
    event_receiver.wait_for_requests(1)
    settle(gateway)
    [row] = event_rows(gateway)
    assert (row.status, row.attempts) in [(done, attempts) for done in EVENT_DONE]
    assert row.error_code is None and row.error_reason is None  # cleared by the successful send
    requests = event_receiver.requests
    assert len(requests) == attempts
    assert {r.webhook_id for r in requests} == {payload_of(row)["id"]}  # the receiver can deduplicate
    assert all(r.verified for r in requests)  # every retry is re-signed, and verifies
    assert [r.answered for r in requests][-1] == 204
    assert len(event_receiver.deliveries) == 1
    retried = [r.getMessage() for r in caplog.records if r.name == "optline.outbox" and "will retry" in r.getMessage()]
    assert len(retried) == attempts - 1


def test_a_flaky_receiver_gets_every_event_at_least_once(events_gateway: Gateway, event_receiver: EventReceiver) -> None:
    gateway = events_gateway
    event_receiver.fail_every(3, 503)
    ids = [enqueue(gateway) for _ in range(12)]
    settle(gateway)
    rows = event_rows(gateway)
    assert [r.id for r in rows] == ids
    assert {r.status for r in rows} <= set(EVENT_DONE)
    delivered = {d.webhook_id for d in event_receiver.deliveries}
    assert delivered == {payload_of(r)["id"] for r in rows}
    failed = [r for r in event_receiver.requests if r.answered == 503]
    assert failed and all(f.webhook_id in delivered for f in failed)
    assert sum(r.attempts for r in rows) == len(event_receiver.requests)


@pytest.mark.parametrize("status", [404, 410, 422])
def test_a_permanent_answer_fails_the_row(status: int, events_gateway: Gateway, event_receiver: EventReceiver) -> None:
    gateway = events_gateway
    event_receiver.fail(status)
    enqueue(gateway)
    event_receiver.wait_for_requests(1)
    settle(gateway)
    [row] = event_rows(gateway)
    assert (row.status, row.attempts) == ("failed", 1)
    assert f"answered {status}" in row.error_reason and f"HTTP {status}" in row.error_reason
    assert len(event_receiver.requests) == 1


def test_retries_end_at_the_deadline(
    gateway_factory: Callable[..., Gateway], database_url: str, events_keywords: Path, event_receiver: EventReceiver,
) -> None:
    gateway = gateway_factory(database_url, keywords=str(events_keywords), deadline_event_seconds=3.0)
    event_receiver.fail(503, times=None)
    enqueue(gateway)
    settle(gateway)
    [row] = event_rows(gateway)
    assert row.status == "failed" and row.attempts >= 1
    assert "answered 503" in row.error_reason
    assert len(event_receiver.requests) == row.attempts and event_receiver.deliveries == []


def test_an_unreachable_receiver_is_retried(
    gateway_factory: Callable[..., Gateway], database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    keywords = write_keywords(tmp_path, closed_port_url())
    gateway = gateway_factory(database_url, keywords=str(keywords), deadline_event_seconds=3.0)
    enqueue(gateway)
    settle(gateway)
    [row] = event_rows(gateway)
    assert row.status == "failed" and row.attempts >= 1  # retried until the deadline passed
    assert "cannot reach 127.0.0.1" in row.error_reason


# --- end to end: texts produce events (the hooks in app.consent / app.inbound) ---------------


def test_a_join_text_sends_subscription_updated(events_gateway: Gateway, event_receiver: EventReceiver) -> None:
    gateway = events_gateway
    response = gateway.text("TEA", from_=PHONE, to=ZEN)
    assert response.status_code == 200
    [delivery] = event_receiver.wait_for(1, timeout=1.5)
    settle(gateway)
    payload = delivery.payload
    assert payload["type"] == SUBSCRIPTION_UPDATED and delivery.webhook_id == payload["id"]
    [sub_id] = [r[0] for r in gateway.query("SELECT id FROM subscriptions WHERE phone = :p", p=PHONE)]
    [created_at] = typed(gateway, sa.select(consent_events.c.created_at).where(consent_events.c.phone == PHONE))
    assert payload["data"] == {
        "brand": "zen", "program": "tips", "phoneNumber": PHONE, "subscriptionId": sub_id, "event": "join",
        "fromStatus": "none", "toStatus": "pendingDOI", "source": "sms", "keyword": "TEA",
        "providerMessageId": response.params["MessageSid"],
        "occurredAt": iso(created_at),
    }
    [row] = event_rows(gateway)
    assert row.status in EVENT_DONE
    assert gateway.replies(PHONE) and "reply YES" in gateway.replies(PHONE)[0]  # the DOI prompt went too


def test_an_unmatched_text_sends_message_received(events_gateway: Gateway, event_receiver: EventReceiver) -> None:
    gateway = events_gateway
    response = gateway.text("what time do you open?", from_=PHONE, to=ZEN)
    assert response.status_code == 200
    [delivery] = event_receiver.wait_for(1, timeout=1.5)
    settle(gateway)
    [received_at] = typed(gateway, sa.select(inbound_messages.c.received_at).where(
        inbound_messages.c.message_id == response.params["MessageSid"]))
    assert delivery.payload["type"] == MESSAGE_RECEIVED
    assert delivery.payload["data"] == {
        "brand": "zen", "program": None, "channel": "sms", "phoneNumber": PHONE, "address": PHONE, "to": ZEN,
        "body": "what time do you open?", "media": [], "providerMessageId": response.params["MessageSid"],
        "receivedAt": iso(received_at),
    }
    assert gateway.replies(PHONE) == []  # an unmatched text gets no reply
    assert gateway.subs(PHONE) == {}  # and changes nothing


def test_texts_to_a_brand_without_events_send_none(gateway_factory: Callable[..., Gateway], database_url: str,
                                                   events_keywords: Path, event_receiver: EventReceiver) -> None:
    gateway = gateway_factory(database_url, keywords=str(events_keywords))
    assert gateway.text("NEWS", from_=PHONE, to=QUIET).status_code == 200
    assert gateway.text("hello?", from_=PHONE, to=QUIET).status_code == 200
    settle(gateway)
    assert event_rows(gateway) == []
    assert event_receiver.requests == []
