"""SPEC §4 through the real webhook: every SMS and carrier row of the state table, the scopes on a
shared sender, cooldowns, expiry, and the one-reply rule. (The API rows are in the API tests;
the pure table is in test_subscriptions.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.subscriptions import Status
from tests.conftest import Gateway
from tests.fake_twilio import SERVICE_SID

PHONE = "+14155550123"
ZEN_KEYWORDS = str(Path(__file__).parent / "data" / "single_opt_in.yaml")


def conversation(gateway: Gateway, *texts: str, phone: str = PHONE, **extra: Any) -> list[str]:
    """Send texts one by one, each after the previous reply went out (as a person answers);
    return the replies the fake Twilio received for this phone, in order."""
    for text in texts:
        assert gateway.text(text, from_=phone, **extra).status_code == 200
        gateway.drain()
    return gateway.replies(phone)


def test_join_from_none_prompts_and_goes_pending(gateway: Gateway) -> None:
    replies = conversation(gateway, "JOIN")
    assert gateway.subs(PHONE) == {"deals": Status.PENDING}
    assert replies == ["ACME Deals: reply YES to confirm up to 4 msgs/month. Msg&data rates may apply. "
                       "Reply HELP for help, STOP to cancel."]


def test_join_from_unsubscribed_goes_pending_and_clears_unsubscribed_at(gateway: Gateway) -> None:
    conversation(gateway, "JOIN", "YES", "STOP")
    conversation(gateway, "JOIN")
    row = gateway.query("SELECT status, status_before_doi FROM subscriptions WHERE phone = :p AND program = 'deals'", p=PHONE)[0]
    assert (row.status, row.status_before_doi) == ("pendingDOI", "unsubscribed")
    assert gateway.replies(PHONE)[-1].startswith("ACME Deals: reply YES")


def test_join_again_while_pending_reprompts_only_after_cooldown(gateway: Gateway) -> None:
    assert len(conversation(gateway, "JOIN", "JOIN")) == 1  # second within prompt_cooldown (10m): silent
    gateway.clock.advance(minutes=11)
    replies = conversation(gateway, "JOIN")
    assert len(replies) == 2 and replies[1].startswith("ACME Deals: reply YES")
    assert gateway.subs(PHONE) == {"deals": "pendingDOI"}


def test_confirm_subscribes_and_welcomes(gateway: Gateway) -> None:
    replies = conversation(gateway, "JOIN", "YES")
    assert gateway.subs(PHONE) == {"deals": "subscribed"}
    assert replies[-1] == "ACME Deals: you're in! Up to 4 msgs/month. Reply STOP to cancel."
    row = gateway.query("SELECT subscribed_at, keyword FROM subscriptions")[0]
    assert row.subscribed_at is not None and row.keyword == "YES"


def test_confirm_in_french_replies_in_french(gateway: Gateway) -> None:
    replies = conversation(gateway, "JOIN", "oui", phone="+33612345678")
    assert replies[-1].startswith("ACME Deals : c'est fait")


def test_subscribed_join_says_already_subscribed_outside_cooldown(gateway: Gateway) -> None:
    conversation(gateway, "JOIN", "YES")
    gateway.clock.advance(minutes=11)
    replies = conversation(gateway, "JOIN", "DEALS")
    assert replies[-1] == "ACME Deals: you're already subscribed. Reply STOP to cancel."
    assert len(replies) == 3  # the second join fell inside the cooldown
    assert gateway.subs(PHONE) == {"deals": "subscribed"}


@pytest.mark.parametrize("before", [[], ["JOIN"], ["JOIN", "YES"], ["JOIN", "YES", "STOP"]],
                         ids=["none", "pending", "subscribed", "unsubscribed"])
def test_stop_from_any_status_unsubscribes(gateway: Gateway, before: list[str]) -> None:
    conversation(gateway, *before)
    gateway.clock.advance(days=2)  # past the once-a-day repeat limit
    replies = conversation(gateway, "STOP")
    assert set(gateway.subs(PHONE).values()) == {"unsubscribed"}
    assert set(gateway.subs(PHONE)) == {"deals", "news"}  # STOP covers every program on the sender
    assert replies[-1].startswith("ACME: you are unsubscribed from all ACME texts")


def test_repeated_stop_gets_at_most_one_reply_a_day(gateway: Gateway) -> None:
    replies = conversation(gateway, "JOIN", "YES", "STOP", "STOP", "stop please")
    assert sum(r.startswith("ACME: you are unsubscribed") for r in replies) == 1
    gateway.clock.advance(hours=25)
    replies = conversation(gateway, "STOP")
    assert sum(r.startswith("ACME: you are unsubscribed") for r in replies) == 2


@pytest.mark.parametrize("before", [[], ["JOIN"], ["JOIN", "YES"]], ids=["none", "pending", "subscribed"])
def test_help_changes_nothing_and_answers(gateway: Gateway, before: list[str]) -> None:
    conversation(gateway, *before)
    statuses = gateway.subs(PHONE)
    gateway.clock.advance(minutes=1)
    replies = conversation(gateway, "HELP")
    assert gateway.subs(PHONE) == statuses
    expected = "ACME Deals. Help: support@acme.example." if before else "ACME Coffee alerts. Help: support@acme.example."
    assert replies[-1].startswith(expected)


def test_help_answers_for_the_program_last_used(gateway: Gateway) -> None:
    conversation(gateway, "JOIN", "NEWS")
    assert conversation(gateway, "INFO")[-1].startswith("ACME News. Help")
    assert conversation(gateway, "HELP DEALS")[-1].startswith("ACME Deals. Help")


def test_start_rejoins_the_program_most_recently_left(gateway: Gateway) -> None:
    conversation(gateway, "NEWS", "YES", "JOIN", "YES", "STOP NEWS")
    assert gateway.subs(PHONE) == {"deals": "subscribed", "news": "unsubscribed"}
    replies = conversation(gateway, "START")
    assert gateway.subs(PHONE) == {"deals": "subscribed", "news": "pendingDOI"}
    assert replies[-1].startswith("ACME News: reply YES")


def test_start_with_nothing_left_changes_nothing_and_answers_like_help(gateway: Gateway) -> None:
    assert conversation(gateway, "START") == [
        "ACME Coffee alerts. Help: support@acme.example. Msg&data rates may apply. Reply STOP to cancel."]
    assert gateway.subs(PHONE) == {}


def test_start_never_joins_a_program_the_phone_never_joined(gateway: Gateway) -> None:
    # deals only; the plain STOP also records news none→unsubscribed at the same instant.
    conversation(gateway, "JOIN", "YES", "STOP")
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    replies = conversation(gateway, "START")
    assert gateway.subs(PHONE) == {"deals": "pendingDOI", "news": "unsubscribed"}
    assert replies[-1].startswith("ACME Deals: reply YES")


def test_start_after_a_stop_of_a_never_joined_program_answers_like_help(gateway: Gateway) -> None:
    conversation(gateway, "STOP")  # a phone that never joined anything
    replies = conversation(gateway, "START")
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    assert replies[-1].startswith("ACME Coffee alerts. Help")


def test_stop_with_a_program_argument_leaves_the_other_program(gateway: Gateway) -> None:
    conversation(gateway, "JOIN", "YES", "NEWS", "YES")
    replies = conversation(gateway, "STOP DEALS")
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "subscribed"}
    assert replies[-1].startswith("ACME Deals: you're unsubscribed")


def test_confirm_answers_the_most_recent_pending_doi(gateway: Gateway) -> None:
    conversation(gateway, "JOIN")
    gateway.clock.advance(seconds=5)
    conversation(gateway, "NEWS")
    replies = conversation(gateway, "Y")
    assert gateway.subs(PHONE) == {"deals": "pendingDOI", "news": "subscribed"}
    assert replies[-1].startswith("ACME News: welcome")


def test_confirm_with_nothing_pending_changes_nothing_and_says_nothing(gateway: Gateway) -> None:
    assert conversation(gateway, "YES") == []
    assert gateway.subs(PHONE) == {}


def test_unmatched_text_is_stored_without_reply(gateway: Gateway) -> None:
    assert conversation(gateway, "what time do you open tomorrow morning please") == []
    assert gateway.query("SELECT kind FROM inbound_messages")[0][0] == "unmatched"
    assert gateway.subs(PHONE) == {}


def test_doi_expires_lazily_back_to_the_status_before(gateway: Gateway) -> None:
    conversation(gateway, "JOIN")
    gateway.clock.advance(hours=49)
    replies = conversation(gateway, "YES")
    assert gateway.subs(PHONE) == {"deals": "none"}
    assert replies[-1] == "ACME Deals: your request expired. Text JOIN to subscribe."
    events = gateway.query("SELECT event, from_status, to_status, source FROM consent_events ORDER BY id")
    assert [tuple(e) for e in events] == [("join", "none", "pendingDOI", "sms"),
                                          ("doi_expired", "pendingDOI", "none", "system")]


def test_doi_expiry_returns_a_resubscriber_to_unsubscribed(gateway: Gateway) -> None:
    conversation(gateway, "JOIN", "YES", "STOP", "JOIN")
    gateway.clock.advance(hours=49)
    conversation(gateway, "HELP")
    assert gateway.subs(PHONE)["deals"] == "unsubscribed"


def test_doi_sweep_expires_without_a_text(gateway: Gateway) -> None:
    from app.inbound import due_for_expiry, expire_due

    conversation(gateway, "JOIN")
    gateway.clock.advance(hours=49)
    now = gateway.clock()
    phones = gateway.state.writer.call(lambda conn, _now: due_for_expiry(conn, now))
    assert phones == [PHONE]
    assert gateway.state.writer.call(lambda conn, _now: expire_due(conn, now, phones=phones, rules=gateway.state.rules),
                                     locks=phones) == 1
    assert gateway.subs(PHONE) == {"deals": "none"}


def test_join_from_a_country_the_brand_does_not_serve_is_refused_silently(gateway: Gateway) -> None:
    replies = conversation(gateway, "JOIN", phone="+442071838750")  # GB; acme serves US, CA, FR
    assert replies == []
    assert gateway.subs("+442071838750") == {}


def test_stop_from_an_unserved_country_is_still_honoured(gateway: Gateway) -> None:
    conversation(gateway, "STOP", phone="+442071838750")
    assert set(gateway.subs("+442071838750").values()) == {"unsubscribed"}


def test_opt_out_type_stop_unsubscribes_without_a_reply(gateway: Gateway) -> None:
    replies = conversation(gateway, "JOIN", "YES")
    replies = conversation(gateway, "please no more", OptOutType="STOP")
    assert len(replies) == 2  # Twilio answered the STOP itself
    assert set(gateway.subs(PHONE).values()) == {"unsubscribed"}
    event = gateway.query("SELECT event, source FROM consent_events ORDER BY id DESC LIMIT 1")[0]
    assert tuple(event) == ("carrier_opt_out", "carrier")


def test_opt_out_type_help_records_but_does_not_reply(gateway: Gateway) -> None:
    assert conversation(gateway, "HELP", OptOutType="HELP") == []


def test_opt_out_type_start_still_sends_our_welcome_after_yes(gateway: Gateway) -> None:
    conversation(gateway, "JOIN")
    replies = conversation(gateway, "YES", OptOutType="START")
    assert replies[-1].startswith("ACME Deals: you're in!")


def test_single_opt_in_join_subscribes_at_once(gateway_factory: Any, database_url: str) -> None:
    gateway = gateway_factory(database_url, keywords=ZEN_KEYWORDS)
    params = {"MessagingServiceSid": SERVICE_SID}
    replies = conversation(gateway, "tea", **params, )
    assert gateway.subs(PHONE) == {"tips": "subscribed"}
    assert replies == ["Zen Tips: you're in. Msg&data rates may apply. Reply HELP for help, STOP to cancel."]
    # The reply goes through the Messaging Service, not from the number.
    sent = gateway.fake.messages(to=PHONE)[-1]
    assert sent.service_id == SERVICE_SID and sent.from_ is None
    conversation(gateway, "STOP", **params)
    replies = conversation(gateway, "TEA", **params)
    assert gateway.subs(PHONE) == {"tips": "subscribed"}
    assert replies[-1].startswith("Zen Tips: you're in")


def test_at_most_one_reply_per_inbound_text(gateway: Gateway) -> None:
    texts = ["JOIN", "NEWS", "YES", "Y", "HELP", "STOP", "START", "JOIN DEALS", "stop news", "INFO"]
    for text in texts:
        gateway.clock.advance(minutes=11)
        conversation(gateway, text)
    per_inbound = gateway.query("SELECT inbound_id, count(*) AS n FROM outbox GROUP BY inbound_id")
    assert per_inbound and all(row.n == 1 for row in per_inbound)


def test_stop_cancels_a_prompt_still_queued(gateway: Gateway) -> None:
    gateway.fake.fail_http(503, times=None)  # the provider is down: the prompt waits in the outbox
    gateway.text("JOIN", from_=PHONE)
    gateway.fake.wait_for_requests(1)
    gateway.fake.clear_rules()
    gateway.text("STOP", from_=PHONE)
    gateway.drain()
    bodies = gateway.replies(PHONE)
    assert bodies == ["ACME: you are unsubscribed from all ACME texts. No more messages will be sent. "
                      "Help: support@acme.example"]
    cancelled = gateway.query("SELECT purpose, status FROM outbox WHERE purpose = 'doi_prompt'")[0]
    assert tuple(cancelled) == ("doi_prompt", "cancelled")


def test_carrier_opt_out_on_send_unsubscribes_every_program_on_the_sender(gateway: Gateway) -> None:
    conversation(gateway, "NEWS", "YES")
    gateway.fake.fail(21610, to=PHONE, times=None)
    gateway.clock.advance(minutes=11)
    gateway.text("JOIN", from_=PHONE)
    gateway.drain()
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    row = gateway.query("SELECT status, error_code FROM outbox ORDER BY id DESC LIMIT 1")[0]
    assert tuple(row) == ("failed", 21610)
    sources = {r.source for r in gateway.query("SELECT source FROM consent_events WHERE to_status = 'unsubscribed'")}
    assert sources == {"carrier"}
