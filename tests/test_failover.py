"""An acknowledged STOP survives losing the PostgreSQL primary, when a standby commits synchronously.

A primary and a streaming standby (initdb, pg_basebackup -R), with `synchronous_standby_names`
set on the primary: a COMMIT returns only once the standby has flushed its WAL. `optline serve`
answers a webhook 200 only after its transaction committed (or after the text is in the local
spool), so every STOP answered 200 is on the standby's disk. The scenario: phones subscribed,
a stream of STOPs, the primary SIGKILLed right after answers of 200, the standby promoted
(pg_ctl promote), `serve` started again: its database URL names both servers and asks for the
one that takes writes (libpq's `target_session_attrs=read-write`), so it finds the promoted standby. Every STOP answered 200 must be there
(its phone unsubscribed, with the consent event) and get exactly one stop reply.

The first `serve` runs with its sender off (as `serve` runs beside `optline worker` processes),
so no reply leaves before the failover: a send in flight when the primary dies is re-sent after
its lease (at-least-once, tests/test_outbox.py), which is not what this test is about. The second
runs the default way, with its in-process sender, and sends every stop reply from the promoted
standby.

Run: OPTLINE_TEST_DATABASE_URL=… pytest tests/test_failover.py (it needs PostgreSQL's server
binaries, as the other private-cluster scenarios do; it never touches the machine's own server).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from app.migrate import upgrade
from tests.fake_twilio import FakeTwilio
from tests.scenario_support import Db, PrivateCluster, Processes, phones, post_text, wait_until

PG_URL = os.environ.get("OPTLINE_TEST_DATABASE_URL")
STOP_REPLY = "ACME: you are unsubscribed from all ACME texts"
PHONES = 60  # subscribed phones, each texting STOP once
KILL_AFTER = 20  # STOPs answered 200 before the primary is killed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture
def clusters() -> Iterator[tuple[PrivateCluster, PrivateCluster]]:
    """A primary and a synchronous standby of it, both private to this test."""
    if not PG_URL:
        pytest.skip("OPTLINE_TEST_DATABASE_URL is not set")
    if os.getuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot run initdb")
    try:
        primary, standby = PrivateCluster(), PrivateCluster()
    except (RuntimeError, KeyError) as exc:
        pytest.skip(f"no private PostgreSQL cluster: {exc}")
    try:
        primary.init()
        primary.start()
        admin = sa.create_engine(primary.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE optline"))
        upgrade(primary.url("optline"))
        # A copy of the primary that streams its WAL (-R: standby.signal and primary_conninfo).
        standby._run(str(standby.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                     "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream", "--no-sync",
                     "--checkpoint=fast")  # a spread checkpoint would wait minutes
        standby.start()
        # Only now that a standby streams: from here on a COMMIT waits for it to flush (`on`).
        with admin.connect() as conn:
            conn.execute(sa.text("ALTER SYSTEM SET synchronous_standby_names = '*'"))
            conn.execute(sa.text("ALTER SYSTEM SET synchronous_commit = 'on'"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))
        wait_until(lambda: _sync_state(admin) == "sync", timeout=30, what="the standby to be synchronous",
                   detail=standby.log_tail)
        admin.dispose()
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()


def _sync_state(admin: sa.Engine) -> str | None:
    with admin.connect() as conn:
        return conn.execute(sa.text("SELECT sync_state FROM pg_stat_replication")).scalar()


def _kill(cluster: PrivateCluster) -> None:
    """SIGKILL every process of the cluster at once: the machine is gone, nothing is flushed or shut down."""
    for pid in cluster.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.running = False


def test_an_acknowledged_stop_survives_a_failover_to_a_synchronous_standby(
    clusters: tuple[PrivateCluster, PrivateCluster], tmp_path: Path
) -> None:
    primary, standby = clusters
    numbers = phones(207, PHONES)
    with FakeTwilio() as fake:
        # One URL naming both servers: libpq connects to whichever accepts writes. The same URL
        # before and after the failover also keeps the spool's records (kept per database URL)
        # applicable: a STOP answered 200 from the spool while no server took writes is applied
        # on the promoted standby.
        url = (f"postgresql+psycopg://postgres@/optline?host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby.port}"
               "&target_session_attrs=read-write")
        processes = Processes(database_url=url, fake=fake, workdir=tmp_path)
        try:
            serve = processes.serve("serve-primary", inprocess_worker=False)
            with httpx.Client() as client:
                for phone in numbers:
                    assert post_text(client, serve.base_url, "JOIN", from_=phone).status_code == 200
                    assert post_text(client, serve.base_url, "YES", from_=phone).status_code == 200

            answered: list[str] = []  # phones whose STOP was answered 200, in answer order
            lock, killed = threading.Lock(), threading.Event()
            enough = threading.Event()
            pending = iter(numbers)

            def stream() -> None:
                with httpx.Client() as client:
                    while not killed.is_set():
                        with lock:
                            phone = next(pending, None)
                        if phone is None:
                            return
                        try:
                            status = post_text(client, serve.base_url, "STOP", from_=phone).status_code
                        except httpx.TransportError:
                            continue
                        if status == 200:
                            with lock:
                                answered.append(phone)
                                if len(answered) >= KILL_AFTER:
                                    enough.set()

            threads = [threading.Thread(target=stream) for _ in range(4)]
            for thread in threads:
                thread.start()
            assert enough.wait(60), "the STOPs were not answered"
            _kill(primary)  # right after answers of 200, with more STOPs in flight
            killed.set()
            for thread in threads:
                thread.join(30)
            # STOPs in flight at the kill were answered after the database's deadline, from the
            # spool (200), or refused: each 200 counts, wherever it was kept.
            processes.close()  # this serve's machine is gone too (its spool directory is kept)

            standby._run(str(standby.bindir / "pg_ctl"), "-D", str(standby.data), "-w", "-t", "30", "promote")
            db = Db(standby.url("optline"))
            try:
                processes.serve("serve-standby", inprocess_worker=True)  # the same URL: it finds the new primary
                stopped = set(answered)
                assert len(stopped) >= KILL_AFTER

                def replied() -> bool:
                    got = {m.to for m in fake.messages() if m.body.startswith(STOP_REPLY)}
                    return stopped <= got

                wait_until(replied, timeout=60, what="a stop reply to every STOP answered 200",
                           detail=processes.logs)
                wait_until(db.outbox_settled, timeout=30, what="the outbox to settle", detail=processes.logs)
                for phone in sorted(stopped):
                    statuses = {r.status for r in db.rows("SELECT status FROM subscriptions WHERE phone = :p", p=phone)}
                    assert statuses == {"unsubscribed"}, (phone, statuses)
                    events = db.scalar("SELECT count(*) FROM consent_events WHERE phone = :p AND event = 'stop'"
                                       " AND to_status = 'unsubscribed'", p=phone)
                    assert events >= 1, phone
                    bodies = [m.body for m in fake.messages(to=phone)]
                    assert bodies == [b for b in bodies if b.startswith(STOP_REPLY)] and len(bodies) == 1, (
                        phone, bodies)
                print(f"{len(stopped)} STOPs answered 200 before and around the kill; all on the promoted standby")
            finally:
                db.close()
        finally:
            processes.close()
            print(processes.logs())
