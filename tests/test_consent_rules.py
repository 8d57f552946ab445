"""The consent rules engine on both databases, on a controlled clock: what a STOP ends (revoke-all
or sender scope), quiet hours, daily caps, the send check and the brand's reported sends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic, sleep
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.auth import create_key
from app.holds import list_held
from app.keywords import check, load_rules
from app.rules.scope import describe
from tests.conftest import FakeClock, Gateway, unlimited

RULES = Path(__file__).parent / "data" / "consent_rules.yaml"
DEALS_NEWS, ALERTS = "+15005550010", "+15005550011"
PHONE = "+14155550123"  # San Francisco: the federal window only
MIAMI, AUSTIN = "+13055550100", "+15125550100"
NEW_YORK, CHICAGO = ZoneInfo("America/New_York"), ZoneInfo("America/Chicago")
PROOF = {"termsUrl": "https://shop.example/sms", "termsVersion": "1", "sourceText": "Text me"}


def sender_scope(tmp_path: Path) -> str:
    path = tmp_path / "sender_scope.yaml"
    path.write_text(RULES.read_text().replace("    name: Shop\n", "    name: Shop\n    opt_out_scope: sender\n", 1))
    return unlimited(path)


@pytest.fixture
def shop(gateway_factory: Callable[..., Gateway], database_url: str) -> Gateway:
    return gateway_factory(database_url, keywords=unlimited(RULES))


def make_key(gateway: Gateway, brand: str = "shop") -> dict[str, str]:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="t"))
    return {"x-api-key": str(key)}


def move_to(clock: FakeClock, zone: ZoneInfo, at: time, weekday: int | None = None) -> datetime:
    """Advance the clock to the next `at` local time in `zone` (on `weekday`, Monday = 0); returns it."""
    now = clock().astimezone(zone)
    target = datetime.combine(now.date(), at, tzinfo=zone)
    while target <= now or (weekday is not None and target.weekday() != weekday):
        target = datetime.combine(target.date() + timedelta(days=1), at, tzinfo=zone)
    clock.advance(seconds=(target - clock()).total_seconds())
    return target


def consented() -> str:
    # The API refuses consent more than 5 minutes after the real time; the fake clock runs ahead.
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


def opt_in(gateway: Gateway, key: dict[str, str], phone: str, program: str, doi: bool = True) -> Any:
    body = {"phoneNumber": phone, "program": program, "consentSource": "web", "consentedAt": consented(),
            "consentProof": PROOF, "doubleOptIn": doi}
    response = gateway.client.post("/v1/subscriptions/opt-in", json=body, headers=key)
    assert response.status_code == 200, response.text
    return response.json()


def aware(value: Any) -> datetime | None:
    """A stored time as aware UTC (SQLite hands back text)."""
    if value is None:
        return None
    value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def outbound(gateway: Gateway, phone: str) -> list[tuple[Any, ...]]:
    rows = gateway.query("SELECT purpose, status, held_until, held_reason, next_attempt_at FROM outbox"
                         " WHERE phone = :p AND channel = 'sms' ORDER BY id", p=phone)
    return [(r[0], r[1], aware(r[2]), r[3], aware(r[4])) for r in rows]


# --- what a STOP ends ---------------------------------------------------------------------------


def join_both(gateway: Gateway) -> None:
    gateway.text("NEWS", from_=PHONE, to=DEALS_NEWS)
    gateway.text("ALERTS", from_=PHONE, to=ALERTS)
    assert gateway.subs(PHONE) == {"news": "subscribed", "alerts": "subscribed"}


def test_a_plain_stop_ends_every_program_on_every_sender(shop: Gateway) -> None:
    join_both(shop)
    shop.text("STOP", from_=PHONE, to=DEALS_NEWS)
    assert shop.subs(PHONE) == {"news": "unsubscribed", "alerts": "unsubscribed", "deals": "unsubscribed"}
    shop.drain()
    # One reply, the brand-level one: it was the brand that stopped.
    assert shop.replies(PHONE)[-1].startswith("Shop: you're unsubscribed")
    events = shop.query("SELECT program, source FROM consent_events WHERE phone = :p AND event = 'stop'", p=PHONE)
    assert sorted(events) == [("alerts", "sms"), ("deals", "sms"), ("news", "sms")]


def test_stop_naming_a_program_ends_that_program_alone(shop: Gateway) -> None:
    join_both(shop)
    shop.text("STOP NEWS", from_=PHONE, to=DEALS_NEWS)
    assert shop.subs(PHONE) == {"news": "unsubscribed", "alerts": "subscribed"}


def test_sender_scope_leaves_the_other_senders_program_and_offers_stop_all(
        gateway_factory: Callable[..., Gateway], database_url: str, tmp_path: Path) -> None:
    gateway = gateway_factory(database_url, keywords=sender_scope(tmp_path))
    join_both(gateway)
    gateway.text("STOP", from_=PHONE, to=DEALS_NEWS)
    assert gateway.subs(PHONE) == {"news": "unsubscribed", "alerts": "subscribed", "deals": "unsubscribed"}
    gateway.drain()
    reply = gateway.replies(PHONE)[-1]
    assert reply.startswith("Shop: you're unsubscribed from Shop texts on this number")
    assert reply.endswith("Reply STOP ALL to stop every Shop text.")
    gateway.text("STOP ALL", from_=PHONE, to=DEALS_NEWS)
    assert gateway.subs(PHONE)["alerts"] == "unsubscribed"


def test_check_shows_the_scope_and_warns_about_sender_scope_after_revoke_all(tmp_path: Path) -> None:
    path = sender_scope(tmp_path)
    assert describe(load_rules(path).brands["shop"]).startswith("brand 'shop': opt_out_scope sender")
    before = check(path, today=date(2027, 1, 31)).warnings
    after = check(path, today=date(2027, 2, 1)).warnings
    assert not [w for w in before if "opt_out_scope" in w.message]
    [warning] = [w for w in after if "opt_out_scope" in w.message]
    line = next(n for n, row in enumerate(Path(path).read_text().splitlines(), 1) if "opt_out_scope" in row)
    assert "revoke-all" in warning.message and warning.line == line


# --- quiet hours ----------------------------------------------------------------------------------


def test_an_api_prompt_to_miami_at_2130_waits_until_0800(shop: Gateway) -> None:
    key = make_key(shop)
    evening = move_to(shop.clock, NEW_YORK, time(21, 30))
    assert opt_in(shop, key, MIAMI, "deals")["status"] == "pendingDOI"
    [(purpose, status, held_until, reason, _due)] = outbound(shop, MIAMI)
    opens = datetime.combine(evening.date() + timedelta(days=1), time(8), tzinfo=NEW_YORK)
    assert (purpose, status, reason) == ("doi_prompt", "pending", "quiet_hours")
    assert held_until == opens
    messages = shop.client.get("/v1/messages", params={"phoneNumber": MIAMI}, headers=key).json()["items"]
    assert [(m["status"], m["heldReason"]) for m in messages] == [("held", "quiet_hours")]
    assert datetime.fromisoformat(messages[0]["heldUntil"]) == opens
    [held] = shop.state.writer.call(lambda conn, now: list_held(conn, now, brand="shop"))
    assert (held["phone"], held["purpose"], held["held_reason"]) == (MIAMI, "doi_prompt", "quiet_hours")
    metrics = shop.client.get("/metrics").text
    assert 'optline_outbox_held{brand="shop",reason="quiet_hours"} 1.0' in metrics
    assert shop.replies(MIAMI) == []
    shop.clock.advance(seconds=(opens - shop.clock()).total_seconds() + 1)
    shop.drain()
    assert shop.replies(MIAMI)[0].startswith("Shop Deals: reply YES")


def test_an_api_prompt_to_austin_on_a_sunday_morning_waits_until_noon(shop: Gateway) -> None:
    key = make_key(shop)
    sunday = move_to(shop.clock, CHICAGO, time(10), weekday=6)
    opt_in(shop, key, AUSTIN, "deals")
    [(_purpose, _status, held_until, reason, due)] = outbound(shop, AUSTIN)
    noon = datetime.combine(sunday.date(), time(12), tzinfo=CHICAGO)
    assert reason == "quiet_hours" and held_until == noon == due


def test_a_joins_prompt_at_2300_goes_at_once(shop: Gateway) -> None:
    move_to(shop.clock, NEW_YORK, time(23))
    shop.text("DEALS", from_=MIAMI, to=DEALS_NEWS)
    shop.drain()
    assert shop.replies(MIAMI) == ["Shop Deals: reply YES to confirm. Msg&data rates may apply. "
                                   "Reply HELP for help, STOP to cancel."]
    [(_purpose, status, held_until, _reason, _due)] = outbound(shop, MIAMI)
    assert held_until is None and status != "pending"


def test_a_held_prompt_holds_up_none_of_the_phones_own_answers(shop: Gateway) -> None:
    key = make_key(shop)
    move_to(shop.clock, NEW_YORK, time(22))
    opt_in(shop, key, MIAMI, "deals")
    shop.text("NEWS", from_=MIAMI, to=DEALS_NEWS)  # single opt-in: the welcome answers the text
    deadline = monotonic() + 5
    while not shop.replies(MIAMI) and monotonic() < deadline:
        sleep(0.02)
    assert shop.replies(MIAMI) == ["Shop News: you're in! Reply STOP to cancel."]
    assert outbound(shop, MIAMI)[0][:2] == ("doi_prompt", "pending")  # the prompt still held


@pytest.mark.parametrize(("text", "answer"), [
    ("DEALS", "Shop Deals: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."),
    ("YES", "Shop Deals: you're in! Reply STOP to cancel."),
], ids=["join", "confirm"])
def test_a_held_prompt_the_phone_answered_meanwhile_never_goes(shop: Gateway, text: str, answer: str) -> None:
    key = make_key(shop)
    evening = move_to(shop.clock, NEW_YORK, time(22))
    opt_in(shop, key, MIAMI, "deals")
    shop.text(text, from_=MIAMI, to=DEALS_NEWS)  # the phone's own text is answered at once
    deadline = monotonic() + 5
    while not shop.replies(MIAMI) and monotonic() < deadline:
        sleep(0.02)
    assert shop.replies(MIAMI) == [answer]
    opens = datetime.combine(evening.date() + timedelta(days=1), time(8), tzinfo=NEW_YORK)
    shop.clock.advance(seconds=(opens - shop.clock()).total_seconds() + 1)
    shop.drain()
    assert shop.replies(MIAMI) == [answer]  # no stale "reply YES" at 08:00
    [held] = [row for row in shop.query("SELECT status, error_reason, held_reason FROM outbox"
                                        " WHERE phone = :p AND channel = 'sms'", p=MIAMI) if row[2]]
    assert held == ("cancelled", "superseded by a newer state of its subscription", "quiet_hours")


def test_a_second_api_prompt_supersedes_the_held_one(shop: Gateway) -> None:
    key = make_key(shop)
    evening = move_to(shop.clock, NEW_YORK, time(22))
    opt_in(shop, key, MIAMI, "deals")
    shop.clock.advance(seconds=3600)
    opt_in(shop, key, MIAMI, "deals")
    opens = datetime.combine(evening.date() + timedelta(days=1), time(8), tzinfo=NEW_YORK)
    shop.clock.advance(seconds=(opens - shop.clock()).total_seconds() + 1)
    shop.drain()
    assert shop.replies(MIAMI) == ["Shop Deals: reply YES to confirm. Msg&data rates may apply. "
                                   "Reply HELP for help, STOP to cancel."]


def test_a_retry_that_would_land_in_quiet_hours_waits_for_the_window(shop: Gateway) -> None:
    key = make_key(shop)
    evening = move_to(shop.clock, NEW_YORK, time(19, 59))  # Florida's window closes at 20:00
    shop.fake.fail_http(429, headers={"Retry-After": "120"})  # the provider says: two minutes
    opt_in(shop, key, MIAMI, "deals")  # not held: the window is open
    shop.fake.wait_for_requests(1)
    opens = datetime.combine(evening.date() + timedelta(days=1), time(8), tzinfo=NEW_YORK)
    deadline = monotonic() + 5
    while shop.query("SELECT attempts, status FROM outbox WHERE phone = :p", p=MIAMI)[0] != (1, "pending") \
            and monotonic() < deadline:
        sleep(0.02)  # until the failure is recorded
    [(purpose, status, held_until, reason, due)] = outbound(shop, MIAMI)
    assert (purpose, status, reason) == ("doi_prompt", "pending", "quiet_hours")
    assert held_until == due == opens  # not 20:01
    shop.clock.advance(seconds=(opens - shop.clock()).total_seconds() + 1)
    shop.drain()
    assert shop.replies(MIAMI) == ["Shop Deals: reply YES to confirm. Msg&data rates may apply. "
                                   "Reply HELP for help, STOP to cancel."]


def test_a_profile_time_zone_wins_over_the_numbers(shop: Gateway) -> None:
    key = make_key(shop)
    move_to(shop.clock, NEW_YORK, time(22))  # 22:00 in Miami, 04:00 in Paris
    profile = {"phoneNumber": MIAMI, "timezone": "Europe/Paris"}
    assert shop.client.post("/v1/profiles", json=profile, headers=key).status_code == 201
    opt_in(shop, key, MIAMI, "deals")
    [(_purpose, _status, held_until, _reason, _due)] = outbound(shop, MIAMI)
    paris = held_until.astimezone(ZoneInfo("Europe/Paris"))
    assert paris.time() == time(8)  # Florida's 08:00, read in Paris


# --- caps ---------------------------------------------------------------------------------------------


def test_a_fourth_marketing_text_in_24_hours_to_florida_is_held(shop: Gateway) -> None:
    key = make_key(shop)
    noon = move_to(shop.clock, NEW_YORK, time(12))
    sends = [{"phoneNumber": MIAMI, "program": "deals", "externalId": f"c{i}"} for i in range(3)]
    response = shop.client.post("/v1/sends", json={"items": sends}, headers=key)
    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 3, "optedOut": []}
    opt_in(shop, key, MIAMI, "deals")
    [(purpose, _status, held_until, reason, _due)] = outbound(shop, MIAMI)
    assert (purpose, reason) == ("doi_prompt", "daily_cap")
    assert abs(held_until - (noon + timedelta(hours=24))) < timedelta(seconds=1)
    # Texas has no cap: the same three sends leave room there.
    shop.client.post("/v1/sends", json={"items": [dict(s, phoneNumber="+12125550100") for s in sends]}, headers=key)
    opt_in(shop, key, "+12125550100", "deals")
    [(_p, _s, held_until, _r, _d)] = outbound(shop, "+12125550100")
    assert held_until is None


# --- the send check ----------------------------------------------------------------------------------


def send_check(gateway: Gateway, key: dict[str, str], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = gateway.client.post("/v1/send-check", json={"items": items}, headers=key)
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def test_the_send_check_answers_every_reason(shop: Gateway) -> None:
    key = make_key(shop)
    noon = move_to(shop.clock, NEW_YORK, time(12))
    shop.text("NEWS", from_=PHONE, to=DEALS_NEWS)  # subscribed to news
    shop.text("ALERTS", from_="+13055550199", to=ALERTS)
    shop.text("STOP", from_="+13055550199", to=ALERTS)  # opted out of the whole brand by SMS
    opt_in(shop, key, "+14155550124", "deals")  # pendingDOI
    shop.text("NEWS", from_="+13055550177", to=DEALS_NEWS)  # news allows 2 a day
    shop.client.post("/v1/sends", json={"items": [{"phoneNumber": "+13055550177", "program": "news"}] * 2},
                     headers=key)
    night = (noon + timedelta(hours=13)).isoformat()  # 22:00 in San Francisco
    answers = send_check(shop, key, [
        {"phoneNumber": PHONE, "program": "news"},
        {"phoneNumber": "+14155550199", "program": "news"},
        {"phoneNumber": "+14155550124", "program": "deals"},
        {"phoneNumber": "+13055550199", "program": "deals"},
        {"phoneNumber": PHONE, "program": "news", "at": night},
        {"phoneNumber": "+13055550177", "program": "news"},
        {"phoneNumber": "+33612345678", "program": "news"},
    ])
    codes = [[r["code"] for r in a["reasons"]] for a in answers]
    assert codes == [[], ["not_subscribed"], ["pending_doi"], ["opted_out"], ["quiet_hours"], ["daily_cap"],
                     ["country_not_allowed"]]
    assert [a["allowed"] for a in answers] == [True] + [False] * 6
    opted = answers[3]["reasons"][0]
    assert (opted["source"], opted["scope"]) == ("sms", "brand") and opted["at"]
    assert answers[3]["nextAllowedAt"] is None and answers[1]["nextAllowedAt"] is None
    # A send planned for 22:00 in San Francisco waits for 08:00 there.
    quiet = datetime.fromisoformat(answers[4]["nextAllowedAt"]).astimezone(ZoneInfo("America/Los_Angeles"))
    assert quiet.time() == time(8)
    capped = datetime.fromisoformat(answers[5]["nextAllowedAt"])
    assert capped > noon + timedelta(hours=23) and answers[5]["reasons"][0]["detail"] == "at most 2 texts in 24 h"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"items": []}, 422, "items"),
    ({"items": [{"phoneNumber": PHONE, "program": "news"}] * 1001}, 422, "items"),
    ({"items": [{"phoneNumber": "12", "program": "news"}]}, 422, "items.0.phoneNumber"),
    ({"items": [{"phoneNumber": PHONE, "program": "nope"}]}, 422, "items.0.program"),
    ({"items": [{"phoneNumber": PHONE, "program": "news", "at": "2026-01-01T00:00:00"}]}, 422, "items.0.at"),
    ({"items": [{"phoneNumber": PHONE, "program": "news", "at": "9999-12-31T23:59:59+14:00"}]}, 422, "items.0.at"),
    ({"items": [{"phoneNumber": PHONE, "program": "news", "extra": 1}]}, 422, "items.0.extra"),
    ([1, 2], 422, "body"),
], ids=["empty", "too-many", "bad-phone", "unknown-program", "naive-time", "far-future", "unknown-field", "array"])
def test_bad_send_checks_are_4xx_naming_the_field(shop: Gateway, body: Any, status: int, field: str) -> None:
    response = shop.client.post("/v1/send-check", json=body, headers=make_key(shop))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in response.json()["errors"]}


def test_sends_to_an_opted_out_phone_are_recorded_and_named(shop: Gateway) -> None:
    key = make_key(shop)
    shop.text("NEWS", from_=PHONE, to=DEALS_NEWS)
    shop.text("STOP", from_=PHONE, to=DEALS_NEWS)
    response = shop.client.post("/v1/sends", json={"items": [{"phoneNumber": "+14155550999", "program": "news"},
                                                             {"phoneNumber": PHONE, "program": "news"}]}, headers=key)
    assert response.json() == {"recorded": 2, "optedOut": [1]}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    bad = shop.client.post("/v1/sends", json={"items": [{"phoneNumber": PHONE, "program": "news", "sentAt": future}]},
                           headers=key)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "items.0.sentAt"


# --- the rules as data (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(("phone", "local", "opens"), [
    ("+12035550100", datetime(2026, 12, 7, 8, 30), time(9)),  # Connecticut opens at 9
    ("+12035550100", datetime(2026, 12, 7, 20, 0), time(9)),  # and closes at 20
    ("+17035550100", datetime(2026, 12, 7, 20, 30), None),  # Virginia: the federal 21:00
    ("+14055550100", datetime(2026, 12, 7, 20, 0), time(8)),  # Oklahoma closes at 20
    ("+15125550100", datetime(2026, 12, 5, 9, 0), None),  # Texas, Saturday 9:00
    ("+12125550100", datetime(2026, 12, 7, 7, 59), time(8)),  # New York: federal
], ids=["ct-early", "ct-late", "va-evening", "ok-evening", "tx-saturday", "ny-early"])
def test_the_state_windows(phone: str, local: datetime, opens: time | None) -> None:
    from app.rules.quiet_hours import next_allowed, recipient_zones

    zones = recipient_zones(phone, None)
    at = local.replace(tzinfo=zones[0])
    found = next_allowed(at, phone=phone, zones=zones)
    assert (found.astimezone(zones[0]).time() if found else None) == opens


@pytest.mark.parametrize(("phone", "expected"), [
    ("+15555550100", {"America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"}),
    ("+447700900123", {"Europe/London", "Europe/Guernsey", "Europe/Isle_of_Man", "Europe/Jersey"}),
    ("+33612345678", {"Europe/Paris"}),
], ids=["us-unplaced-area-code", "uk-mobile", "france"])
def test_a_number_libphonenumber_cannot_place_is_read_in_its_country_never_utc(phone: str, expected: set[str]) -> None:
    from app.rules.quiet_hours import next_allowed, recipient_zones

    zones = recipient_zones(phone, None)
    assert {z.key for z in zones} == expected
    if phone.startswith("+1"):
        # 10:00 in New York is 07:00 in Los Angeles: the federal window is not open everywhere yet.
        at = datetime(2026, 12, 7, 10, tzinfo=NEW_YORK)
        assert next_allowed(at, phone=phone, zones=zones) == datetime(2026, 12, 7, 11, tzinfo=NEW_YORK)


def test_several_zones_wait_for_the_strictest() -> None:
    from app.rules.quiet_hours import next_allowed, recipient_zones

    zones = recipient_zones("+18005550100", None)  # toll-free: every North American zone
    assert len(zones) > 10
    found = next_allowed(datetime(2026, 12, 7, 12, tzinfo=UTC), phone="+18005550100", zones=zones)
    assert found is not None
    for zone in zones:
        assert time(8) <= found.astimezone(zone).time() < time(21), zone


@pytest.mark.parametrize(("brand_lines", "program_lines", "message"), [
    ("    opt_out_scope: everyone\n", "", "opt_out_scope must be 'brand'"),
    ("    quiet_hours: {start: '9am', end: '20:00'}\n", "", "is not a time like 09:00"),
    ("    quiet_hours: {start: '20:00', end: '09:00'}\n", "", "start must be before end"),
    ("", "        max_per_day: 0\n", "max_per_day must be a whole number"),
    ("", "        marketing: sometimes\n", "marketing must be true or false"),
])
def test_check_refuses_bad_rule_fields(tmp_path: Path, brand_lines: str, program_lines: str, message: str) -> None:
    text = RULES.read_text().replace("    name: Shop\n", "    name: Shop\n" + brand_lines, 1)
    text = text.replace("        name: Shop Deals\n", "        name: Shop Deals\n" + program_lines, 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert any(message in e.message for e in check(path).errors), check(path).errors
