"""The evidence pack and erasure through the API, on both databases."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.auth import create_key
from app.ledger import phone_key, pseudonym
from app.ledger_verify import verify
from tests.conftest import Gateway

PHONE = "+14155550123"
PROOF = {"termsUrl": "https://acme.example/sms-terms", "sourceText": "Text me news", "ip": "203.0.113.7",
         "formUrl": "https://acme.example/signup"}


@pytest.fixture
def key(gateway: Gateway) -> str:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="t"))
    return str(key)


def deliver(gateway: Gateway) -> None:
    """Send what is queued and report every text to PHONE delivered, as Twilio's status callback does."""
    gateway.drain()
    for message in gateway.fake.messages(to=PHONE):
        assert gateway.status(message.sid, "delivered").status_code in (200, 204)


def join_yes_stop(gateway: Gateway, key: str) -> None:
    for body in ("JOIN", "YES"):
        assert gateway.text(body, from_=PHONE).status_code == 200
        deliver(gateway)
    consented = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = gateway.client.post("/v1/subscriptions/opt-in", headers={"x-api-key": key}, json={
        "phoneNumber": PHONE, "program": "news", "consentSource": "web-form", "consentedAt": consented,
        "consentProof": PROOF})
    assert response.status_code == 200, response.text
    deliver(gateway)
    assert gateway.text("STOP", from_=PHONE).status_code == 200
    deliver(gateway)


def test_the_evidence_pack_holds_every_text_receipt_and_proof(gateway: Gateway, key: str) -> None:
    join_yes_stop(gateway, key)
    response = gateway.client.get(f"/v1/contacts/{PHONE}/evidence", headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    pack = response.json()
    assert pack["phoneNumber"] == PHONE and pack["erasedAt"] is None and pack["verification"]["ok"] is True
    programs = {p["program"]: p for p in pack["programs"]}
    deals, news = programs["deals"], programs["news"]
    assert deals["status"] == "unsubscribed" and news["status"] == "unsubscribed"
    assert [e["event"] for e in deals["events"]] == ["join", "confirm", "stop"]
    rules = gateway.state.rules.sha256
    for event in deals["events"]:
        text = event["inbound"]
        assert text["providerMessageId"].startswith("SM") and text["provider"] == "twilio" and text["receivedAt"]
        assert text["to"] == "+15005550006" and event["rulesSha256"] == rules and event["hash"]
        reply = event["reply"]
        assert reply["sent"]["status"] in ("sent", "delivered", "queued")
        assert reply["sent"]["receipt"]["status"] == "delivered", event
        assert reply["text"] == reply["sent"]["text"] and reply["sent"]["providerMessageId"].startswith("SM")
    assert [e["inbound"]["text"] for e in deals["events"]] == ["JOIN", "YES", "STOP"]
    assert [e["reply"]["purpose"] for e in deals["events"]] == ["doi_prompt", "welcome", "stop"]
    assert deals["events"][1]["reply"]["text"] == "ACME Deals: you're in! Up to 4 msgs/month. Reply STOP to cancel."
    assert deals["optOuts"] == [{"eventId": deals["events"][2]["id"], "event": "stop", "at": deals["events"][2]["at"],
                                 "source": "sms", "keyword": "STOP", "reason": deals["events"][2]["reason"]}]
    assert deals["optOuts"][0]["reason"]  # why STOP was read as an opt-out
    # The API opt-in with its proof (an IP address and the form's URL), then the STOP.
    api_in, stop = news["events"]
    assert api_in["event"] == "api_opt_in" and api_in["api"]["consentProof"] == PROOF
    assert api_in["api"]["consentSource"] == "web-form" and api_in["api"]["apiKeyPrefix"]
    assert api_in["reply"]["sent"]["receipt"]["status"] == "delivered"
    assert stop["event"] == "stop" and stop["reply"]["purpose"] == "stop"


def test_evidence_refuses_a_bad_number(gateway: Gateway, key: str) -> None:
    response = gateway.client.get("/v1/contacts/not-a-number/evidence", headers={"x-api-key": key})
    assert response.status_code == 422 and response.headers["content-type"].startswith("application/problem+json")
    assert gateway.client.get(f"/v1/contacts/{PHONE}/evidence").status_code == 401


def _opt_in(gateway: Gateway, key: str, **changes: Any) -> Any:
    body = {"phoneNumber": PHONE, "program": "deals", "consentSource": "web",
            "consentedAt": (datetime.now(UTC) - timedelta(days=1)).isoformat(), "consentProof": PROOF}
    body.update(changes)
    return gateway.client.post("/v1/subscriptions/opt-in", headers={"x-api-key": key},
                               json={k: v for k, v in body.items() if v is not None})


def test_an_erased_opted_out_number_stays_suppressed_and_the_ledger_verifies(gateway: Gateway, key: str) -> None:
    response = gateway.client.post("/v1/profiles", headers={"x-api-key": key}, json={
        "externalId": "ext-1", "phoneNumber": PHONE, "email": "ann@example.com", "firstName": "Ann"})
    assert response.status_code in (200, 201), response.text
    join_yes_stop(gateway, key)
    opted_out = gateway.query("SELECT opted_out_at FROM subscriptions WHERE phone = :p AND program = 'deals'", p=PHONE)
    erased = gateway.client.post(f"/v1/contacts/{PHONE}/erase", headers={"x-api-key": key})
    assert erased.status_code == 200, erased.text
    alias = pseudonym(phone_key(PHONE))
    # The number and its texts are gone from every table; the profile is a tombstone.
    for table, column in (("subscriptions", "phone"), ("consent_events", "phone"), ("outbox", "phone"),
                          ("inbound_messages", "from_phone"), ("profiles", "phone")):
        assert gateway.query(f"SELECT count(*) FROM {table} WHERE {column} = :p", p=PHONE)[0][0] == 0, table
    assert gateway.query("SELECT email, first_name, deleted_at IS NOT NULL FROM profiles") == [(None, None, True)]
    assert {b for b, in gateway.query("SELECT body FROM inbound_messages WHERE from_phone = :a", a=alias)} == {""}
    assert {b for b, in gateway.query("SELECT body FROM outbox WHERE phone = :a AND channel = 'sms'", a=alias)} == {""}
    assert gateway.query("SELECT count(*) FROM consent_events WHERE raw_text IS NOT NULL")[0][0] == 0
    assert [e for e, in gateway.query("SELECT event FROM consent_events WHERE phone = :a ORDER BY id", a=alias)][-2:] \
        == ["erased", "erased"]  # the erasure is itself an event of the chain, one a program
    with gateway.state.reader.connect() as conn:
        found = verify(conn)
    assert found.ok, found.problems
    # Every opt-in path still sees the opt-out made before the erasure.
    refused = _opt_in(gateway, key)
    assert refused.status_code == 409, refused.text
    assert re.search(r"opt(ed |-)out", refused.json()["detail"])
    put = gateway.client.put(f"/v1/contacts/{PHONE}", headers={"x-api-key": key}, json={
        "channels": {"sms": {"programs": {"deals": {"subscribeStatus": "subscribed"}}}}})
    assert put.status_code == 409, put.text
    # So does the send check, with the opt-out's time and source (read under the number's pseudonym).
    check = gateway.client.post("/v1/send-check", headers={"x-api-key": key}, json={
        "items": [{"phoneNumber": PHONE, "program": "deals"}]})
    assert check.status_code == 200, check.text
    [answer] = check.json()["items"]
    assert answer["allowed"] is False
    assert [(r["code"], r.get("source")) for r in answer["reasons"]][:1] == [("opted_out", "sms")]
    # A text from the number finds its subscription again, with the opt-out time it had.
    gateway.text("HELP", from_=PHONE)
    assert gateway.query("SELECT opted_out_at FROM subscriptions WHERE phone = :p AND program = 'deals'",
                         p=PHONE) == opted_out
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    # The phone's own fresh consent still counts: suppression is not a ban.
    gateway.text("JOIN", from_=PHONE)
    assert gateway.subs(PHONE)["deals"] == "pendingDOI"
    pack = gateway.client.get(f"/v1/contacts/{PHONE}/evidence", headers={"x-api-key": key}).json()
    assert pack["erasedAt"] is not None and pack["verification"]["ok"] is True
    deals = {p["program"]: p for p in pack["programs"]}["deals"]
    assert [e["event"] for e in deals["events"]] == ["join", "confirm", "stop", "erased", "join"]
    assert deals["events"][0]["inbound"]["text"] is None and deals["events"][0]["inbound"]["textSha256"]
    with gateway.state.reader.connect() as conn:
        assert verify(conn).ok


def test_body_retention_blanks_old_texts_and_keeps_every_opt_out(gateway: Gateway, key: str) -> None:
    from app.erasure import expire_bodies

    join_yes_stop(gateway, key)
    later = gateway.clock() + timedelta(days=31)
    blanked = gateway.state.writer.call(lambda conn, now: expire_bodies(conn, later, days=30))
    assert blanked == gateway.query("SELECT count(*) FROM inbound_messages")[0][0] + \
        gateway.query("SELECT count(*) FROM outbox WHERE channel = 'sms'")[0][0]
    assert {b for b, in gateway.query("SELECT body FROM inbound_messages")} == {""}
    assert gateway.query("SELECT count(*) FROM consent_events WHERE event = 'stop' AND raw_text = 'STOP'")[0][0] == 2
    assert gateway.subs(PHONE) == {"deals": "unsubscribed", "news": "unsubscribed"}
    with gateway.state.reader.connect() as conn:
        assert verify(conn).ok


def test_erase_and_retention_commands(gateway: Gateway, key: str, database_url: str, tmp_path: Any,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands' code, called as `optline` calls it (in this process: each new one imports for seconds)."""
    from app.cli import main
    from tests.conftest import KEYWORDS

    join_yes_stop(gateway, key)
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(("OPTLINE_", "TWILIO_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPTLINE_DATABASE_URL", database_url)
    monkeypatch.setenv("OPTLINE_KEYWORDS", str(KEYWORDS))

    def optline(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = optline("retention")
    assert code == 0 and out.startswith("no retention set")
    assert optline("retention", "--days", "0")[0] == 2
    code, out, _ = optline("retention", "--days", "30")  # every text is younger than that
    assert code == 0 and out.startswith("blanked 0 message bodies")
    code, _, err = optline("erase", "--brand", "nope", "--phone", PHONE)
    assert code == 2 and "unknown brand" in err
    code, out, err = optline("erase", "--brand", "acme", "--phone", "(415) 555-0123")
    assert code == 0, err
    assert out.startswith(f"erased {PHONE} from acme: ")
    assert gateway.query("SELECT count(*) FROM subscriptions WHERE phone = :p", p=PHONE)[0][0] == 0
    assert gateway.query("SELECT source FROM consent_events WHERE event = 'erased'") == [("system",), ("system",)]
    assert optline("ledger", "verify")[0] == 0
