"""`python -m bench --only ledger`: what the consent ledger's chain costs per event, and why one chain per phone.

One JSON line. Per engine: what every write batch pays to look its phones up among the
erased numbers (`erasure_lookup_us_per_batch`, BATCH phones, transaction cost taken off), and consent events written in batches of BATCH (as the inbound writer
batches texts), each batch one transaction, through `Writes.flush` (which links the chain),
against the same rows inserted without a chain: the chain's cost per event is the
difference. Then, on PostgreSQL, the alternative the design rejected: one chain for the whole
ledger, whose single head row every writer must lock. Two processes writing different phones
run side by side under each design; the figure is events per second for both together.
"""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app import ledger
from app.consent import _CONSENT_COLUMNS, Writes
from app.db import lock_phones, make_engine
from app.migrate import upgrade
from app.sql import Raw
from bench.load import database, emit

BATCH = 64
EVENTS = 20_000
CONTENTION_EVENTS = 6_000  # each of the two processes
_BASE = ("subscription_id", "brand", "program", "phone", "event", "from_status", "to_status", "source", "keyword",
         "provider_message_id", "raw_text", "api_key_id", "consent_source", "consent_proof", "consented_at", "reason",
         "created_at")


def _row(i: int, block: int) -> dict[str, Any]:
    return {"subscription_id": f"sub_{block}_{i}", "brand": "acme", "program": "deals",
            "phone": f"+1415{block:03d}{i % 10_000:04d}", "event": "join", "from_status": "none",
            "to_status": "pendingDOI", "source": "sms", "keyword": "JOIN", "provider_message_id": f"SM{block}x{i}",
            "raw_text": "JOIN", "api_key_id": None, "consent_source": None, "consent_proof": None,
            "consented_at": None, "reason": None, "created_at": datetime.now(UTC), "rules_sha256": "0" * 64}


def _chained(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    lock_phones(conn, [r["phone"] for r in rows])
    writes = Writes()
    for row in rows:
        writes.consent(row)
    writes.flush(conn)


def _plain(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    lock_phones(conn, [r["phone"] for r in rows])
    Raw(conn).insert_rows("consent_events", _BASE, rows)


def _global(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """The rejected design: one chain, one head row every writer locks (and waits for)."""
    raw = Raw(conn)
    lock_phones(conn, [r["phone"] for r in rows])
    seq, prev = raw.execute("SELECT seq, hash FROM bench_global_head WHERE id = 1 FOR UPDATE").fetchone()
    for row in rows:
        seq += 1
        row.update(phone_key=ledger.phone_key(row["phone"]), chain_seq=seq, prev_hash=prev,
                   raw_text_sha256=ledger.sha256_text(row["raw_text"]), reply_purpose=None, reply_text=None,
                   reply_sha256=None, brand="global")
        row["hash"] = prev = ledger.event_hash(prev, row)
    raw.insert_rows("consent_events", _CONSENT_COLUMNS, rows)
    raw.execute("UPDATE bench_global_head SET seq = :s, hash = :h WHERE id = 1", {"s": seq, "h": prev})


_WRITERS = {"chained": _chained, "plain": _plain, "global": _global}


def _write(url: str, how: str, count: int, block: int) -> float:
    """Write `count` events of phones in `block` with `how`; seconds taken."""
    ledger.configure(ledger.key_from(None, "bench" * 8))
    engine = make_engine(url, writer=True)  # as optline's writer opens it (its SQLite pragmas)
    write = _WRITERS[how]
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        rows = [_row(i, block) for i in range(first, min(first + BATCH, count))]
        with engine.begin() as conn:
            write(conn, rows)
    seconds = time.perf_counter() - start
    engine.dispose()
    return seconds


def _per_event(engine_name: str, folder: Path) -> dict[str, Any] | None:
    with database(engine_name, folder, "ledger") as url:
        if url is None:
            return None
        upgrade(url)
        plain = _write(url, "plain", EVENTS, 300)
        chained = _write(url, "chained", EVENTS, 400)
        restore = _restore_cost(url)
        if engine_name == "sqlite":
            return {**_figures(plain, chained), **restore}
        # Contention: two processes, different phones, per-phone chains vs one global chain.
        with sa.create_engine(url).begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_global_head (id int PRIMARY KEY, seq bigint, hash text)"))
            conn.execute(sa.text("INSERT INTO bench_global_head VALUES (1, 0, :g)"), {"g": ledger.GENESIS})
        figures = {**_figures(plain, chained), **restore}
        for how, blocks in (("chained", (500, 600)), ("global", (700, 800))):
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                start = time.perf_counter()
                pool.starmap(_write, [(url, how, CONTENTION_EVENTS, b) for b in blocks])
                figures[f"two_writers_{how}_events_per_s"] = round(2 * CONTENTION_EVENTS / (time.perf_counter() - start))
        return figures


def _restore_cost(url: str, batches: int = 300) -> dict[str, float]:
    """What every write batch pays to find erased numbers among the phones it locks (app.erasure.restore)."""
    from app.erasure import restore

    engine = make_engine(url, writer=True)
    phones = [[f"+1415900{b % 10:01d}{i:03d}" for i in range(BATCH)] for b in range(batches)]
    with engine.begin() as conn:  # one erased number among them, as a ledger with erasures has
        conn.execute(sa.text("INSERT INTO erasures (phone_key, brand, erased_at) VALUES (:k, 'acme', :now)"),
                     {"k": ledger.phone_key(phones[0][0]), "now": datetime.now(UTC)})
    start = time.perf_counter()
    for batch in phones:
        with engine.begin() as conn:
            restore(conn, batch)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _batch in phones:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
    seconds -= time.perf_counter() - start  # the transaction itself is not restore's
    engine.dispose()
    return {"erasure_lookup_us_per_batch": round(seconds / batches * 1e6, 1)}


def _figures(plain: float, chained: float) -> dict[str, Any]:
    return {"plain_us_per_event": round(plain / EVENTS * 1e6, 1), "chained_us_per_event": round(chained / EVENTS * 1e6, 1),
            "chain_cost_us_per_event": round((chained - plain) / EVENTS * 1e6, 1)}


def run(engines: list[str], folder: Path) -> None:
    """Emit the one JSON line."""
    emit(bench="ledger_chain", events=EVENTS, batch=BATCH,
         **{name: _per_event(name, folder) for name in engines})
