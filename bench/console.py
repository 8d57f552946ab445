"""`make bench` (`--only console`): each console page's p95 at 1,000,000 subscriptions and 10,000,000
consent events, on SQLite and PostgreSQL (goal: under 300 ms).

Steps, each printed as one JSON line:
1. fill: a new database of each engine gets `--console-subscriptions` subscriptions of acme (70 %
   deals, 30 % news; a mix of statuses and of keyword and API joins) and `--console-events`
   consent events spread over the last 365 days, then what the operations page reads: the texts
   in and stop replies of the last two days' STOPs, a failed text per 100 events over the year
   and a backlog of 3,318 (a tenth held); by plain bulk inserts (COPY on PostgreSQL): the write
   paths are measured elsewhere, this is about reading. The status counts are then recounted
   (app.status_counts: the bulk load went around the writers that keep them);
2. rollup: the analytics rollup catches up with the whole ledger (app.console.rollup), timed;
3. pages: `optline serve` on that database, a console user signed in over HTTP, each page
   requested `--console-requests` times in turn; p50/p95/max per page, the mean CPU time the
   server and its PostgreSQL backends spent on one (from /proc: what a shared machine's load
   does not inflate) and the load average.
The full scale takes a while (the fill dominates: about 35 minutes on SQLite and 17 on PostgreSQL on
2 shared cores); `--console-subscriptions 200000 --console-events 2000000` gives a quick look.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa

from app import status_counts
from app.console import rollup
from app.db import make_engine
from app.keywords import load_rules
from bench.load import REPO, Server, database, emit, free_port, phone_number, unthrottled_keywords

PASSWORD = "bench console password"
EMAIL = "bench@acme.example"
STATUSES = ("subscribed",) * 6 + ("unsubscribed",) * 3 + ("pendingDOI",)
TRANSITIONS = (  # (event, from, to, source, keyword), weighted by repetition
    ("join", "none", "pendingDOI", "sms", "JOIN"), ("confirm", "pendingDOI", "subscribed", "sms", "YES"),
    ("join", "none", "pendingDOI", "sms", "DEALS"), ("confirm", "pendingDOI", "subscribed", "sms", "Y"),
    ("api_opt_in", "none", "subscribed", "api", None), ("stop", "subscribed", "unsubscribed", "sms", "STOP"),
    ("join", "unsubscribed", "pendingDOI", "sms", "JOIN"), ("doi_expired", "pendingDOI", "none", "system", None),
    ("stop", "subscribed", "unsubscribed", "sms", "STOP"), ("join", "none", "pendingDOI", "sms", "JOIN"),
)
EVENT_COLUMNS = ("subscription_id", "brand", "program", "phone", "event", "from_status", "to_status", "source",
                 "keyword", "provider_message_id", "raw_text", "consent_source", "created_at")
SUB_COLUMNS = ("id", "brand", "program", "phone", "status", "keyword", "consent_source", "joined_at",
               "subscribed_at", "unsubscribed_at", "created_at", "updated_at")
CHUNK = 50_000


def _program(n: int) -> str:
    return "deals" if n % 10 < 7 else "news"


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _subscriptions(start: int, stop: int, now: datetime, rng: random.Random) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(start, stop):
        joined = now - timedelta(seconds=rng.randrange(365 * 86400))
        status = STATUSES[n % len(STATUSES)]
        api = n % 5 == 0
        rows.append((f"sub_B{n:012d}", "acme", _program(n), phone_number(n), status,
                     None if api else ("JOIN" if n % 3 else "YES"), "web-checkout" if api else None, _ts(joined),
                     _ts(joined) if status != "pendingDOI" else None,
                     _ts(joined + timedelta(days=3)) if status == "unsubscribed" else None, _ts(joined), _ts(joined)))
    return rows


def _events(start: int, stop: int, subscriptions: int, now: datetime, rng: random.Random) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(start, stop):
        sub = rng.randrange(subscriptions)
        event, before, after, source, keyword = TRANSITIONS[n % len(TRANSITIONS)]
        at = now - timedelta(seconds=rng.randrange(365 * 86400))
        rows.append((f"sub_B{sub:012d}", "acme", _program(sub), phone_number(sub), event, before, after, source,
                     keyword, f"SMbench{n:024d}" if source == "sms" else None, keyword,
                     "web-checkout" if source == "api" else None, _ts(at)))
    return rows


def _insert(engine: sa.Engine, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    names = ", ".join(f'"{c}"' for c in columns)  # quoted: inbound_messages has a column "to"
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    with engine.begin() as conn:
        conn.connection.driver_connection.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)


INBOUND_COLUMNS = ("id", "provider", "message_id", "from_phone", "from_address", "channel", "to", "body", "num_media",
                   "brand", "program", "kind", "keyword", "flagged", "received_at")
OUTBOX_COLUMNS = ("channel", "brand", "program", "phone", "from_number", "body", "purpose", "priority", "status",
                  "attempts", "next_attempt_at", "error_code", "error_reason", "inbound_id", "created_at", "updated_at",
                  "sent_at", "held_until", "held_reason")
SENDER = "+15005550006"
ERRORS = ((30003, "Unreachable destination handset"), (30005, "Unknown destination handset"),
          (30006, "Landline or unreachable carrier"), (30007, "Carrier violation"), (21610, "Attempt to send to unsubscribed recipient"))
BACKLOG = 3318  # the replies pending that issue #19 found invisible


def _operations(engine: sa.Engine, *, events: int, now: datetime, rng: random.Random) -> int:
    """What the operations page reads, in proportion to the ledger: each STOP of the last two days with its
    text in and its stop reply; a failed text for every 100 consent events over the year; a backlog with
    some of it held. How many outbox rows."""
    with engine.connect() as conn:
        stops = conn.execute(sa.text(
            "SELECT phone, provider_message_id, program, created_at FROM consent_events WHERE brand = 'acme'"
            " AND created_at >= :since AND event = 'stop' ORDER BY created_at"),
            {"since": _ts(now - timedelta(days=2))}).all()
    inbound, outbox = [], []
    for n, (phone, message_id, program, at) in enumerate(stops, start=1):
        at = at if isinstance(at, datetime) else datetime.fromisoformat(at)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        got = at - timedelta(milliseconds=rng.randrange(20, 3000))
        inbound.append((n, "twilio", message_id, phone, phone, "sms", SENDER, "STOP", 0, "acme", program, "stop",
                        "STOP", False, _ts(got)))
        sent = at + timedelta(milliseconds=rng.randrange(150, 20000))
        outbox.append(("sms", "acme", program, phone, SENDER, "You are unsubscribed.", "stop", 0, "delivered", 1,
                       None, None, None, n, _ts(at), _ts(sent), _ts(sent), None, None))
    for n in range(events // 100):
        at = now - timedelta(seconds=rng.randrange(365 * 86400))
        code, reason = ERRORS[n % len(ERRORS)]
        outbox.append(("sms", "acme", _program(n), phone_number(n), SENDER, "Your code", "prompt", 2,
                       "undelivered" if n % 3 else "failed", 1, None, code, reason, None, _ts(at), _ts(at), _ts(at),
                       None, None))
    for n in range(BACKLOG):
        held = n % 10 == 0
        due = now + timedelta(hours=8) if held else now - timedelta(seconds=n)
        outbox.append(("sms", "acme", _program(n), phone_number(n), SENDER, "Welcome", "welcome", 1, "pending", 0,
                       _ts(due), None, None, None, _ts(now - timedelta(seconds=n + 5)), _ts(now), None,
                       _ts(due) if held else None, "quiet_hours" if held else None))
    for start in range(0, len(inbound), CHUNK):
        _insert(engine, "inbound_messages", INBOUND_COLUMNS, inbound[start:start + CHUNK])
    if engine.dialect.name == "postgresql" and inbound:  # the ids were given: move the sequence past them
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('inbound_messages', 'id'), :n)"),
                         {"n": len(inbound)})
    for start in range(0, len(outbox), CHUNK):
        _insert(engine, "outbox", OUTBOX_COLUMNS, outbox[start:start + CHUNK])
    return len(outbox)


def fill(url: str, *, subscriptions: int, events: int) -> None:
    """Bulk-load the subscriptions, the ledger and the outbox; print how long each took."""
    engine = make_engine(url)
    now, rng = datetime.now(UTC), random.Random(20261207)
    started = time.perf_counter()
    for start in range(0, subscriptions, CHUNK):
        _insert(engine, "subscriptions", SUB_COLUMNS, _subscriptions(start, min(subscriptions, start + CHUNK), now, rng))
    loaded = time.perf_counter()
    for start in range(0, events, CHUNK):
        _insert(engine, "consent_events", EVENT_COLUMNS, _events(start, min(events, start + CHUNK), subscriptions,
                                                                 now, rng))
    ledger = time.perf_counter()
    texts = _operations(engine, events=events, now=now, rng=rng)
    with engine.begin() as conn:  # the rows went in around app.status_counts.add: count them once
        status_counts.recount(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    emit(figure="console_fill", engine=engine.dialect.name, subscriptions=subscriptions, events=events,
         outbox=texts, subscriptions_s=round(loaded - started, 1), events_s=round(ledger - loaded, 1),
         outbox_s=round(time.perf_counter() - ledger, 1))
    engine.dispose()


def roll_up(url: str, engine_name: str, events: int) -> None:
    """Count the whole ledger into consent_rollup, as the serve processes would, and time it."""
    engine = make_engine(url, writer=True)
    zones = rollup.zones_of(load_rules(REPO / "keywords.yaml"))  # the days `optline serve` would keep
    later = datetime.now(UTC) + rollup.SETTLE + timedelta(seconds=1)
    started = time.perf_counter()
    with engine.begin() as conn:
        rollup.catch_up(conn, datetime.now(UTC), zones=zones)  # notes the newest id
    counted = 0
    while True:
        with engine.begin() as conn:
            done = rollup.catch_up(conn, later, zones=zones)
        counted += done
        if done < rollup.SPAN:
            break
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM consent_rollup")).scalar()
    emit(figure="console_rollup", engine=engine_name, events=counted, rollup_rows=rows, seconds=round(seconds, 1),
         events_per_s=round(counted / seconds) if seconds else None)
    engine.dispose()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token"
    return found.group(1)


def pages(subscriptions: int) -> dict[str, str]:
    """Every console page, as a person opens it (the heaviest choice where there is one)."""
    phone = phone_number(7).replace("+", "%2B")
    deep = phone_number(subscriptions // 2)
    return {
        "programs": "/console/programs",
        "subscribers": "/console/programs/deals",
        "subscribers_status": "/console/programs/deals?status=pendingDOI",
        "subscribers_deep": f"/console/programs/deals?after={deep.replace('+', '%2B')}",
        "subscribers_search": "/console/programs/deals?number=1415250",
        "subscribers_joined": "/console/programs/news?joined_since=2026-06-01&joined_until=2026-06-30",
        "phone": f"/console/phones/{phone}",
        "ledger": "/console/ledger",
        "ledger_filtered": "/console/ledger?event=stop&program=news",
        "analytics_30_days": "/console/analytics",
        "analytics_year_weekly": f"/console/analytics?by=week&from={(datetime.now(UTC) - timedelta(days=364)).date()}",
        "operations": "/console/operations",
        "flagged": "/console/flagged",
        "keywords": "/console/keywords",
        "playground": "/console/playground",
        "account": "/console/account",
        "keys": "/console/keys",
    }


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes have used so far, from /proc (0 for one that is gone)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _backends(url: str) -> list[int]:
    """The PostgreSQL server processes serving connections to this database (none on SQLite)."""
    if not url.startswith("postgresql"):
        return []
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [int(p) for p in conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalars()]
    finally:
        engine.dispose()


def measure(url: str, engine_name: str, folder: Path, *, subscriptions: int, requests: int) -> None:
    """`optline serve` on the filled database; each page's p50/p95/max over `requests` rounds."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OPTLINE_DATABASE_URL": url, "OPTLINE_PUBLIC_URL": base,
           "OPTLINE_PROVIDER": "console", "OPTLINE_LOG_LEVEL": "WARNING",
           "OPTLINE_KEYWORDS": str(unthrottled_keywords(folder)), "OPTLINE_SECRET_KEY": "bench-console-" + "k" * 32}
    subprocess.run([sys.executable, "-m", "app.cli", "users", "create", "--brand", "acme", "--email", EMAIL,
                    "--role", "owner", "--password-stdin"], input=PASSWORD + "\n", env=env, check=True,
                   capture_output=True, text=True)
    server = Server([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                    ready_url=f"{base}/readyz", log=folder / f"console-{engine_name}.log")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            token = _csrf(client.get("/console/login").text)
            signed = client.post("/console/login", data={"csrf": token, "email": EMAIL, "password": PASSWORD})
            assert signed.status_code in (200, 303), signed.text[:300]
            paths = pages(subscriptions)
            times: dict[str, list[float]] = {name: [] for name in paths}
            cpu = dict.fromkeys(paths, 0.0)
            for name, path in paths.items():  # once each first: caches warm, every page answers
                response = client.get(path)
                assert response.status_code == 200, (name, response.status_code, response.text[:300])
            for _ in range(requests):
                # The machine may be shared: beside the time each request took, the CPU the server
                # (and its PostgreSQL backends) spent on it, which others' load does not inflate.
                pids = [server.proc.pid, *_backends(url)]
                for name, path in paths.items():
                    used, started = _cpu_seconds(pids), time.perf_counter()
                    response = client.get(path)
                    times[name].append(time.perf_counter() - started)
                    cpu[name] += _cpu_seconds(pids) - used
            load = os.getloadavg()[0]
            for name, values in times.items():
                ordered = sorted(values)
                p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
                emit(figure="console_page", engine=engine_name, page=name, subscriptions=subscriptions,
                     p50_ms=round(statistics.median(values) * 1000, 1), p95_ms=round(p95 * 1000, 1),
                     max_ms=round(ordered[-1] * 1000, 1), cpu_ms_mean=round(cpu[name] / requests * 1000, 1),
                     load_1m=round(load, 2), under_300ms=p95 < 0.3)
    finally:
        server.stop()


def run(args: Any, folder: Path) -> None:
    """The whole console figure, for each engine asked."""
    for engine_name in args.engines:
        with database(engine_name, folder, "console") as url:
            if url is None:
                continue
            subprocess.run([sys.executable, "-m", "app.cli", "migrate"], check=True, capture_output=True,
                           env={**os.environ, "OPTLINE_DATABASE_URL": url})
            fill(url, subscriptions=args.console_subscriptions, events=args.console_events)
            roll_up(url, engine_name, args.console_events)
            measure(url, engine_name, folder, subscriptions=args.console_subscriptions,
                    requests=args.console_requests)


__all__ = ["fill", "measure", "roll_up", "run"]
