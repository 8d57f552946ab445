"""`python -m bench --only rules`: the send check and opt-out imports at scale, on each engine.

- send check: 1,000,000 subscriptions (500,000 phones in two programs, a tenth opted out
  with their ledger events, a tenth with a profile time zone), then batches of 1,000 random
  (phone, program) checks, measured two ways: the service alone (`app.sendcheck.check` on one
  connection: reading the items as the route does, the queries and the rules) and through HTTP
  (`POST /v1/send-check` on one `optline serve` process: JSON, validation and auth too).
  Figures: checks/s and ms a batch (wall), and CPU ms a batch (the bench's own process for the
  service; the server process's, from /proc, for HTTP), with the load average (`load1`): the
  machine is often shared, and CPU a batch moves less than checks/s with the load.
- opt-out import: 200,000 phones never seen, applied in chunks as the API and CLI apply them
  (`app.suppression`), then the same list again (which changes nothing): rows/s for each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa

from app import sendcheck, suppression
from app.db import make_engine
from app.keywords import load_rules
from app.migrate import upgrade
from app.schemas_rules import plain_send_checks
from bench.load import Server, database, emit, free_port, unthrottled_keywords
from bench.send import cpu_seconds

PHONES = 500_000
PROGRAMS = ("deals", "news")
BATCH = 1000
SECONDS = 5.0
IMPORT_ROWS = 200_000
ZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles")


def phone(i: int) -> str:
    """The i-th seeded phone: US numbers across a few area codes."""
    return f"+1{(212, 305, 512, 415, 646)[i % 5]}{2000000 + i // 5:07d}"


def seed(url: str, now: datetime) -> None:
    """1,000,000 subscriptions of acme, a tenth opted out (with their events), a tenth of phones with a profile zone."""
    engine = make_engine(url)
    subs, events, profiles = [], [], []
    for i in range(PHONES):
        p = phone(i)
        for program in PROGRAMS:
            out = i % 10 == 0
            subs.append((f"sub_{i:09d}{program[0]}", "acme", program, p, "unsubscribed" if out else "subscribed",
                         now - timedelta(days=30), now - timedelta(days=1) if out else None, now, now))
            if out:
                events.append((subs[-1][0], "acme", program, p, "stop", "subscribed", "unsubscribed", "sms",
                               now - timedelta(days=1)))
        if i % 10 == 5:
            profiles.append((f"prof_{i:09d}", "acme", p, ZONES[i % 3], "{}", now, now))
    cols = {
        "subscriptions": "id, brand, program, phone, status, subscribed_at, opted_out_at, created_at, updated_at",
        "consent_events": "subscription_id, brand, program, phone, event, from_status, to_status, source, created_at",
        "profiles": "id, brand, phone, timezone, attributes, created_at, updated_at",
    }
    with engine.begin() as conn:
        dbapi = conn.connection.driver_connection
        cur = dbapi.cursor()  # type: ignore[union-attr]
        if url.startswith("postgresql"):
            cur.execute("SET LOCAL statement_timeout = 0")  # a million rows take longer than the app's 15 s
        for table, rows in (("subscriptions", subs), ("consent_events", events), ("profiles", profiles)):
            if url.startswith("postgresql"):
                with cur.copy(f"COPY {table} ({cols[table]}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in cols[table].split(","))
                # app.sql registered sqlite3's datetime adapter: times are stored as the app stores them.
                cur.executemany(f"INSERT INTO {table} ({cols[table]}) VALUES ({marks})", rows)
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()
    engine.dispose()


def batches(rng: random.Random, count: int) -> list[list[dict[str, str]]]:
    return [[{"phoneNumber": phone(rng.randrange(PHONES)), "program": rng.choice(PROGRAMS)} for _ in range(BATCH)]
            for _ in range(count)]


def service_rate(url: str, keywords: Path, now: datetime) -> dict[str, Any]:
    brand = load_rules(keywords).brands["acme"]
    engine = make_engine(url)
    rng = random.Random(7)
    work = batches(rng, 200)
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    allowed = 0
    with engine.connect() as conn:
        for body in work:
            plain = plain_send_checks({"items": body})  # as the route reads a body (app.web.api_rules)
            assert plain is not None
            items = sendcheck.parse_items(brand, plain, now)
            results = sendcheck.check(conn, now, brand=brand, items=items)
            allowed += sum(r["allowed"] for r in results)
            done += 1
            if time.perf_counter() - started > SECONDS:
                break
        conn.rollback()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.dispose()
    return {"checks_per_s": round(done * BATCH / elapsed), "ms_per_batch": round(elapsed / done * 1000, 1),
            "cpu_ms_per_batch": round(cpu / done * 1000, 1), "batches": done,
            "allowed_share": round(allowed / (done * BATCH), 3), "load1": round(os.getloadavg()[0], 2)}


def http_rate(url: str, keywords: Path, folder: Path) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OPTLINE_DATABASE_URL=url, OPTLINE_PUBLIC_URL=base, OPTLINE_PROVIDER="console",
               OPTLINE_LOG_LEVEL="WARNING", OPTLINE_INPROCESS_WORKER="0", OPTLINE_KEYWORDS=str(keywords))
    key = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--brand", "acme"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    server = Server([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"], env=env,
                    ready_url=f"{base}/readyz", log=folder / f"serve-rules-{port}.log")
    try:
        work = [json.dumps({"items": b}) for b in batches(random.Random(11), 200)]
        done, started, cpu = 0, time.perf_counter(), cpu_seconds(server.proc.pid)
        with httpx.Client(timeout=60) as client:
            for body in work:
                response = client.post(f"{base}/v1/send-check", content=body,
                                       headers={"x-api-key": key, "content-type": "application/json"})
                assert response.status_code == 200, response.text
                done += 1
                if time.perf_counter() - started > SECONDS:
                    break
        elapsed, after = time.perf_counter() - started, cpu_seconds(server.proc.pid)
    finally:
        server.stop()
    server_cpu = round((after - cpu) / done * 1000, 1) if after is not None and cpu is not None else None
    return {"checks_per_s": round(done * BATCH / elapsed), "ms_per_batch": round(elapsed / done * 1000, 1),
            "server_cpu_ms_per_batch": server_cpu, "batches": done, "load1": round(os.getloadavg()[0], 2)}


def import_rate(url: str, keywords: Path) -> list[dict[str, Any]]:
    brand = load_rules(keywords).brands["acme"]
    engine = make_engine(url)
    when = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    data = ("phoneNumber,optedOutAt\n" + "".join(f"+1718{3000000 + i:07d},{when}\n" for i in range(IMPORT_ROWS)))
    out = []
    for attempt in ("first", "again"):
        started = time.perf_counter()
        with engine.begin() as conn:
            batch_id = suppression.start(conn, datetime.now(UTC), brand="acme", origin="cli", api_key_id=None)
        tally = suppression.Tally(batch_id=batch_id)
        reader = suppression.Reader("csv")
        raw = data.encode()

        def records() -> Any:
            for i in range(0, len(raw), 1 << 20):
                yield from reader.feed(raw[i:i + (1 << 20)])
            yield from reader.close()

        for rows in suppression.chunks(brand, tally, records(), datetime.now(UTC)):
            with engine.begin() as conn:
                applied, unchanged = suppression.apply_rows(conn, datetime.now(UTC), brand=brand, rows=rows,
                                                            batch_id=batch_id, api_key_id=None)
            tally.applied += applied
            tally.unchanged += unchanged
        elapsed = time.perf_counter() - started
        out.append({"import": attempt, "rows": tally.rows, "applied": tally.applied, "unchanged": tally.unchanged,
                    "rows_per_s": round(tally.rows / elapsed), "seconds": round(elapsed, 1),
                    "consent_events_per_row": len(brand.programs) if attempt == "first" else 0})
    engine.dispose()
    return out


def run(args: argparse.Namespace, folder: Path) -> None:
    keywords = unthrottled_keywords(folder)
    now = datetime.now(UTC).replace(hour=17, minute=0)  # afternoon in every US zone: the check's full path
    for engine_name in args.engines:
        with database(engine_name, folder, "rules") as url:
            if url is None:
                continue
            upgrade(url)
            started = time.perf_counter()
            seed(url, now)
            emit(bench="rules-seed", engine=engine_name, subscriptions=PHONES * len(PROGRAMS),
                 seconds=round(time.perf_counter() - started, 1))
            emit(bench="send-check", engine=engine_name, via="service", batch=BATCH,
                 subscriptions=PHONES * len(PROGRAMS), **service_rate(url, keywords, now))
            emit(bench="send-check", engine=engine_name, via="http", batch=BATCH, processes=1,
                 subscriptions=PHONES * len(PROGRAMS), **http_rate(url, keywords, folder))
            for figure in import_rate(url, keywords):
                emit(bench="opt-out-import", engine=engine_name, **figure)
