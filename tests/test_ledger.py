"""The tamper-evident consent ledger on both databases: chains, checkpoints, and what `ledger verify` catches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app import ledger
from app.ledger import GENESIS, event_hash, phone_key, sha256_text
from app.ledger_verify import verify
from app.proof import seal
from app.sql import Raw
from tests.conftest import KEYWORDS, Gateway

PHONE = "+14155550123"


@pytest.fixture
def tamperable(database_url: str) -> Iterator[Callable[[], None]]:
    """Drops the ledger's triggers when called; puts them back after the test (PostgreSQL's database is shared)."""
    yield partial(drop_append_only, database_url)
    if database_url.startswith("postgresql"):
        engine = sa.create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE consent_events"))
            for name, when, function in (("append_only", "DELETE", "optline_append_only"),
                                         ("erase_only", "UPDATE", "optline_erase_only")):
                conn.execute(sa.text(f"DROP TRIGGER IF EXISTS consent_events_{name} ON consent_events"))
                conn.execute(sa.text(f"CREATE TRIGGER consent_events_{name} BEFORE {when} ON consent_events"
                                     f" FOR EACH ROW EXECUTE FUNCTION {function}()"))
        engine.dispose()


def drop_append_only(url: str) -> None:
    """What an operator with database access can do: drop the triggers that refuse UPDATE and DELETE."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("DROP TRIGGER consent_events_append_only ON consent_events"))
            conn.execute(sa.text("DROP TRIGGER consent_events_erase_only ON consent_events"))
        else:
            conn.execute(sa.text("DROP TRIGGER consent_events_no_delete"))
            conn.execute(sa.text("DROP TRIGGER consent_events_erase_only"))
    engine.dispose()


def run(url: str, sql: str, **params: Any) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    engine.dispose()


def check(gateway: Gateway, **kwargs: Any) -> Any:
    with gateway.state.reader.connect() as conn:
        return verify(conn, **kwargs)


def ids(gateway: Gateway) -> list[int]:
    return [r[0] for r in gateway.query("SELECT id FROM consent_events ORDER BY id")]


@pytest.fixture
def joined(gateway: Gateway) -> Gateway:
    """JOIN → YES → STOP from one phone, and a JOIN from another."""
    for body in ("JOIN", "YES", "STOP"):
        assert gateway.text(body, from_=PHONE).status_code == 200
    gateway.text("JOIN", from_="+14155550199")
    gateway.drain()
    return gateway


def test_each_event_links_to_the_one_before_it_in_its_phones_chain(joined: Gateway) -> None:
    rows = joined.query("SELECT phone, chain_seq, prev_hash, hash, phone_key, rules_sha256, reply_purpose, reply_text,"
                        " event FROM consent_events ORDER BY id")
    mine = [r for r in rows if r.phone == PHONE]
    # One chain for the phone across the brand's programs: STOP records an opt-out from each.
    assert [(r.event, r.chain_seq) for r in mine] == [("join", 1), ("confirm", 2), ("stop", 3), ("stop", 4)]
    assert mine[0].prev_hash == GENESIS and all(b.prev_hash == a.hash for a, b in zip(mine, mine[1:]))
    assert {r.phone_key for r in mine} == {phone_key(PHONE)}
    other = [r for r in rows if r.phone != PHONE]
    assert [(r.chain_seq, r.prev_hash) for r in other] == [(1, GENESIS)]  # its own chain: no shared hotspot
    # The rules in force and the text of each reply, recorded with the event.
    assert {r.rules_sha256 for r in rows} == {joined.state.rules.sha256}
    assert [r.reply_purpose for r in mine] == ["doi_prompt", "welcome", "stop", "stop"]
    queued = [b for b, in joined.query("SELECT body FROM outbox WHERE phone = :p AND channel = 'sms' ORDER BY id",
                                       p=PHONE)]  # the welcome was cancelled by the STOP right after it
    assert [r.reply_text for r in mine[:3]] == queued and mine[3].reply_text == mine[2].reply_text
    found = check(joined)
    assert found.ok, found.problems
    assert (found.events, found.chains) == (5, 2)


def test_a_checkpoint_seals_the_heads_and_is_shown_by_api_metrics_and_event(joined: Gateway) -> None:
    checkpoint = joined.state.writer.call(lambda conn, now: seal(conn, now, rules=joined.state.rules))
    assert checkpoint is not None and checkpoint.heads == 2
    assert joined.state.writer.call(lambda conn, now: seal(conn, now, rules=joined.state.rules)) is None  # none moved
    from app.auth import create_key

    _info, key = joined.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="t"))
    page = joined.client.get("/v1/ledger/checkpoints", headers={"x-api-key": str(key)}).json()
    assert page["items"][0]["hash"] == checkpoint.hash and page["items"][0]["prevHash"] == GENESIS
    assert joined.client.get("/v1/ledger/checkpoints?limit=0", headers={"x-api-key": str(key)}).status_code == 400
    metrics = joined.client.get("/metrics").text
    assert f'optline_ledger_checkpoint{{hash="{checkpoint.hash}"}} {float(checkpoint.id)}' in metrics
    found = check(joined, expect_checkpoint=checkpoint.hash)
    assert found.ok and found.checkpoints == 1 and found.latest_checkpoint == checkpoint.hash
    assert not check(joined, expect_checkpoint="f" * 64).ok
    joined.text("START", from_=PHONE)
    second = joined.state.writer.call(lambda conn, now: seal(conn, now, rules=joined.state.rules))
    assert second is not None and second.heads == 1 and second.prev_hash == checkpoint.hash


def _tamper(kind: str, url: str, events: list[int]) -> int:
    """Tamper with the first phone's chain (join, confirm, stop, stop); the id verify must name."""
    join, confirm, stop = events[:3]
    if kind == "edit":
        run(url, "UPDATE consent_events SET to_status = 'subscribed' WHERE id = :id", id=stop)
        return stop
    if kind == "edit_time":
        run(url, "UPDATE consent_events SET created_at = created_at - interval '1 day' WHERE id = :id"
            if url.startswith("postgresql") else
            "UPDATE consent_events SET created_at = datetime(created_at, '-1 day') WHERE id = :id", id=confirm)
        return confirm
    if kind == "delete":
        run(url, "DELETE FROM consent_events WHERE id = :id", id=confirm)
        return stop  # the gap is found at the event after it
    if kind == "delete_newest":
        run(url, "DELETE FROM consent_events WHERE id = :id", id=events[3])
        return stop  # its chain's head names an event past it
    if kind == "reorder":
        # Swap the places of confirm and stop in the chain.
        run(url, "UPDATE consent_events SET chain_seq = 99 WHERE id = :id", id=confirm)
        run(url, "UPDATE consent_events SET chain_seq = 2 WHERE id = :id", id=stop)
        run(url, "UPDATE consent_events SET chain_seq = 3 WHERE id = :id", id=confirm)
        return confirm  # the earlier of the two: it no longer links, nor hashes, in its new place
    if kind == "insert":
        run(url, "INSERT INTO consent_events (subscription_id, brand, program, phone, event, from_status, to_status,"
                 " source, created_at, phone_key, chain_seq, prev_hash, hash) SELECT subscription_id, brand, program,"
                 " phone, 'api_opt_in', 'unsubscribed', 'subscribed', 'api', created_at, phone_key, chain_seq + 1, hash, hash"
                 " FROM consent_events WHERE id = :id", id=events[3])
        return events[-1] + 1
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["edit", "edit_time", "delete", "delete_newest", "reorder", "insert"])
def test_ledger_verify_names_the_first_tampered_event(joined: Gateway, tamperable: Callable[[], None], kind: str,
                                                    database_url: str) -> None:
    assert check(joined).ok
    tamperable()
    events = [i for i, in joined.query("SELECT id FROM consent_events WHERE phone = :p ORDER BY id", p=PHONE)]
    last = ids(joined)[-1]
    named = _tamper(kind, database_url, [*events, last])
    assert named
    found = check(joined)
    assert not found.ok
    assert found.first is not None and found.first.event_id == named, found.problems
    assert f"event {named}" in str(found.first)
    assert check(joined, brand="acme", phone="+14155550199").ok  # the other phone's chain is untouched


def test_a_rewritten_chain_no_longer_matches_its_checkpoint(joined: Gateway, database_url: str,
                                                            tamperable: Callable[[], None]) -> None:
    joined.state.writer.call(lambda conn, now: seal(conn, now, rules=joined.state.rules))
    tamperable()
    # The newest event of the phone's chain (the head the checkpoint sealed): its second STOP.
    [stop] = [i for i, in joined.query("SELECT max(id) FROM consent_events WHERE phone = :p", p=PHONE)]
    # Forge the STOP away and recompute its hash and head, as someone who read this code could.
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        row = dict(conn.execute(sa.text("SELECT * FROM consent_events WHERE id = :id"), {"id": stop}).mappings().one())
        row.update(event="api_opt_in", to_status="subscribed")
        if isinstance(row["created_at"], str):
            row["created_at"] = datetime.fromisoformat(row["created_at"]).replace(tzinfo=UTC)
        forged = event_hash(row["prev_hash"], row)
        conn.execute(sa.text("UPDATE consent_events SET event = 'api_opt_in', to_status = 'subscribed', hash = :h"
                             " WHERE id = :id"), {"h": forged, "id": stop})
        conn.execute(sa.text("UPDATE ledger_heads SET hash = :h WHERE hash = :old"), {"h": forged, "old": row["hash"]})
    engine.dispose()
    found = check(joined)
    assert found.first is not None and found.first.event_id == stop
    assert "checkpoint 1" in str(found.first)


def test_ledger_verify_command_exits_1_naming_the_event(joined: Gateway, database_url: str, tmp_path: Path,
                                                       tamperable: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`optline ledger …` as the command runs it (in this process: a new one spends seconds importing)."""
    from app.cli import main

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(("OPTLINE_", "TWILIO_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPTLINE_DATABASE_URL", database_url)
    monkeypatch.setenv("OPTLINE_KEYWORDS", str(KEYWORDS))

    def optline(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().out

    code, out = optline("ledger", "checkpoint")
    assert code == 0 and out.startswith("checkpoint 1: 2 chain heads sealed")
    sealed = out.split()[-1]
    assert optline("ledger", "checkpoint") == (0, "no chain moved since the last checkpoint\n")
    code, out = optline("ledger", "verify", "--brand", "acme", "--checkpoint", sealed)
    assert code == 0 and out.startswith("ledger intact (brand acme): 5 events in 2 chains, 1 checkpoints")
    tamperable()
    [confirm] = [i for i, in joined.query("SELECT id FROM consent_events WHERE event = 'confirm'")]
    run(database_url, "UPDATE consent_events SET keyword = 'OK' WHERE id = :id", id=confirm)
    code, out = optline("ledger", "verify")
    assert code == 1
    assert out.splitlines()[0] == (f"ledger BROKEN (every brand): event {confirm} was altered: its columns "
                                   "no longer match its hash")


def test_the_append_only_trigger_still_refuses_edits_but_an_erasure(joined: Gateway) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        joined.state.writer.call(lambda conn, now: conn.execute(sa.text("UPDATE consent_events SET event = 'x'")))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        joined.state.writer.call(lambda conn, now: conn.execute(sa.text("DELETE FROM consent_events")))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        joined.state.writer.call(lambda conn, now: conn.execute(sa.text("UPDATE consent_events SET phone = '+1999'")))


@pytest.mark.slow  # ~10-20 s an engine on a loaded machine: the rows' hashes are made in Python, then walked
def test_an_intact_ledger_of_100000_events_verifies(database_url: str) -> None:
    """Written in bulk (hashes made here, a few multi-row inserts), then walked by `verify`."""
    ledger.configure(ledger.key_from(None, "k" * 32))
    try:
        engine = sa.create_engine(database_url)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        rows: list[dict[str, Any]] = []
        heads: list[dict[str, Any]] = []
        for chain in range(20_000):
            phone = f"+1415{chain:07d}"
            key, prev = phone_key(phone), GENESIS
            for seq in range(1, 6):
                row = {"subscription_id": f"sub_{chain}", "brand": "acme", "program": "deals", "phone": phone,
                       "event": "join", "from_status": "none", "to_status": "pendingDOI", "source": "sms",
                       "keyword": "JOIN", "provider_message_id": f"SM{chain}x{seq}", "raw_text": "JOIN",
                       "api_key_id": None, "consent_source": None, "consent_proof": None, "consented_at": None,
                       "reason": None, "created_at": start + timedelta(seconds=chain * 5 + seq), "phone_key": key,
                       "chain_seq": seq, "prev_hash": prev, "raw_text_sha256": sha256_text("JOIN"),
                       "rules_sha256": None, "reply_purpose": None, "reply_text": None, "reply_sha256": None}
                row["hash"] = prev = event_hash(prev, row)
                rows.append(row)
            heads.append({"phone_key": key, "brand": "acme", "seq": 5, "hash": prev, "updated_at": start})
        with engine.begin() as conn:
            raw = Raw(conn)
            for i in range(0, len(rows), 25_000):
                raw.insert_rows("consent_events", tuple(rows[0]), rows[i:i + 25_000])
            raw.insert_rows("ledger_heads", tuple(heads[0]), heads)
        with engine.connect() as conn:
            found = verify(conn)
        assert found.ok, found.problems[:3]
        assert (found.events, found.chains) == (100_000, 20_000)
        engine.dispose()
    finally:
        ledger._key = None  # the next app configures its own


@pytest.fixture(params=["sqlite", "postgresql"])
def private_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A migrated database of each engine of this test's own (it is migrated down and up)."""
    if request.param == "sqlite":
        import shutil

        shutil.copy(sqlite_template, tmp_path / "optline.db")
        yield f"sqlite:///{tmp_path / 'optline.db'}"
        return
    from tests.conftest import new_pg_database

    with new_pg_database("optline_backfill") as url:
        yield url


def test_the_migration_chains_the_events_already_stored(private_url: str) -> None:
    from alembic import command

    from app.migrate import alembic_config

    command.downgrade(alembic_config(private_url), "0007")
    engine = sa.create_engine(private_url)
    with engine.begin() as conn:
        for i, (phone, event, text) in enumerate([(PHONE, "join", "JOIN"), ("+14155550199", "join", "JOIN"),
                                                  (PHONE, "confirm", "YES"), (PHONE, "stop", "STOP")]):
            conn.execute(sa.text(
                "INSERT INTO consent_events (subscription_id, brand, program, phone, event, from_status, to_status,"
                " source, keyword, raw_text, consent_proof, created_at) VALUES ('sub_' || :phone, 'acme', 'deals',"
                " :phone, :event, 'none', 'pendingDOI', 'sms', :text, :text, NULL, :at)"),
                {"phone": phone, "event": event, "text": text, "at": datetime(2026, 11, 1, 10, i, tzinfo=UTC)})
    engine.dispose()
    command.upgrade(alembic_config(private_url), "head")
    engine = sa.create_engine(private_url)
    with engine.connect() as conn:
        chained = conn.execute(sa.text("SELECT phone, chain_seq FROM consent_events ORDER BY id")).all()
        assert [tuple(r) for r in chained] == [(PHONE, 1), ("+14155550199", 1), (PHONE, 2), (PHONE, 3)]
        heads = conn.execute(sa.text("SELECT seq FROM ledger_heads ORDER BY seq")).scalars().all()
        assert heads == [1, 3]
        found = verify(conn)
        assert found.ok, found.problems
        assert (found.events, found.chains) == (4, 2)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE consent_events SET event = 'join'"))
    engine.dispose()


def test_serve_seals_the_ledger_periodically_and_tells_the_brand(
        gateway_factory: Callable[..., Gateway], database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import time

    monkeypatch.setenv("ACME_EVENTS_SECRET", "whsec_" + base64.b64encode(bytes(range(32))).decode())
    keywords = tmp_path / "keywords.yaml"
    keywords.write_text(Path(KEYWORDS).read_text().replace(
        "    # events:\n    #   url: https://crm.acme.example/hooks/optline\n    #   secret_env: ACME_EVENTS_SECRET",
        "    events:\n      url: http://127.0.0.1:9/hooks/optline\n      secret_env: ACME_EVENTS_SECRET"))
    gateway = gateway_factory(database_url, keywords=str(keywords), checkpoint_seconds=0.2)
    gateway.text("JOIN", from_=PHONE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not gateway.query("SELECT hash FROM ledger_checkpoints"):
        time.sleep(0.05)
    [(sealed,)] = gateway.query("SELECT hash FROM ledger_checkpoints")
    [(payload,)] = gateway.query("SELECT payload FROM outbox WHERE purpose = 'ledger.checkpoint'")
    payload = payload if isinstance(payload, dict) else __import__("json").loads(payload)
    assert payload["type"] == "ledger.checkpoint" and payload["data"]["hash"] == sealed
    assert payload["data"]["heads"] == 1
