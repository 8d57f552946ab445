"""The provider contract: every adapter holds the same conversations, through the real app, against its fake.

One table (CONVERSATIONS) × every driver in tests/contract (Twilio, Telnyx, Plivo, Vonage).
Each conversation speaks only in the driver's terms (signed inbound texts, delivery reports,
the provider's own opt-out signal) and checks only what a brand would see: the replies the
provider's API received, subscriptions, the consent ledger and the outbox. The core ones run
on SQLite and PostgreSQL, the rest on SQLite.

| conversation | expected |
|---|---|
| join_prompts_from_the_sender | JOIN → 200; the DOI prompt reaches the provider from our sender, with the status URL |
| yes_welcomes | YES after JOIN → welcome; subscribed |
| stop_unsubscribes_and_confirms | STOP → the stop reply; unsubscribed (source sms) |
| help_answers | HELP → the help reply; nothing subscribed |
| start_after_stop_prompts_again | START after STOP → the prompt again; pendingDOI |
| provider_opt_out_signal | the provider's own opt-out → every program on the sender unsubscribed (carrier), no reply |
| opt_out_report | a report refusing a text for an opt-out → unsubscribed (carrier), the row failed |
| refused_send_opts_out | a send refused for an opt-out (at the API or in its report) → unsubscribed (carrier) |
| reports_in_order | sent, then delivered → the row is sent, then delivered |
| reports_out_of_order | delivered, then sent / queued / undelivered → delivered throughout |
| bad_signature_stores_nothing | no, a foreign or another body's signature → 403, nothing stored or sent; a forged report changes nothing |
| replay_changes_nothing | the same signed text twice → 200 twice, one inbound row, one reply |
| malformed_is_400 | a signed payload the adapter cannot read → 400, nothing stored |

Outside the table: brands on different providers in one deployment, and a provider that is
not enabled (404).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from app.settings import PROJECT_ROOT
from tests.conftest import FakeClock
from tests.contract import DRIVERS
from tests.contract.deployment import PROGRAMS, PUBLIC_URL, Deployment, reply_text
from tests.contract.driver import Driver, Sent, Webhook

PHONE = "+14155550123"

Conversation = Callable[[Driver, Deployment], None]
CONVERSATIONS: list[tuple[Conversation, bool]] = []  # (conversation, core: also on PostgreSQL)


def conversation(*, core: bool) -> Callable[[Conversation], Conversation]:
    """Add a conversation to the table; `core` ones also run on PostgreSQL."""

    def register(function: Conversation) -> Conversation:
        CONVERSATIONS.append((function, core))
        return function

    return register


def only(sent: Sequence[Sent], driver: Driver, what: str) -> Sent:
    """The one text in `sent`; fails naming what was expected."""
    assert len(sent) == 1, f"{driver.name}: expected one {what}, the provider received {[s.text for s in sent]}"
    return sent[0]


def assert_reply(sent: Sent, driver: Driver, kind: str, program: str | None = "alerts") -> None:
    """`sent` is reply `kind` to PHONE from the driver's sender, with its status callback URL."""
    assert (sent.to, sent.from_, sent.text) == (PHONE, driver.sender, reply_text(driver, kind, program))
    assert sent.status_callback == PUBLIC_URL + f"/webhooks/{driver.name}/status"


def join(driver: Driver, app: Deployment) -> Sent:
    """JOIN from PHONE: the prompt it got."""
    prompt = only(app.text(driver, PHONE, "JOIN"), driver, "doi_prompt")
    assert_reply(prompt, driver, "doi_prompt")
    return prompt


# --- the table ---------------------------------------------------------------------------------


@conversation(core=True)
def join_prompts_from_the_sender(driver: Driver, app: Deployment) -> None:
    webhook = driver.inbound(PHONE, driver.sender, "JOIN")
    assert app.post(webhook).status_code == 200
    app.drain()
    assert_reply(only(driver.sent(), driver, "doi_prompt"), driver, "doi_prompt")
    assert app.subs(PHONE, driver.name) == {"alerts": "pendingDOI"}
    rows = app.query("SELECT provider, message_id, from_phone, body FROM inbound_messages")
    assert [tuple(row) for row in rows] == [(driver.name, webhook.message_id, PHONE, "JOIN")]


@conversation(core=True)
def yes_welcomes(driver: Driver, app: Deployment) -> None:
    join(driver, app)
    assert_reply(only(app.text(driver, PHONE, "YES"), driver, "welcome"), driver, "welcome")
    assert app.subs(PHONE, driver.name) == {"alerts": "subscribed"}


@conversation(core=True)
def stop_unsubscribes_and_confirms(driver: Driver, app: Deployment) -> None:
    join(driver, app)
    app.text(driver, PHONE, "YES")
    # The sender hosts two programs: a bare STOP leaves both, answered by the brand.
    assert_reply(only(app.text(driver, PHONE, "STOP"), driver, "stop"), driver, "stop", program=None)
    assert app.subs(PHONE, driver.name)["alerts"] == "unsubscribed"
    assert ("alerts", "stop", "unsubscribed", "sms") in app.consent(PHONE, driver.name)


@conversation(core=False)
def help_answers(driver: Driver, app: Deployment) -> None:
    assert_reply(only(app.text(driver, PHONE, "HELP"), driver, "help"), driver, "help", program=None)
    assert "subscribed" not in app.subs(PHONE, driver.name).values()


@conversation(core=True)
def start_after_stop_prompts_again(driver: Driver, app: Deployment) -> None:
    join(driver, app)
    app.text(driver, PHONE, "STOP")
    app.clock.advance(hours=1)  # past the prompt cooldown: this is about START, not about pacing
    assert_reply(only(app.text(driver, PHONE, "START"), driver, "doi_prompt"), driver, "doi_prompt")
    assert app.subs(PHONE, driver.name)["alerts"] == "pendingDOI"


@conversation(core=True)
def provider_opt_out_signal(driver: Driver, app: Deployment) -> None:
    for keyword in PROGRAMS.values():  # subscribed to both programs on the sender
        app.text(driver, PHONE, keyword)
        app.text(driver, PHONE, "YES")
        app.clock.advance(hours=1)
    assert app.subs(PHONE, driver.name) == {"alerts": "subscribed", "news": "subscribed"}
    sent = driver.sent()
    before = len(app.consent(PHONE, driver.name))
    response = app.post(driver.opt_out_signal(PHONE, driver.sender, sent[-1]))
    assert response.status_code == 200, response.text
    app.drain()
    assert driver.sent() == sent, "the provider answered its own opt-out: optline must send nothing"
    assert app.subs(PHONE, driver.name) == {"alerts": "unsubscribed", "news": "unsubscribed"}
    after = app.consent(PHONE, driver.name)[before:]
    assert sorted(after) == [("alerts", "carrier_opt_out", "unsubscribed", "carrier"),
                             ("news", "carrier_opt_out", "unsubscribed", "carrier")]


@conversation(core=False)
def opt_out_report(driver: Driver, app: Deployment) -> None:
    prompt = join(driver, app)
    response = app.post(driver.opt_out_report(prompt))
    assert response.status_code == 200, response.text
    app.drain()
    assert driver.sent() == [prompt]
    assert app.subs(PHONE, driver.name)["alerts"] == "unsubscribed"
    assert ("alerts", "carrier_opt_out", "unsubscribed", "carrier") in app.consent(PHONE, driver.name)
    assert app.outbox_status(prompt.message_id) == "failed"


@conversation(core=True)
def refused_send_opts_out(driver: Driver, app: Deployment) -> None:
    refused_at_api = driver.refuse_next_send(PHONE)
    sent = app.text(driver, PHONE, "JOIN")
    if refused_at_api:
        assert sent == [], "the provider refused the send: nothing reached it"
        rows = app.query("SELECT status, error_code FROM outbox")
        assert [row.status for row in rows] == ["failed"]
        assert rows[0].error_code is not None
    else:
        # Accepted, then refused in its delivery report.
        prompt = only(sent, driver, "doi_prompt")
        assert app.post(driver.opt_out_report(prompt)).status_code == 200
        app.drain()
    assert app.subs(PHONE, driver.name)["alerts"] == "unsubscribed"
    assert app.consent(PHONE, driver.name)[-1] == ("alerts", "carrier_opt_out", "unsubscribed", "carrier")


@conversation(core=False)
def reports_in_order(driver: Driver, app: Deployment) -> None:
    prompt = join(driver, app)
    assert app.outbox_status(prompt.message_id) == "queued"
    for neutral in ("sent", "delivered"):
        webhook = driver.status(prompt, neutral)
        assert webhook is not None, f"{driver.name} has no {neutral} report"
        assert app.post(webhook).status_code == 200
        assert app.outbox_status(prompt.message_id) == neutral


@conversation(core=True)
def reports_out_of_order(driver: Driver, app: Deployment) -> None:
    prompt = join(driver, app)
    posted = []
    for neutral in ("delivered", "sent", "queued", "undelivered", "failed"):
        webhook = driver.status(prompt, neutral)
        if webhook is None:
            continue  # the provider has no such report
        response = app.post(webhook)
        assert response.status_code == 200, f"{neutral}: {response.status_code} {response.text}"
        posted.append(neutral)
        assert app.outbox_status(prompt.message_id) == "delivered", f"after {posted}"
    assert len(posted) >= 3
    assert driver.sent() == [prompt]


@conversation(core=True)
def bad_signature_stores_nothing(driver: Driver, app: Deployment) -> None:
    join_text = driver.inbound(PHONE, driver.sender, "JOIN")
    stop_text = driver.inbound(PHONE, driver.sender, "STOP")
    unsigned = {k: v for k, v in join_text.headers.items() if k not in driver.signature_headers}
    bad = {
        "missing": Webhook(join_text.path, unsigned, join_text.body),
        "another key": driver.forge(join_text),
        "another body": Webhook(stop_text.path, join_text.headers, stop_text.body),
    }
    empty = app.stored()
    for name, webhook in bad.items():
        response = app.post(webhook)
        assert response.status_code == 403, f"{name}: {response.status_code} {response.text}"
    app.drain()
    assert app.stored() == empty
    assert driver.sent() == []
    # A report is refused alike and moves nothing.
    prompt = join(driver, app)
    delivered = driver.status(prompt, "delivered")
    assert delivered is not None
    assert app.post(driver.forge(delivered)).status_code == 403
    assert app.outbox_status(prompt.message_id) == "queued"


@conversation(core=True)
def replay_changes_nothing(driver: Driver, app: Deployment) -> None:
    webhook = driver.inbound(PHONE, driver.sender, "JOIN")
    for _ in range(2):
        response = app.post(webhook)
        assert response.status_code == 200, response.text
        app.drain()
    assert_reply(only(driver.sent(), driver, "doi_prompt"), driver, "doi_prompt")
    assert app.count("inbound_messages") == 1
    assert app.count("outbox") == 1
    assert len(app.consent(PHONE, driver.name)) == 1


@conversation(core=False)
def malformed_is_400(driver: Driver, app: Deployment) -> None:
    empty = app.stored()
    response = app.post(driver.malformed(PHONE, driver.sender))
    assert response.status_code == 400, f"{response.status_code} {response.text}"
    assert app.stored() == empty
    assert driver.sent() == []


# --- running the table --------------------------------------------------------------------------


def _cases() -> Iterator[Any]:
    for driver in DRIVERS:
        for function, core in CONVERSATIONS:
            for engine in ("sqlite", "postgresql") if core else ("sqlite",):
                yield pytest.param(driver, function, engine, id=f"{driver.name}-{function.__name__}-{engine}")


@pytest.fixture
def deploy(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[[Sequence[Driver], str], Deployment]]:
    """Start deployments for a test; each is stopped after it."""
    opened: list[Deployment] = []

    def build(drivers: Sequence[Driver], database_url: str) -> Deployment:
        deployment = Deployment(drivers, database_url=database_url, tmp_path=tmp_path / str(len(opened)), clock=clock)
        opened.append(deployment)
        return deployment

    yield build
    for deployment in reversed(opened):
        deployment.close()


@pytest.mark.parametrize(("driver_class", "function", "database_url"), list(_cases()), indirect=["database_url"])
def test_contract(driver_class: type[Driver], function: Conversation, database_url: str,
                  deploy: Callable[[Sequence[Driver], str], Deployment]) -> None:
    driver = driver_class()
    function(driver, deploy([driver], database_url))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_brands_on_different_providers_share_one_deployment(
        database_url: str, deploy: Callable[[Sequence[Driver], str], Deployment]) -> None:
    drivers = [driver_class() for driver_class in DRIVERS]
    app = deploy(drivers, database_url)
    for driver in drivers:
        # The same phone joins every brand; each prompt leaves through that brand's provider.
        assert_reply(only(app.text(driver, PHONE, "JOIN"), driver, "doi_prompt"), driver, "doi_prompt")
    first, *others = drivers
    assert_reply(only(app.text(first, PHONE, "STOP"), first, "stop"), first, "stop", program=None)
    for driver in drivers:
        assert len(driver.sent()) == (2 if driver is first else 1), driver.name
        assert app.subs(PHONE, driver.name)["alerts"] == ("unsubscribed" if driver is first else "pendingDOI")
    inbound = app.query("SELECT provider, brand FROM inbound_messages ORDER BY id")
    assert [tuple(row) for row in inbound] == [(d.name, d.name) for d in drivers] + [(first.name, first.name)]


def test_a_provider_not_enabled_has_no_webhook(
        sqlite_url: str, deploy: Callable[[Sequence[Driver], str], Deployment]) -> None:
    enabled, *others = (driver_class() for driver_class in DRIVERS)
    app = deploy([enabled], sqlite_url)
    for driver in others:
        driver.public_url = PUBLIC_URL
        response = app.post(driver.inbound(PHONE, driver.sender, "JOIN"))
        assert response.status_code == 404, f"{driver.name}: {response.status_code}"
    assert app.count("inbound_messages") == 0


def test_every_driver_cites_its_wire_format() -> None:
    for driver in DRIVERS:
        assert driver.wire_format, driver.name
        assert all(source.startswith(("https://", "tests/")) for source in driver.wire_format), driver.name
        cited_files = [source for source in driver.wire_format if source.startswith("tests/")]
        assert all((PROJECT_ROOT / source).exists() for source in cited_files), driver.name
    assert {driver.name for driver in DRIVERS} >= {"twilio", "telnyx", "plivo", "vonage"}
