"""Properties that must hold for any conversation, and under concurrency.

The one unforgivable bug is a missed opt-out, so the central property is: after any
sequence of texts that ends in a stop, the phone is unsubscribed from every program on the
sender and receives nothing but stop replies from then on (queued prompts are cancelled).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway

NON_STOP_TEXTS = ["JOIN", "DEALS", "NEWS", "YES", "Y", "oui", "HELP", "INFO", "START", "UNSTOP", "STOP NEWS",
                  "STOP DEALS", "hello there", "what time is the sale going to end this week", "JOIN NEWS", "🙂"]
FINAL_STOPS = ["STOP", "STOPALL", "stop", "Stop please", "UNSUBSCRIBE", "opt out", "stop texting me", "ＳＴＯＰ",
               "STOP 🛑", "quit", "please stop", "can you unsubscribe me", "Cancel", "END", "revoke"]
STOP_BODIES = ("ACME: you are unsubscribed", "ACME Deals: you're unsubscribed", "ACME News: you're unsubscribed")

_phones = itertools.count(1000)

step = st.tuples(
    st.sampled_from(NON_STOP_TEXTS),
    st.sampled_from([0, 1, 11, 60 * 49]),  # minutes before this text: none, inside/outside cooldown, past DOI expiry
    st.booleans(),  # let the sender run before this text (else replies stay queued)
)


def _pump(gateway: Gateway) -> None:
    """Run the outbox sender until nothing is due (the gateway runs without its in-process sender)."""
    sender = gateway.state.sender

    async def drain() -> None:
        while await sender.run_once():
            pass

    asyncio.run(drain())


@pytest.fixture
def manual_gateway(gateway_factory: Any, database_url: str) -> Gateway:
    return gateway_factory(database_url, inprocess_worker=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=8), final=st.sampled_from(FINAL_STOPS))
def test_after_a_stop_only_stop_replies_reach_the_phone(manual_gateway: Gateway, steps: list[Any], final: str) -> None:
    gateway = manual_gateway
    phone = f"+1415555{next(_phones):04d}"
    for text, minutes, pump in steps:
        gateway.clock.advance(minutes=minutes)
        if pump:
            _pump(gateway)
        assert gateway.text(text, from_=phone).status_code == 200
    before_stop = len(gateway.fake.messages(to=phone))
    assert gateway.text(final, from_=phone).status_code == 200
    _pump(gateway)

    assert set(gateway.subs(phone).values()) == {"unsubscribed"}
    assert set(gateway.subs(phone)) == {"deals", "news"}
    after = [m.body for m in gateway.fake.messages(to=phone)[before_stop:]]
    assert all(body.startswith(STOP_BODIES) for body in after), after
    # A later text that is not a join or start brings nothing but (rate-limited) stop/help replies.
    gateway.text("YES", from_=phone)
    _pump(gateway)
    assert [m.body for m in gateway.fake.messages(to=phone)[before_stop:]] == after


def _chains_are_consistent(gateway: Gateway, phone: str) -> dict[str, str]:
    """Every program's consent events chain: each from_status is the previous to_status."""
    events = gateway.query("SELECT program, from_status, to_status FROM consent_events WHERE phone = :p ORDER BY id",
                           p=phone)
    last: dict[str, str] = defaultdict(lambda: "none")
    for event in events:
        assert event.from_status == last[event.program], (phone, list(events))
        last[event.program] = event.to_status
    assert dict(last) == {k: v for k, v in gateway.subs(phone).items() if k in last}
    return dict(last)


def test_concurrent_texts_from_one_phone_apply_one_after_another(gateway: Gateway) -> None:
    phones = [f"+1415556{n:04d}" for n in range(12)]
    texts = ["JOIN", "YES", "STOP", "NEWS", "YES", "HELP"]
    jobs = [(phone, text) for phone in phones for text in texts]
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda job: gateway.text(job[1], from_=job[0]), jobs))
    assert [r.status_code for r in responses] == [200] * len(jobs)
    gateway.drain()
    for phone in phones:
        _chains_are_consistent(gateway, phone)
    # At most one reply per inbound text, whatever the interleaving.
    rows = gateway.query("SELECT inbound_id, count(*) AS n FROM outbox GROUP BY inbound_id")
    assert all(row.n == 1 for row in rows)
    assert gateway.query("SELECT count(*) FROM inbound_messages")[0][0] == len(jobs)


def test_a_stop_racing_a_join_never_leaves_the_phone_subscribed_without_a_later_join(gateway: Gateway) -> None:
    phones = [f"+1415557{n:04d}" for n in range(10)]
    for phone in phones:
        gateway.text("JOIN", from_=phone)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: gateway.text(job[1], from_=job[0]),
                      [(p, t) for p in phones for t in ("YES", "STOP")]))
    for phone in phones:
        final = _chains_are_consistent(gateway, phone)
        order = [r.body for r in gateway.query(
            "SELECT body FROM inbound_messages WHERE from_phone = :p ORDER BY id", p=phone)]
        # Whichever of YES and STOP was applied last decides; STOP last means unsubscribed.
        if order[-1] == "STOP":
            assert final["deals"] == "unsubscribed"
