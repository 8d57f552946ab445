"""The provider contract: every adapter holds the same conversations, through the real app, against its fake.

One table (CONVERSATIONS) × every driver in tests/contract (Twilio, Telnyx, Plivo, Vonage).
Each conversation speaks only in the driver's terms (signed inbound texts, delivery reports,
the provider's own opt-out signal) and checks only what a brand would see: the replies the
provider's API received, subscriptions, the consent ledger and the outbox. The core ones run
on SQLite and PostgreSQL, the rest on SQLite. One deployment per driver and database serves
its whole column of the table, as one optline serves many phones: each conversation texts
from a phone of its own.

| conversation | core | expected |
|---|---|---|
| join_prompts_from_the_sender | ✓ | JOIN → 200; the DOI prompt reaches the provider from our sender, with the status URL |
| yes_welcomes | ✓ | YES after JOIN → welcome; subscribed |
| stop_unsubscribes_and_confirms | ✓ | STOP → the stop reply; unsubscribed (source sms) |
| help_answers |  | HELP → the help reply; nothing subscribed |
| start_after_stop_prompts_again | ✓ | START after STOP → the prompt again; pendingDOI |
| provider_opt_out_signal | ✓ | the provider's own opt-out → every program on the sender unsubscribed (carrier), no reply |
| opt_out_report |  | a report refusing a text for an opt-out → unsubscribed (carrier), the row failed |
| refused_send_opts_out | ✓ | a send refused for an opt-out (at the API or in its report) → unsubscribed (carrier) |
| reports_in_order |  | sent, then delivered → the row is sent, then delivered |
| reports_out_of_order | ✓ | delivered, then sent / queued / undelivered → delivered throughout |
| bad_signature_stores_nothing | ✓ | a missing, foreign or another body's signature → 403, nothing stored or sent; a forged report changes nothing |
| replay_changes_nothing | ✓ | the same signed text, copies at once and one later → 200 each, one inbound row, one reply |
| malformed_is_400 |  | a signed payload the adapter cannot read → 400, nothing stored |

Outside the table: brands on different providers in one deployment, and a provider that is
not enabled (404).
"""

from __future__ import annotations

import itertools
import shutil
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from app.settings import PROJECT_ROOT
from tests.conftest import FakeClock, _truncate, new_pg_database
from tests.contract import DRIVERS
from tests.contract.deployment import PROGRAMS, PUBLIC_URL, Deployment, reply_text
from tests.contract.driver import Driver, Sent, Webhook

Conversation = Callable[[Driver, Deployment, str], None]
CONVERSATIONS: list[tuple[Conversation, bool]] = []  # (conversation, core: also on PostgreSQL)
_phones = itertools.count(100)
REPLAYS = 5  # copies of one webhook posted at once


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


def assert_reply(sent: Sent, driver: Driver, phone: str, kind: str, program: str | None = "alerts") -> None:
    """`sent` is reply `kind` to `phone` from the driver's sender, with its status callback URL."""
    assert (sent.to, sent.from_, sent.text) == (phone, driver.sender, reply_text(driver, kind, program))
    assert sent.status_callback == PUBLIC_URL + f"/webhooks/{driver.name}/status"


def join(driver: Driver, app: Deployment, phone: str) -> Sent:
    """JOIN from `phone`: the prompt it got."""
    prompt = only(app.text(driver, phone, "JOIN"), driver, "doi_prompt")
    assert_reply(prompt, driver, phone, "doi_prompt")
    return prompt


# --- the table ---------------------------------------------------------------------------------


@conversation(core=True)
def join_prompts_from_the_sender(driver: Driver, app: Deployment, phone: str) -> None:
    webhook = driver.inbound(phone, driver.sender, "JOIN")
    response = app.post(webhook)
    assert (response.status_code, response.content in driver.acknowledgements) == (200, True), response.content
    app.drain()
    assert_reply(only(app.sent(driver, phone), driver, "doi_prompt"), driver, phone, "doi_prompt")
    assert app.subs(phone, driver.name) == {"alerts": "pendingDOI"}
    rows = app.query("SELECT provider, message_id, brand, body FROM inbound_messages WHERE from_phone = :p", p=phone)
    assert [tuple(row) for row in rows] == [(driver.name, webhook.message_id, driver.name, "JOIN")]


@conversation(core=True)
def yes_welcomes(driver: Driver, app: Deployment, phone: str) -> None:
    join(driver, app, phone)
    assert_reply(only(app.text(driver, phone, "YES"), driver, "welcome"), driver, phone, "welcome")
    assert app.subs(phone, driver.name) == {"alerts": "subscribed"}


@conversation(core=True)
def stop_unsubscribes_and_confirms(driver: Driver, app: Deployment, phone: str) -> None:
    join(driver, app, phone)
    app.text(driver, phone, "YES")
    # The sender hosts two programs: a bare STOP leaves both, answered by the brand.
    assert_reply(only(app.text(driver, phone, "STOP"), driver, "stop"), driver, phone, "stop", program=None)
    assert app.subs(phone, driver.name)["alerts"] == "unsubscribed"
    assert ("alerts", "stop", "unsubscribed", "sms") in app.consent(phone, driver.name)


@conversation(core=False)
def help_answers(driver: Driver, app: Deployment, phone: str) -> None:
    assert_reply(only(app.text(driver, phone, "HELP"), driver, "help"), driver, phone, "help", program=None)
    assert "subscribed" not in app.subs(phone, driver.name).values()


@conversation(core=True)
def start_after_stop_prompts_again(driver: Driver, app: Deployment, phone: str) -> None:
    join(driver, app, phone)
    app.text(driver, phone, "STOP")
    app.clock.advance(hours=1)  # past the prompt cooldown: this is about START, not about pacing
    assert_reply(only(app.text(driver, phone, "START"), driver, "doi_prompt"), driver, phone, "doi_prompt")
    assert app.subs(phone, driver.name)["alerts"] == "pendingDOI"


@conversation(core=True)
def provider_opt_out_signal(driver: Driver, app: Deployment, phone: str) -> None:
    for keyword in PROGRAMS.values():  # subscribed to both programs on the sender
        app.text(driver, phone, keyword)
        app.text(driver, phone, "YES")
        app.clock.advance(hours=1)
    assert app.subs(phone, driver.name) == {"alerts": "subscribed", "news": "subscribed"}
    sent = app.sent(driver, phone)
    before = len(app.consent(phone, driver.name))
    response = app.post(driver.opt_out_signal(phone, driver.sender, sent[-1]))
    assert response.status_code == 200, response.text
    app.drain()
    assert app.sent(driver, phone) == sent, "the provider answered its own opt-out: optline must send nothing"
    assert app.subs(phone, driver.name) == {"alerts": "unsubscribed", "news": "unsubscribed"}
    after = app.consent(phone, driver.name)[before:]
    assert sorted(after) == [("alerts", "carrier_opt_out", "unsubscribed", "carrier"),
                             ("news", "carrier_opt_out", "unsubscribed", "carrier")]


@conversation(core=False)
def opt_out_report(driver: Driver, app: Deployment, phone: str) -> None:
    prompt = join(driver, app, phone)
    response = app.post(driver.opt_out_report(prompt))
    assert response.status_code == 200, response.text
    app.drain()
    assert app.sent(driver, phone) == [prompt]
    assert app.subs(phone, driver.name)["alerts"] == "unsubscribed"
    assert ("alerts", "carrier_opt_out", "unsubscribed", "carrier") in app.consent(phone, driver.name)
    assert app.outbox_status(prompt.message_id) == "failed"


@conversation(core=True)
def refused_send_opts_out(driver: Driver, app: Deployment, phone: str) -> None:
    refused_at_api = driver.refuse_next_send(phone)
    sent = app.text(driver, phone, "JOIN")
    if refused_at_api:
        assert sent == [], "the provider refused the send: nothing reached it"
        rows = app.query("SELECT status, error_code FROM outbox WHERE phone = :p", p=phone)
        assert [row.status for row in rows] == ["failed"]
        assert rows[0].error_code is not None
    else:
        # Accepted, then refused in its delivery report.
        prompt = only(sent, driver, "doi_prompt")
        assert app.post(driver.opt_out_report(prompt)).status_code == 200
        app.drain()
    assert app.subs(phone, driver.name)["alerts"] == "unsubscribed"
    assert ("alerts", "carrier_opt_out", "unsubscribed", "carrier") in app.consent(phone, driver.name)


@conversation(core=False)
def reports_in_order(driver: Driver, app: Deployment, phone: str) -> None:
    prompt = join(driver, app, phone)
    assert app.outbox_status(prompt.message_id) == "queued"
    for neutral in ("sent", "delivered"):
        webhook = driver.status(prompt, neutral)
        assert webhook is not None, f"{driver.name} has no {neutral} report"
        assert app.post(webhook).status_code == 200
        assert app.outbox_status(prompt.message_id) == neutral


@conversation(core=True)
def reports_out_of_order(driver: Driver, app: Deployment, phone: str) -> None:
    prompt = join(driver, app, phone)
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
    assert app.sent(driver, phone) == [prompt]


@conversation(core=True)
def bad_signature_stores_nothing(driver: Driver, app: Deployment, phone: str) -> None:
    join_text = driver.inbound(phone, driver.sender, "JOIN")
    stop_text = driver.inbound(phone, driver.sender, "STOP")
    unsigned = {k: v for k, v in join_text.headers.items() if k not in driver.signature_headers}
    bad = {
        "missing": Webhook(join_text.path, unsigned, join_text.body),
        "another key": driver.forge(join_text),
        "another body": Webhook(stop_text.path, join_text.headers, stop_text.body),
    }
    before = app.stored()
    for name, webhook in bad.items():
        response = app.post(webhook)
        assert response.status_code == 403, f"{name}: {response.status_code} {response.text}"
    app.drain()
    assert app.stored() == before
    assert app.sent(driver, phone) == []
    # A report is refused alike and moves nothing.
    prompt = join(driver, app, phone)
    delivered = driver.status(prompt, "delivered")
    assert delivered is not None
    assert app.post(driver.forge(delivered)).status_code == 403
    assert app.outbox_status(prompt.message_id) == "queued"


@conversation(core=True)
def replay_changes_nothing(driver: Driver, app: Deployment, phone: str) -> None:
    webhook = driver.inbound(phone, driver.sender, "JOIN")
    # Providers retry: copies arrive together, and again after the first was answered.
    with ThreadPoolExecutor(max_workers=REPLAYS) as pool:
        responses = list(pool.map(lambda _: app.post(webhook), range(REPLAYS)))
    responses.append(app.post(webhook))
    assert [response.status_code for response in responses] == [200] * (REPLAYS + 1)
    app.drain()
    assert_reply(only(app.sent(driver, phone), driver, "doi_prompt"), driver, phone, "doi_prompt")
    assert app.count("inbound_messages WHERE from_phone = :p", p=phone) == 1
    assert app.count("outbox WHERE phone = :p", p=phone) == 1
    assert len(app.consent(phone, driver.name)) == 1


@conversation(core=False)
def malformed_is_400(driver: Driver, app: Deployment, phone: str) -> None:
    before = app.stored()
    response = app.post(driver.malformed(phone, driver.sender))
    assert response.status_code == 400, f"{response.status_code} {response.text}"
    assert app.stored() == before
    assert app.sent(driver, phone) == []


# --- running the table --------------------------------------------------------------------------


ENGINES = ("sqlite", "postgresql")
# (driver, engine) of every deployment; a module fixture is shared by the tests that name an equal param.
DEPLOYMENTS = [pytest.param((driver, engine), id=f"{driver.name}-{engine}") for driver in DRIVERS for engine in ENGINES]
SQLITE_DEPLOYMENTS = [param for param in DEPLOYMENTS if param.values[0][1] == "sqlite"]  # type: ignore[index]


def _conversations(core: bool) -> list[Any]:
    return [pytest.param(function, id=function.__name__) for function, is_core in CONVERSATIONS if is_core == core]


def _database(request: pytest.FixtureRequest, engine: str, folder: Path) -> str:
    """A migrated, empty database of `engine` for one deployment."""
    if engine == "sqlite":
        path = folder / "optline.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("contract_pg_url")
    _truncate(url)
    return url


@pytest.fixture(scope="module")
def contract_pg_url() -> Iterator[str]:
    """A PostgreSQL database of the table's own (skips without OPTLINE_TEST_DATABASE_URL).

    Not the session's: the last deployment of the table is still running (its sender polling
    the outbox) while later tests use that one.
    """
    with new_pg_database("optline_contract") as url:
        yield url


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment of one driver on one database, shared by that driver's column of the table."""
    driver_class, engine = request.param
    folder = tmp_path_factory.mktemp(f"contract-{driver_class.name}-{engine}")
    app = Deployment([driver_class()], database_url=_database(request, engine, folder), tmp_path=folder,
                     clock=FakeClock())
    yield app
    app.close()


def _converse(deployment: Deployment, function: Conversation) -> None:
    phone = f"+1415555{next(_phones):04d}"  # a phone of its own: conversations share the deployment
    function(deployment.drivers[0], deployment, phone)


@pytest.mark.parametrize("function", _conversations(core=True))
@pytest.mark.parametrize("deployment", DEPLOYMENTS, indirect=True)
def test_core_conversation(deployment: Deployment, function: Conversation) -> None:
    _converse(deployment, function)


@pytest.mark.parametrize("function", _conversations(core=False))
@pytest.mark.parametrize("deployment", SQLITE_DEPLOYMENTS, indirect=True)
def test_conversation(deployment: Deployment, function: Conversation) -> None:
    _converse(deployment, function)


# --- outside the table ---------------------------------------------------------------------------


@pytest.fixture
def deploy(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[[Sequence[Driver], str], Deployment]]:
    """Start deployments for one test; each is stopped after it."""
    opened: list[Deployment] = []

    def build(drivers: Sequence[Driver], database_url: str) -> Deployment:
        deployment = Deployment(drivers, database_url=database_url, tmp_path=tmp_path / str(len(opened)), clock=clock)
        opened.append(deployment)
        return deployment

    yield build
    for deployment in reversed(opened):
        deployment.close()


@pytest.mark.parametrize("database_url", ENGINES, indirect=True)
def test_brands_on_different_providers_share_one_deployment(
        database_url: str, deploy: Callable[[Sequence[Driver], str], Deployment]) -> None:
    drivers = [driver_class() for driver_class in DRIVERS]
    app = deploy(drivers, database_url)  # OPTLINE_PROVIDERS=twilio,telnyx,…: only the senders' maps route
    phone = "+14155550123"
    for driver in drivers:
        # The same phone joins every brand; each prompt leaves through that brand's provider.
        assert_reply(only(app.text(driver, phone, "JOIN"), driver, "doi_prompt"), driver, phone, "doi_prompt")
    # A STOP to the brand on the second provider leaves every other brand as it was.
    stopped = drivers[1]
    assert_reply(only(app.text(stopped, phone, "STOP"), stopped, "stop"), stopped, phone, "stop", program=None)
    for driver in drivers:
        assert len(driver.sent()) == (2 if driver is stopped else 1), driver.name
        assert app.subs(phone, driver.name)["alerts"] == ("unsubscribed" if driver is stopped else "pendingDOI")
    inbound = app.query("SELECT provider, brand FROM inbound_messages ORDER BY id")
    assert [tuple(row) for row in inbound] == [(d.name, d.name) for d in drivers] + [(stopped.name, stopped.name)]


@pytest.mark.parametrize("first", [True, False], ids=["twilio enabled", "twilio not enabled"])
def test_a_provider_not_enabled_has_no_webhook(
        sqlite_url: str, deploy: Callable[[Sequence[Driver], str], Deployment], first: bool) -> None:
    drivers = [driver_class() for driver_class in DRIVERS]
    enabled = drivers[0] if first else drivers[-1]
    others = [driver for driver in drivers if driver is not enabled]
    app = deploy([enabled], sqlite_url)
    for driver in others:
        driver.public_url = PUBLIC_URL
        response = app.post(driver.inbound("+14155550123", driver.sender, "JOIN"))
        assert response.status_code == 404, f"{driver.name}: {response.status_code}"
    assert app.count("inbound_messages") == 0


def test_every_driver_cites_its_wire_format() -> None:
    for driver in DRIVERS:
        assert driver.wire_format, driver.name
        assert all(source.startswith(("https://", "tests/")) for source in driver.wire_format), driver.name
        cited_files = [source for source in driver.wire_format if source.startswith("tests/")]
        assert all((PROJECT_ROOT / source).exists() for source in cited_files), driver.name
    assert {driver.name for driver in DRIVERS} >= {"twilio", "telnyx", "plivo", "vonage"}


def test_the_table_above_lists_every_conversation() -> None:
    listed = {line.split("|")[1].strip(): line.split("|")[2].strip() == "✓"
              for line in (__doc__ or "").splitlines() if line.startswith("| ") and "---" not in line}
    listed.pop("conversation")
    assert listed == {function.__name__: core for function, core in CONVERSATIONS}
