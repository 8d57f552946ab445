"""`python -m bench --only default`: one `optline serve` process as `make run` runs it, beside the bare endpoint.

Two cases on each engine, each measured right after a bare-endpoint run of its own (the
machine is shared and noisy: a ratio is only fair between runs taken side by side):

- `default_process`: `optline serve` with its defaults: the in-process sender on, INFO logs,
  the console provider, the repository's keywords.yaml;
- `webhooks_alone`: the same with the sender off (`OPTLINE_INPROCESS_WORKER=0`), as a
  `serve` process runs beside `optline worker` processes.

Each figure carries, besides req/s and p50/p99 (wrk, 16 connections, the mix of
bench.load.mix):
- CPU per text: the server process's CPU (/proc/<pid>/stat, utime + stime, reaped children
  included) from the start of the load until every reply it queued is sent (the default
  case) or the load ends (webhooks alone), over the texts stored; the bare endpoint's CPU per
  request beside it. On PostgreSQL also the database's CPU per text (every process of the
  bench's own cluster, or the backends of the bench's database on a shared server) and the
  machine's (the two summed) over the bare endpoint's: `machine_cpu_ratio`.
- statements per text (pg_stat_statements, BEGIN and COMMIT included) and transactions per
  text (pg_stat_database) on PostgreSQL;
- the load average as each run started (`load1_bare`, `load1`);
- nothing lost or doubled: texts answered 2xx against texts stored (`lost`: answered but not
  stored), replies queued against the replies the stored texts earn (one each for JOIN, YES,
  HELP and STOP, none for the unmatched text), outbox rows per inbound text (`doubled`: more
  than one), and replies still unsent once the sender had time to drain (`unsent`).

PostgreSQL runs in a private cluster started for the bench (initdb, as the scenario tests do)
with pg_stat_statements preloaded, so every database process counted is the bench's own;
without PostgreSQL's server binaries it falls back to the server of OPTLINE_BENCH_DATABASE_URL
(or OPTLINE_TEST_DATABASE_URL), counting only its database's backends, statements unknown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.load import PG_ADMIN, Server, emit, free_port, mix, signed_requests, uvicorn_bare, write_script, wrk
from tests.fake_twilio import AUTH_TOKEN

ACME = "+15005550006"
TICKS = os.sysconf("SC_CLK_TCK")
DRAIN_SECONDS = 120.0  # the longest the default case waits for its sender to send every queued reply
# The replies the mix's texts earn: a prompt, a welcome, a help and a stop reply; the free text none.
REPLY_KINDS = ("join", "confirm", "help", "stop")


# --- CPU from /proc -------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds: its own user + system time and that of its reaped children)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                data = fh.read()
        except OSError:  # it ended meanwhile
            continue
        fields = data[data.rindex(")") + 2:].split()  # from field 3 (state) on: the name may hold spaces
        # utime, stime, cutime, cstime are fields 14-17; the parent pid is field 4.
        table[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / TICKS)
    return table


def tree_cpu(root: int) -> float:
    """CPU seconds spent so far by `root` and every process below it (those that ended: through their parents)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
            todo.extend(children.get(pid, []))
    return total


def pids_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of `pids` still running."""
    table = _proc_table()
    return {pid: table[pid][1] for pid in pids if pid in table}


# --- PostgreSQL: a private cluster, or the shared server --------------------------------------


@dataclass
class Postgres:
    """Where the PostgreSQL cases run, and how their database side is measured."""

    admin_url: str
    postmaster: int | None  # a private cluster: every process under it is ours
    statements: bool  # pg_stat_statements is loaded

    def database(self, name: str) -> str:
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return sa.make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[Postgres | None]:
    """A private cluster with pg_stat_statements when the server binaries are here, else the shared server."""
    from tests.scenario_support import PrivateCluster, _pg_bin

    if _pg_bin() is not None and not os.environ.get("OPTLINE_BENCH_DATABASE_URL"):
        cluster = PrivateCluster()
        try:
            cluster.init()
            # The server's defaults otherwise (fsync and synchronous_commit on): only more
            # connections for the pool, and the statistics module.
            cluster.start("-c max_connections=100 -c shared_preload_libraries=pg_stat_statements"
                          " -c pg_stat_statements.max=20000")
            admin = sa.create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            admin.dispose()
            postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
            yield Postgres(admin_url=cluster.url(), postmaster=postmaster, statements=True)
        finally:
            cluster.destroy()
        return
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        admin.dispose()
    except sa.exc.OperationalError as exc:
        emit(skipped="postgresql (default)", reason=str(exc.orig).splitlines()[0])
        yield None
        return
    yield Postgres(admin_url=PG_ADMIN, postmaster=None, statements=False)


class DbSide:
    """Counters of the database side of one case: CPU, statements, transactions (PostgreSQL only)."""

    def __init__(self, pg: Postgres, url: str):
        self.pg = pg
        self.engine = sa.create_engine(url, pool_size=1, max_overflow=0)
        self.admin = sa.create_engine(pg.admin_url, pool_size=1, max_overflow=0)
        self.name = sa.make_url(url).database

    def snapshot(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            pids = [r[0] for r in conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": self.name})]
            stats = conn.execute(sa.text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"), {"d": self.name}).one()
        calls = commits = None
        if self.pg.statements:
            # pg_stat_statements' view lives in the database the extension was created in (the
            # cluster's `postgres`); the bench's own looks are left out. Unlike pg_stat_database,
            # whose counters an idle backend may report seconds late, it counts at once.
            with self.admin.connect() as conn:
                calls, commits = conn.execute(sa.text(
                    "SELECT coalesce(sum(s.calls), 0), coalesce(sum(s.calls) FILTER (WHERE s.query = 'COMMIT'), 0)"
                    " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    " WHERE d.datname = :d AND s.query NOT ILIKE '%pg_stat%' AND s.query NOT ILIKE '%pg_backend_pid%'"),
                    {"d": self.name}).one()
        return {"cpu": tree_cpu(self.pg.postmaster) if self.pg.postmaster else None,
                "backends": pids_cpu(pids), "xacts": int(commits if commits is not None else stats[0]),
                "calls": None if calls is None else int(calls)}

    @staticmethod
    def cpu(before: dict[str, Any], after: dict[str, Any]) -> float:
        """The database's CPU seconds between two snapshots."""
        if before["cpu"] is not None:
            return float(after["cpu"] - before["cpu"])
        # A shared server: only the backends of this database (a backend that started meanwhile from 0).
        return sum(cpu - before["backends"].get(pid, 0.0) for pid, cpu in after["backends"].items())

    def close(self) -> None:
        self.engine.dispose()
        self.admin.dispose()


# --- one case ---------------------------------------------------------------------------------------


def bare_run(args: argparse.Namespace, folder: Path, tag: str) -> dict[str, Any]:
    """The bare endpoint (one process) under the same mix: req/s, latencies and CPU per request."""
    port = free_port()
    server = uvicorn_bare(port, 1, folder / f"bare-{tag}.log")
    try:
        script = write_script(signed_requests(f"http://127.0.0.1:{port}", mix(args.phones, ACME)), folder, f"bare-{tag}")
        load1 = os.getloadavg()[0]
        cpu = tree_cpu(server.proc.pid)
        got = wrk(f"http://127.0.0.1:{port}", script, connections=args.connections, seconds=args.seconds)
        got["cpu_us"] = (tree_cpu(server.proc.pid) - cpu) / max(1, got["requests"]) * 1e6
        got["load1"] = load1
    finally:
        server.stop()
    return got


def case(args: argparse.Namespace, folder: Path, engine: str, pg: Postgres | None, *, sender: bool) -> None:
    tag = f"{engine}-{'default' if sender else 'alone'}"
    base = bare_run(args, folder, tag)
    db_name = f"optline_bench_{tag.replace('-', '_')}_{os.getpid()}"
    url = pg.database(db_name) if pg is not None else f"sqlite:///{folder / f'{tag}.db'}"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPTLINE_", "TWILIO_"))}
    # Only what `make run` does not set: the database, where the process's files go, and the token
    # the mix is signed with (Twilio's webhooks are refused without it); and the sender, off or on.
    env.update(OPTLINE_DATABASE_URL=url, TWILIO_AUTH_TOKEN=AUTH_TOKEN, OPTLINE_RUN_DIR=str(folder / f"run-{tag}"),
               OPTLINE_SPOOL_DIR=str(folder / f"spool-{tag}"), OPTLINE_PUBLIC_URL=f"http://127.0.0.1:{port}",
               OPTLINE_INPROCESS_WORKER="1" if sender else "0")
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True)
    side = DbSide(pg, url) if pg is not None else None
    server = Server([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                    ready_url=f"http://127.0.0.1:{port}/readyz", log=folder / f"serve-{tag}.log")
    reader = sa.create_engine(url)
    try:
        script = write_script(signed_requests(f"http://127.0.0.1:{port}", mix(args.phones, ACME)), folder, tag)
        load1 = os.getloadavg()[0]
        db0 = side.snapshot() if side else None
        cpu0 = tree_cpu(server.proc.pid)
        got = wrk(f"http://127.0.0.1:{port}", script, connections=args.connections, seconds=args.seconds)
        if sender:
            drained = _drain(reader)
        else:
            time.sleep(0.2)  # the last answers' transactions are committed; nothing else runs
            drained = True
        cpu = tree_cpu(server.proc.pid) - cpu0
        db1 = side.snapshot() if side else None
    finally:
        server.stop()
    counts = _counts(reader)
    waits = _welcome_waits(reader) if sender else []
    reader.dispose()
    if side is not None:
        side.close()
    if pg is not None:
        pg.drop(db_name)
    texts = max(1, counts["stored"])
    answered = got["requests"] - got["non2xx"]
    figure: dict[str, Any] = dict(
        figure="default_process" if sender else "webhooks_alone", engine=engine, sending=sender, logs="INFO",
        connections=args.connections, rps=got["rps"], p50_ms=got["p50_ms"], p99_ms=got["p99_ms"],
        non2xx=got["non2xx"], errors=got["errors"], bare_rps=base["rps"], bare_p50_ms=base["p50_ms"],
        bare_p99_ms=base["p99_ms"], ratio=round(got["rps"] / base["rps"], 3),
        load1_bare=round(base["load1"], 2), load1=round(load1, 2),
        cpu_us_per_text=round(cpu / texts * 1e6, 1), bare_cpu_us_per_request=round(base["cpu_us"], 1),
    )
    if side is not None and db0 is not None and db1 is not None:
        db_cpu = DbSide.cpu(db0, db1)
        machine = (cpu + db_cpu) / texts * 1e6
        figure.update(
            db_cpu_us_per_text=round(db_cpu / texts * 1e6, 1), machine_cpu_us_per_text=round(machine, 1),
            machine_cpu_ratio=round(machine / base["cpu_us"], 2),
            statements_per_text=round((db1["calls"] - db0["calls"]) / texts, 2) if db0["calls"] is not None else None,
            transactions_per_text=round((db1["xacts"] - db0["xacts"]) / texts, 3),
            db_cpu_scope="private cluster" if pg is not None and pg.postmaster else "database backends",
        )
    figure.update(
        answered_2xx=answered, stored=counts["stored"], lost=max(0, answered - counts["stored"]),
        replies_expected=counts["expected"], replies_queued=counts["queued"],
        doubled=counts["doubled"], unsent=counts["unsent"] if sender else None, cancelled=counts["cancelled"],
        drained=drained,
    )
    if sender:
        figure.update(yes_to_welcome_p50_ms=_pct(waits, 0.5), yes_to_welcome_p99_ms=_pct(waits, 0.99))
    emit(**figure)


def _drain(reader: sa.Engine) -> bool:
    """Wait until no reply is queued or in flight (the in-process sender sent them all); False at the deadline."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        with reader.connect() as conn:
            left = conn.execute(sa.text(
                "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'dispatching')")).scalar()
        if not left:
            return True
        time.sleep(0.2)
    return False


def _counts(reader: sa.Engine) -> dict[str, int]:
    with reader.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM inbound_messages")).scalar() or 0
        kinds = ", ".join(f"'{kind}'" for kind in REPLY_KINDS)
        expected = conn.execute(sa.text(f"SELECT count(*) FROM inbound_messages WHERE kind IN ({kinds})")).scalar()
        queued = conn.execute(sa.text("SELECT count(*) FROM outbox WHERE inbound_id IS NOT NULL")).scalar()
        doubled = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT inbound_id FROM outbox WHERE inbound_id IS NOT NULL"
            " GROUP BY inbound_id HAVING count(*) > 1) d")).scalar()
        # Cancelled rows are not unsent: a STOP cancels the prompt or welcome still queued before it.
        unsent = conn.execute(sa.text(
            "SELECT count(*) FROM outbox WHERE channel = 'sms'"
            " AND status IN ('pending', 'sending', 'dispatching', 'failed')")).scalar()
        cancelled = conn.execute(sa.text("SELECT count(*) FROM outbox WHERE status = 'cancelled'")).scalar()
    return {"stored": int(stored), "expected": int(expected or 0), "queued": int(queued or 0),
            "doubled": int(doubled or 0), "unsent": int(unsent or 0), "cancelled": int(cancelled or 0)}


def _welcome_waits(reader: sa.Engine) -> list[float]:
    """Seconds from each YES being received to its welcome being recorded as sent."""
    with reader.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT i.received_at, o.sent_at FROM inbound_messages i JOIN outbox o ON o.inbound_id = i.id"
            " WHERE i.kind = 'confirm' AND o.purpose = 'welcome' AND o.sent_at IS NOT NULL")).all()
    return sorted((_aware(sent) - _aware(received)).total_seconds() for received, sent in rows)


def _aware(value: Any) -> datetime:
    """A timestamp read back from SQLite (text, naive UTC) as an aware datetime."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def run(args: argparse.Namespace, folder: Path) -> None:
    """Both cases on each engine asked for."""
    for engine in args.engines:
        if engine == "sqlite":
            for sender in (True, False):
                case(args, folder, "sqlite", None, sender=sender)
            continue
        with postgres(folder) as pg:
            if pg is None:
                continue
            for sender in (True, False):
                case(args, folder, "postgresql", pg, sender=sender)
