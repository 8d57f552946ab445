"""Each sender sends at most its `rate` texts a second, stop replies first (app.ratelimit wired into the outbox).

The gateway here runs on the real clock: the limit counts real seconds, and the fake Twilio
stamps each message when it arrives. A burst of prompts from one long code given `rate: 10`
must spread over time, and a STOP that arrives behind them is answered before most of them.
(The limit itself, across processes on both engines: tests/test_ratelimit.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.db import utcnow
from app.main import create_app
from tests.conftest import ACME, KEYWORDS, PUBLIC_URL, make_settings
from tests.fake_twilio import FakeTwilio, sign_twilio, twilio_inbound_params

RATE = 10
PHONES = [f"+1415555{n:04d}" for n in range(16)]
STOPPER = "+14155559999"


@pytest.fixture
def limited(tmp_path: Path, fake_twilio: FakeTwilio, database_url: str) -> Iterator[TestClient]:
    path = tmp_path / "keywords.yaml"
    path.write_text(KEYWORDS.read_text().replace('senders: ["+15005550006"]',
                                                 f'senders: [{{id: "+15005550006", rate: {RATE}}}]'))
    settings = make_settings(database_url, fake_twilio, keywords=str(path), poll_seconds=0.02)
    with TestClient(create_app(settings, clock=utcnow)) as client:
        yield client


def text(client: TestClient, body: str, phone: str) -> None:
    params = twilio_inbound_params(Body=body, From=phone, To=ACME)
    response = client.post("/webhooks/twilio", data=params,
                           headers={"X-Twilio-Signature": sign_twilio(PUBLIC_URL + "/webhooks/twilio", params)})
    assert response.status_code == 200


def arrivals(fake: FakeTwilio, count: int, timeout: float = 10.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while len(fake.messages()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    messages = fake.messages()
    assert len(messages) == count, f"{len(messages)} of {count} sent"
    return sorted(m.received_at for m in messages)


def test_a_sender_never_goes_faster_than_its_rate(limited: TestClient, fake_twilio: FakeTwilio) -> None:
    for phone in PHONES:
        text(limited, "JOIN", phone)
    times = arrivals(fake_twilio, len(PHONES))
    # Any one-second window holds at most `rate` sends plus the one the idle sender may burst.
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= RATE + 1
    # The limit holds them back: 16 texts at 10 a second cannot all go within 1.2 s (a load-proof bound:
    # a slow machine only makes it longer).
    assert times[-1] - times[0] >= 1.2


def test_a_stop_reply_goes_before_the_texts_waiting_for_the_sender(
    limited: TestClient, fake_twilio: FakeTwilio,
) -> None:
    for phone in PHONES:
        text(limited, "JOIN", phone)
    already_out = len(fake_twilio.messages())  # prompts the sender had sent when the STOP arrived
    text(limited, "STOP", STOPPER)
    arrivals(fake_twilio, len(PHONES) + 1)
    order = [m.to for m in sorted(fake_twilio.messages(), key=lambda m: m.received_at)]
    # Judged by order, not by time: the stop reply overtakes every prompt still waiting when it came;
    # only those already out, and the one or two in flight or in the burst slot, go before it.
    assert order.index(STOPPER) <= already_out + 2, (already_out, order)
