"""Plivo delivery reports for the parts of a long text settle into one status for the text we sent.

Plivo reports each part of a long text on its own: MessageUUID is the part's, ParentMessageUUID
the first part's (the id the send was answered with) and PartInfo reads "2 of 3"
(https://support.plivo.com/support/solutions/articles/17000012022). The reports here are the
captured delivery report of tests/data/providers/plivo/status_delivered.txt (nyaruka/courier,
"1 of 1") with those three fields set as that page describes. The text is delivered when every
part is, failed (or undelivered) as soon as one part is, and never moves backwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.delivery_parts import settle
from app.providers.base import DeliveryStatus as S
from tests.conftest import FakeClock
from tests.contract.deployment import Deployment
from tests.contract.driver import Sent, Webhook, wire_number
from tests.contract.plivo import PlivoDriver
from tests.test_provider_plivo import load

PHONE = "+14155550177"


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment([PlivoDriver()], database_url=database_url, tmp_path=tmp_path, clock=FakeClock())
    yield deployment
    deployment.close()


@pytest.fixture
def prompt(app: Deployment) -> Sent:
    """The DOI prompt a JOIN earned, as Plivo's fake received it (its outbox row is 'queued' at Plivo)."""
    [sent] = app.text(app.drivers[0], PHONE, "JOIN")
    assert outbox(app, sent) == "queued"
    return sent


def report(app: Deployment, sent: Sent, part: int, parts: int, status: str, error_code: str = "") -> Webhook:
    """Plivo's report on part `part` of `parts` of `sent`, signed."""
    driver = app.drivers[0]
    own = sent.message_id if part == 1 else str(uuid.uuid4())
    pairs = [(key, {"MessageUUID": own, "ParentMessageUUID": sent.message_id, "PartInfo": f"{part} of {parts}",
                    "Status": status, "ErrorCode": error_code, "To": wire_number(sent.to),
                    "From": wire_number(sent.from_ or "")}.get(key, value))
             for key, value in load("status_delivered.txt")]
    return driver._post(driver.status_path, pairs)  # type: ignore[attr-defined]


def post(app: Deployment, webhook: Webhook) -> None:
    response = app.post(webhook)
    assert response.status_code == 200, response.text


def outbox(app: Deployment, sent: Sent) -> str:
    return app.outbox_status(sent.message_id)


def test_a_text_is_delivered_only_when_every_part_is(app: Deployment, prompt: Sent) -> None:
    post(app, report(app, prompt, 1, 2, "delivered"))
    assert outbox(app, prompt) == "queued"  # was 'delivered': part 1's report counted for the whole text
    post(app, report(app, prompt, 2, 2, "delivered"))
    assert outbox(app, prompt) == "delivered"


def test_a_failed_later_part_fails_the_text(app: Deployment, prompt: Sent) -> None:
    post(app, report(app, prompt, 2, 2, "failed", "20"))
    assert outbox(app, prompt) == "failed"  # was 'queued': part 2's report was ignored
    assert app.query("SELECT error_code FROM outbox WHERE provider_message_id = :m", m=prompt.message_id)[0][0] == 20
    post(app, report(app, prompt, 1, 2, "delivered"))
    assert outbox(app, prompt) == "failed"  # never backwards


def test_parts_in_any_order_and_retried(app: Deployment, prompt: Sent) -> None:
    third = report(app, prompt, 3, 3, "delivered")
    post(app, third)
    post(app, report(app, prompt, 1, 3, "delivered"))
    post(app, third)  # Plivo retries
    assert outbox(app, prompt) == "queued"  # part 2 not heard of yet
    post(app, report(app, prompt, 2, 3, "sent"))
    assert outbox(app, prompt) == "sent"
    post(app, report(app, prompt, 2, 3, "delivered"))
    assert outbox(app, prompt) == "delivered"


def test_a_dnd_block_on_a_later_part_opts_the_phone_out(app: Deployment, prompt: Sent) -> None:
    post(app, report(app, prompt, 2, 2, "failed", "200"))
    assert outbox(app, prompt) == "failed"
    assert app.subs(PHONE, "plivo") == {"alerts": "unsubscribed", "news": "unsubscribed"}
    assert {row[3] for row in app.consent(PHONE, "plivo") if row[2] == "unsubscribed"} == {"carrier"}


@pytest.mark.parametrize(("reports", "parts", "settled"), [
    ({}, 2, (S.QUEUED, None)),
    ({1: (S.DELIVERED, None)}, 2, (S.QUEUED, None)),
    ({1: (S.DELIVERED, None), 2: (S.SENT, None)}, 2, (S.SENT, None)),
    ({1: (S.DELIVERED, None), 2: (S.DELIVERED, None)}, 2, (S.DELIVERED, None)),
    ({1: (S.DELIVERED, None), 2: (S.UNDELIVERED, 20)}, 2, (S.UNDELIVERED, 20)),
    ({1: (S.UNDELIVERED, 20), 3: (S.FAILED, 30)}, 3, (S.FAILED, 30)),
], ids=["none", "first-only", "one-sent", "all-delivered", "one-undelivered", "failed-wins"])
def test_settle(reports: dict[int, tuple[S, int | None]], parts: int, settled: tuple[S, int | None]) -> None:
    assert settle(reports, parts) == settled
