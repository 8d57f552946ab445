"""A batch of inbound texts written together must leave what the same texts, one by one, leave.

The writer hands `app.inbound.record_texts` every inbound text of a batch at once: it applies
them in memory and writes each table with one statement. These tests apply random
conversations (several phones, numbers and programs, duplicates, carrier opt-outs, DOIs that
expire between texts) both ways, on each engine, and compare the results and every row.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.db import make_engine
from app.inbound import InboundJob, InboundResult, record_texts
from app.keywords import Rules, load_rules
from app.providers.base import InboundSms
from tests.conftest import ACME, KEYWORDS, _truncate, explain_plans

BISTRO = "+15005550007"
UNROUTED = "+15005550999"
PHONES = ["+14155550101", "+14155550102", "+33612345678", "+447700900123"]  # the last is outside every brand
BODIES = ["JOIN", "DEALS", "NEWS", "YES", "Y", "OUI", "STOP", "ARRÊT", "HELP", "AIDE", "INFO", "START", "UNSTOP",
          "MENU", "LUNCH", "what time do you open?", "😀", "stop"]
# Twilio's own classification of a text (Advanced Opt-Out), when it made one.
OPT_OUT_TYPES = {"STOP": "STOP", "stop": "STOP", "HELP": "HELP", "INFO": "HELP", "START": "START"}


def conversation(seed: int, count: int) -> list[tuple[datetime, InboundSms]]:
    """`count` texts with strictly increasing times, now and then a day or two apart (DOIs expire)."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    texts: list[tuple[datetime, InboundSms]] = []
    for i in range(count):
        now += timedelta(hours=rng.choice([25, 49])) if rng.random() < 0.05 else timedelta(seconds=rng.randint(1, 900))
        if texts and rng.random() < 0.08:  # Twilio retries a text it already delivered
            texts.append((now, texts[rng.randrange(len(texts))][1]))
            continue
        body = rng.choice(BODIES)
        phone = rng.choice(PHONES)
        to = rng.choices([ACME, BISTRO, UNROUTED], weights=[6, 3, 1])[0]
        opt_out = OPT_OUT_TYPES.get(body) if rng.random() < 0.3 else None
        texts.append((now, InboundSms(
            provider="twilio", message_id=f"SM{seed:04d}{i:04d}" + "0" * 24, account_id="AC" + "1" * 32,
            from_phone=phone, to=to, service_id=None, body=body, num_media=0, opt_out_type=opt_out,
            params={"From": phone, "To": to, "Body": body},
        )))
    return texts


def chunks(rng: random.Random, items: list[Any]) -> list[list[Any]]:
    out = []
    while items:
        size = rng.randint(1, 16)
        out.append(items[:size])
        items = items[size:]
    return out


def apply(url: str, rules: Rules, texts: list[tuple[datetime, InboundSms]], *, batches: list[int] | None) -> list[Any]:
    """Apply the texts one per transaction, or in transactions of the given sizes; results and every row."""
    engine = make_engine(url, writer=True)
    results: list[InboundResult] = []
    try:
        if batches is None:
            for now, sms in texts:
                with engine.begin() as conn:
                    results.append(InboundJob(sms, rules)(conn, now))
        else:
            start = 0
            for size in batches:
                with engine.begin() as conn:
                    results += record_texts(conn, [(now, InboundJob(sms, rules)) for now, sms in
                                                   texts[start:start + size]])
                start += size
        with engine.connect() as conn:
            return [results, *snapshot(conn)]
    finally:
        engine.dispose()


def snapshot(conn: sa.Connection) -> list[Any]:
    """Every row the texts wrote, without the ids the database or a random source chose."""
    rows = lambda sql: [dict(r._mapping) for r in conn.execute(sa.text(sql))]  # noqa: E731
    subs = rows("SELECT * FROM subscriptions ORDER BY brand, program, phone")
    sub_ids = {s.pop("id"): (s["brand"], s["program"], s["phone"]) for s in subs}
    events = rows("SELECT * FROM consent_events ORDER BY id")
    for event in events:
        del event["id"]
        event["subscription_id"] = sub_ids[event["subscription_id"]]
        # The chain's hashes cover the subscription's random id: equal chains, other hashes.
        del event["hash"], event["prev_hash"]
    inbound = rows("SELECT * FROM inbound_messages ORDER BY id")
    message_ids = {m.pop("id"): m["message_id"] for m in inbound}
    # A batch queues its brand events before its replies: each channel keeps its own order.
    outbox = rows("SELECT * FROM outbox ORDER BY channel, id")
    for row in outbox:
        del row["id"]
        row["inbound_id"] = message_ids.get(row["inbound_id"])
        payload = json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
        if payload is not None:  # a brand event: its id is random, its subscription's id too
            del payload["id"]
            if "subscriptionId" in payload["data"]:
                payload["data"]["subscriptionId"] = sub_ids[payload["data"]["subscriptionId"]]
        row["payload"] = payload
    return [subs, events, inbound, outbox]


def fresh(url: str, tmp_path: Path, name: str) -> str:
    if url.startswith("sqlite"):
        path = tmp_path / f"{name}.db"
        shutil.copy(sa.make_url(url).database, path)
        return f"sqlite:///{path}"
    _truncate(url)
    return url


@pytest.fixture(params=["plain", "brand-events"])
def batch_rules(request: pytest.FixtureRequest, rules: Rules, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rules:
    """keywords.yaml as shipped, and with acme's brand events switched on (their rows are written in a batch too)."""
    if request.param == "plain":
        return rules
    monkeypatch.setenv("ACME_EVENTS_SECRET", "whsec_" + base64.b64encode(bytes(range(32))).decode())
    text = KEYWORDS.read_text().replace("    # events:\n    #   url: https://crm.acme.example/hooks/optline\n"
                                        "    #   secret_env: ACME_EVENTS_SECRET",
                                        "    events:\n      url: https://crm.acme.example/hooks/optline\n"
                                        "      secret_env: ACME_EVENTS_SECRET")
    path = tmp_path / "keywords.yaml"
    path.write_text(text)
    with_events = load_rules(path)
    assert with_events.brands["acme"].events_url is not None
    return with_events


def test_a_batch_leaves_what_one_text_at_a_time_leaves(database_url: str, batch_rules: Rules, tmp_path: Path) -> None:
    rules = batch_rules
    seen: dict[str, set[str]] = {"events": set(), "outbox": set(), "subs": set(), "channels": set()}
    for seed in range(8):
        texts = conversation(seed, 120)
        batches = [len(chunk) for chunk in chunks(random.Random(seed), list(texts))]
        one_by_one = apply(fresh(database_url, tmp_path, f"one{seed}"), rules, texts, batches=None)
        together = apply(fresh(database_url, tmp_path, f"batched{seed}"), rules, texts, batches=batches)
        # The outbox ids themselves may differ; which reply each text queued may not.
        for results in (one_by_one[0], together[0]):
            results[:] = [(r.duplicate, r.kind, r.program, r.reply, r.outbox_id is not None) for r in results]
        for name, a, b in zip(["results", "subscriptions", "consent_events", "inbound_messages", "outbox"],
                              one_by_one, together, strict=True):
            assert a == b, f"seed {seed}: {name}"
        subs, events, _inbound, outbox = together[1:]
        seen["events"] |= {e["event"] for e in events}
        seen["outbox"] |= {row["status"] for row in outbox}
        seen["subs"] |= {s["status"] for s in subs}
        seen["channels"] |= {row["channel"] for row in outbox}
    # The conversations exercised what they are meant to.
    assert seen["events"] >= {"join", "confirm", "stop", "carrier_opt_out", "doi_expired"}
    assert seen["outbox"] >= {"pending", "cancelled"}
    assert seen["subs"] >= {"pendingDOI", "subscribed", "unsubscribed"}
    assert seen["channels"] == ({"sms", "event"} if rules.brands["acme"].events_url else {"sms"})


def test_one_phone_joining_confirming_and_stopping_in_one_batch(database_url: str, rules: Rules) -> None:
    """The texts of one phone in one batch each see what the one before did; a stop cancels an earlier reply."""
    now = datetime.now(UTC)
    phone = PHONES[0]
    texts = [(now + timedelta(milliseconds=i), InboundSms(
        provider="twilio", message_id=f"SM{i:032d}", account_id=None, from_phone=phone, to=ACME, service_id=None,
        body=body, num_media=0, opt_out_type=None, params={"Body": body})) for i, body in
        enumerate(["JOIN", "YES", "HELP", "NEWS", "STOP", "JOIN"])]
    engine = make_engine(database_url, writer=True)
    try:
        with engine.begin() as conn:
            results = record_texts(conn, [(t, InboundJob(sms, rules)) for t, sms in texts])
        with engine.connect() as conn:
            outbox = conn.execute(sa.text("SELECT purpose, status, program, inbound_id FROM outbox ORDER BY id")).all()
            subs = dict(conn.execute(sa.text("SELECT program, status FROM subscriptions WHERE phone = :p"),
                                     {"p": phone}).all())
            inbound = conn.execute(sa.text("SELECT id, program FROM inbound_messages ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [r.kind for r in results] == ["join", "confirm", "help", "join", "stop", "join"]
    assert [r.program for r in results] == ["deals", "deals", "deals", "news", None, "deals"]
    assert [(p, s) for p, s, _program, _inbound in outbox] == [
        ("doi_prompt", "cancelled"), ("welcome", "cancelled"), ("help", "cancelled"), ("doi_prompt", "cancelled"),
        ("stop", "pending"), ("doi_prompt", "pending")]
    assert [row[3] for row in outbox] == [row[0] for row in inbound[:2]] + [row[0] for row in inbound[2:]]
    assert [r.outbox_id is not None for r in results] == [True] * 6
    assert subs == {"deals": "pendingDOI", "news": "unsubscribed"}


def test_postgresql_reads_a_batch_by_index_probes_on_a_table_without_statistics(unanalysed_pg_url: str,
                                                                                rules: Rules) -> None:
    """A new database on launch day has no statistics: the batch's reads must still probe indexes.

    With `message_id = ANY($1)` or a join, PostgreSQL's generic plan for an unanalysed table
    scanned every stored text of the provider for every batch (seen in `make bench`: 1.7 ms a
    query, growing with the table). auto_explain shows the plans the batch really ran.
    """
    texts = conversation(99, 60)
    engine = make_engine(unanalysed_pg_url, writer=True)
    plans: list[str] = []
    try:
        with engine.begin() as conn:
            # Enough stored texts and subscriptions that a scan and a probe differ, never analysed.
            conn.exec_driver_sql(
                "INSERT INTO inbound_messages (provider, message_id, from_phone, \"to\", body, num_media, kind,"
                " received_at) SELECT 'twilio', 'SMold' || g, '+1415555' || lpad(g::text, 4, '0'), '+15005550006',"
                " 'x', 0, 'unmatched', now() FROM generate_series(1, 5000) g")
            conn.exec_driver_sql(
                "INSERT INTO subscriptions (id, brand, program, phone, status, created_at, updated_at)"
                " SELECT 'sub_old' || g, 'acme', 'deals', '+1415555' || lpad(g::text, 4, '0'), 'subscribed', now(),"
                " now() FROM generate_series(1, 5000) g")
        with engine.begin() as conn:
            explain_plans(conn, plans)
            record_texts(conn, [(now, InboundJob(sms, rules)) for now, sms in texts])
    finally:
        engine.dispose()
    reads = [plan for plan in plans if "inbound_messages" in plan or "subscriptions" in plan]
    assert any("Index" in plan and "subscriptions" in plan for plan in reads)
    assert any("Index" in plan and "inbound_messages" in plan for plan in reads)
    for plan in reads:
        assert "Seq Scan" not in plan and "Hash" not in plan and "Bitmap" not in plan, plan
