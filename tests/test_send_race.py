"""A send racing a STOP: no send is decided after the STOP commits, and a cancelled row is never sent.

Each phone JOINs and texts STOP at once, many phones in parallel, while the provider answers
slowly (so sends are in flight when the STOPs land). The send decision (`dispatched_at`) is
taken under the phone's lock, as every STOP is, so for each phone: any prompt that went out
was decided before its STOP was applied; every other prompt was cancelled and never reached
the provider; and the phone got exactly one stop reply.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import Gateway

STOP_REPLY = "ACME: you are unsubscribed from all ACME texts"


def test_a_stop_racing_its_prompt_never_lets_a_later_send_through(gateway: Gateway) -> None:
    gateway.fake.delay(0.05, times=None)  # every send is slow: the window between decision and answer is wide
    phones = [f"+1415556{n:04d}" for n in range(40)]

    def join_then_stop(phone: str) -> tuple[int, int]:
        join = gateway.text("JOIN", from_=phone).status_code
        return join, gateway.text("STOP", from_=phone).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(join_then_stop, phones))
    assert set(codes) == {(200, 200)}
    gateway.drain(30)

    stops = {row.phone: row.created_at for row in gateway.query(
        "SELECT phone, max(created_at) AS created_at FROM consent_events WHERE event = 'stop' AND program = 'deals'"
        " GROUP BY phone")}
    prompts = gateway.query("SELECT phone, status, dispatched_at, provider_message_id FROM outbox"
                            " WHERE purpose = 'doi_prompt'")
    assert len(stops) == len(phones) and len(prompts) == len(phones)
    outcomes = Counter(p.status for p in prompts)
    for prompt in prompts:
        if prompt.status == "cancelled":
            assert prompt.provider_message_id is None  # a cancelled row is never turned into a sent one
        else:
            assert prompt.dispatched_at is not None and prompt.dispatched_at < stops[prompt.phone], prompt
    sent_ids = {m.sid for m in gateway.fake.messages()}
    cancelled_phones = {p.phone for p in prompts if p.status == "cancelled"}
    for phone in phones:
        bodies = gateway.replies(phone)
        assert sum(b.startswith(STOP_REPLY) for b in bodies) == 1, (phone, bodies)
        if phone in cancelled_phones:
            assert bodies == [b for b in bodies if b.startswith(STOP_REPLY)], (phone, bodies)
    assert all(p.provider_message_id in sent_ids for p in prompts if p.provider_message_id)
    print(f"prompts: {dict(outcomes)}")
