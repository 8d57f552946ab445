"""The production path, proven with real processes: `optline serve` and `optline worker` on PostgreSQL.

Each scenario starts real processes (`python -m app.cli …`) on 127.0.0.1 against a fresh
PostgreSQL database and the in-process FakeTwilio, texts them the way Twilio does (signed
form posts), kills or stops things the way production does (SIGKILL, SIGTERM, PostgreSQL
going away) and then checks the database and what the fake received. Every wait is bounded;
every process is SIGKILLed at teardown, also when the test fails (its log is printed then).

Run: OPTLINE_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test pytest tests/test_scenarios.py
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from app.migrate import upgrade

from tests.conftest import KEYWORDS, Gateway
from tests.fake_twilio import FakeTwilio
from tests.scenario_support import (
    Db,
    PrivateCluster,
    Proc,
    Processes,
    free_port,
    fresh_database,
    phones,
    post_text,
    wait_ready,
    wait_until,
)

PG_URL = os.environ.get("OPTLINE_TEST_DATABASE_URL")
MESSAGES_PATH_SUFFIX = "/Messages.json"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated database on the server of OPTLINE_TEST_DATABASE_URL, for this test only."""
    if not PG_URL:
        pytest.skip("OPTLINE_TEST_DATABASE_URL is not set")
    with fresh_database(PG_URL) as url:
        yield url


@pytest.fixture
def db(pg_url: str) -> Iterator[Db]:
    db = Db(pg_url)
    yield db
    db.close()


@pytest.fixture
def procs(pg_url: str, fake: FakeTwilio, tmp_path: Path) -> Iterator[Processes]:
    """Starts optline processes; all SIGKILLed at teardown (before the fake and the database go)."""
    processes = Processes(database_url=pg_url, fake=fake, workdir=tmp_path)
    try:
        yield processes
    finally:
        processes.close()
        print(processes.logs())  # shown by pytest when the test failed


def sends(fake: FakeTwilio) -> list[str]:
    """The `To` of every message-create request the fake received, answered or not, in order."""
    return [r.form.get("To", "") for r in fake.requests if r.path.endswith(MESSAGES_PATH_SUFFIX)]


def post_all(servers: list[Proc], numbers: list[str], body: str, *, threads: int = 16) -> Counter[int]:
    """Post one signed `body` from each number, spread over `servers` and `threads`; returns the status counts."""
    chunks = [numbers[i::threads] for i in range(threads)]

    def run(index: int) -> list[int]:
        with httpx.Client() as client:
            return [post_text(client, servers[(index + n) % len(servers)].base_url, body, from_=phone).status_code
                    for n, phone in enumerate(chunks[index])]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return Counter(code for codes in pool.map(run, range(threads)) for code in codes)


def worker_pid(claimed_by: str | None) -> int | None:
    """The pid in an outbox `claimed_by` (host:pid:sender)."""
    parts = (claimed_by or "").split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


# --- 1. many processes, exactly once ----------------------------------------------------


def test_two_servers_and_two_workers_send_every_prompt_exactly_once(
    procs: Processes, fake: FakeTwilio, db: Db
) -> None:
    """Two serve + two worker processes on one PostgreSQL act as one: each JOIN gets one prompt."""
    servers = [procs.serve(f"serve-{i}", inprocess_worker=False, wait=False) for i in range(2)]
    workers = [procs.worker(f"worker-{i}") for i in range(2)]
    for server in servers:
        wait_ready(server)
    numbers = phones(201, 300)

    started = time.monotonic()
    statuses = post_all(servers, numbers, "JOIN")
    posted = time.monotonic() - started

    assert statuses == Counter({200: len(numbers)})
    wait_until(lambda: len(fake.messages()) >= len(numbers), timeout=40, what="one prompt per phone",
               detail=lambda: f"{len(fake.messages())} sent; outbox {db.outbox_by_status()}\n{procs.logs()}")
    print(f"{len(numbers)} JOINs posted in {posted:.1f}s, all prompts sent after {time.monotonic() - started:.1f}s")
    wait_until(db.outbox_settled, timeout=10, what="the outbox to settle", detail=lambda: str(db.outbox_by_status()))
    time.sleep(0.5)  # a double send would be in flight now: give it time to land

    per_phone = Counter(m.to for m in fake.messages())
    assert per_phone == Counter({phone: 1 for phone in numbers}), {p: n for p, n in per_phone.items() if n != 1}
    assert Counter(sends(fake)) == per_phone  # not even a second attempt reached the fake
    rows = db.rows("SELECT status, purpose, provider_message_id, claimed_by FROM outbox WHERE channel = 'sms'")
    assert len(rows) == len(numbers)
    assert {(r.status, r.purpose) for r in rows} == {("queued", "doi_prompt")}
    assert {r.provider_message_id for r in rows} == {m.sid for m in fake.messages()}
    # Only the workers sent (the servers run with OPTLINE_INPROCESS_WORKER=0).
    by_worker = Counter(worker_pid(r.claimed_by) for r in rows)
    assert set(by_worker) <= {w.pid for w in workers}, by_worker
    print(f"sends per worker: {sorted(by_worker.values())}")


def test_two_workers_share_one_senders_rate(procs: Processes, fake: FakeTwilio, db: Db, tmp_path: Path) -> None:
    """Two worker processes on one PostgreSQL send from a `rate: 10` long code no faster than 10 a second together."""
    keywords = tmp_path / "keywords.yaml"
    keywords.write_text(KEYWORDS.read_text().replace('senders: ["+15005550006"]',
                                                     'senders: [{id: "+15005550006", rate: 10}]'))
    procs.extra_env["OPTLINE_KEYWORDS"] = str(keywords)
    server = procs.serve("serve", inprocess_worker=False)
    workers = [procs.worker(f"worker-{i}") for i in range(2)]
    numbers = phones(207, 30)
    assert post_all([server], numbers, "JOIN") == Counter({200: len(numbers)})
    wait_until(lambda: len(fake.messages()) >= len(numbers), timeout=30, what="one prompt per phone",
               detail=lambda: f"{len(fake.messages())} sent; outbox {db.outbox_by_status()}\n{procs.logs()}")
    times = sorted(m.received_at for m in fake.messages())
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    print(f"30 prompts at rate 10 from two workers: {times[-1] - times[0]:.2f}s, busiest second {busiest}")
    assert busiest <= 11  # the rate, and the one text an idle sender may send at once
    assert times[-1] - times[0] >= 2.5
    by_worker = Counter(worker_pid(r.claimed_by) for r in db.rows("SELECT claimed_by FROM outbox"))
    assert set(by_worker) == {w.pid for w in workers}, by_worker  # both sent: the limit held across them


# --- 2. a worker killed mid-batch -------------------------------------------------------


def test_rows_of_a_worker_killed_mid_batch_are_sent_by_another_after_the_lease(
    procs: Processes, fake: FakeTwilio, db: Db
) -> None:
    """SIGKILL a worker with sends in flight: its claimed rows are taken over once their lease expires.

    Delivery is at least once, not exactly once, across a crash: a request that reached
    Twilio before the kill created a message there (the fake, like the API, creates it even
    when the client is gone), but the dead worker never recorded it, so the next worker
    sends it again. What is guaranteed, and checked: every phone gets a prompt; a row whose
    request had not reached the fake when the worker died is sent exactly once; and the
    take-over waits for the lease (never two live senders on one row).
    """
    fake.delay(2.0, times=None)  # every send takes 2 s: the kill lands while they are in flight
    server = procs.serve("serve", inprocess_worker=False)
    numbers = phones(202, 10)
    assert post_all([server], numbers, "JOIN", threads=4) == Counter({200: len(numbers)})
    slots = 6  # worker-a claims 6 rows in one go; the other 4 wait in 'pending'
    first = procs.worker("worker-a", OPTLINE_SEND_CONCURRENCY=str(slots))

    def claimed_by_first() -> list[str]:
        rows = db.rows("SELECT phone, claimed_by FROM outbox WHERE status IN ('sending', 'dispatching')")
        return [r.phone for r in rows if worker_pid(r.claimed_by) == first.pid]

    wait_until(lambda: len(claimed_by_first()) == slots and len(sends(fake)) >= slots, timeout=20,
               what=f"worker-a to have {slots} sends in flight", detail=procs.logs)
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(0.3)  # a request the dead worker had already written reaches the fake now or never
    killed_at = time.time()
    reached = set(sends(fake))
    sending = db.rows("SELECT phone, lease_until, claimed_by FROM outbox WHERE status IN ('sending', 'dispatching')")
    leases = {r.phone: r.lease_until for r in sending if worker_pid(r.claimed_by) == first.pid}
    assert len(leases) == slots and db.scalar("SELECT count(*) FROM outbox WHERE status = 'queued'") == 0
    not_reached = set(numbers) - reached
    assert not_reached, "some rows must still have been waiting when the worker died"

    second = procs.worker("worker-b")
    wait_until(db.outbox_settled, timeout=40, what="worker-b to send every row",
               detail=lambda: f"{db.outbox_by_status()}\n{procs.logs()}")
    wait_until(lambda: len(fake.messages()) >= len(numbers) + len(reached), timeout=10,
               what="the dead worker's requests to complete at the fake")

    per_phone = Counter(m.to for m in fake.messages())
    assert set(per_phone) == set(numbers)  # nobody lost
    assert {p: per_phone[p] for p in not_reached} == {p: 1 for p in not_reached}  # sent once, by worker-b
    assert all(per_phone[p] <= 2 for p in reached)  # at most the dead worker's copy and worker-b's
    rows = db.rows("SELECT phone, status, claimed_by FROM outbox WHERE channel = 'sms'")
    assert {(r.status, worker_pid(r.claimed_by)) for r in rows} == {("queued", second.pid)}
    # worker-b only took a dead worker's row once that row's lease had run out.
    for request in fake.requests:
        phone = request.form.get("To")
        if request.received_at > killed_at and phone in leases:
            assert request.received_at >= leases[phone].timestamp() - 0.05, (phone, request.received_at, leases[phone])


# --- 3. killed between commit and send --------------------------------------------------


def test_a_stop_reply_committed_before_a_crash_goes_out_once_after_restart(
    procs: Processes, fake: FakeTwilio, db: Db
) -> None:
    """The STOP is answered 200 (reply in the outbox), the process dies before sending: the restart sends it once."""
    fake.fail_http(503, times=None)  # Twilio down: every reply stays in the outbox, retrying
    server = procs.serve("serve", inprocess_worker=True)
    phone = phones(203, 1)[0]
    with httpx.Client() as client:
        assert post_text(client, server.base_url, "JOIN", from_=phone).status_code == 200
        assert post_text(client, server.base_url, "STOP", from_=phone).status_code == 200
    stop_row = wait_until(lambda: db.rows("SELECT id, body FROM outbox WHERE purpose = 'stop' AND attempts >= 1"),
                          timeout=10, what="a first (failed) send of the stop")[0]
    wait_until(lambda: stop_row.body in [r.form.get("Body") for r in fake.requests], timeout=5,
               what="the stop reply's refused request at the fake")

    server.signal(signal.SIGKILL)
    server.wait(timeout=10)
    assert fake.messages(to=phone) == []
    fake.clear_rules()
    procs.serve("serve-again", inprocess_worker=True)

    wait_until(lambda: fake.messages(to=phone), timeout=20, what="the stop reply after the restart",
               detail=lambda: f"{db.outbox_by_status()}\n{procs.logs()}")
    wait_until(db.outbox_settled, timeout=10, what="the outbox to settle", detail=lambda: str(db.outbox_by_status()))
    time.sleep(1.0)  # a second copy would be retried within the 1 s retry cap: let it show
    sent = fake.messages(to=phone)
    assert [m.body for m in sent] == [stop_row.body]
    rows = {r.purpose: r for r in db.rows("SELECT purpose, status, provider_message_id FROM outbox WHERE phone = :p",
                                          p=phone)}
    assert rows["stop"].status == "queued" and rows["stop"].provider_message_id == sent[0].sid
    assert rows["doi_prompt"].status == "cancelled"  # the STOP cancelled the prompt still queued


# --- 4. PostgreSQL stopped and started during load --------------------------------------


@dataclass
class Attempt:
    """One webhook post: which text, when, how long it took, and what came back."""

    sid: str
    phone: str
    started: float  # time.monotonic()
    seconds: float
    outcome: int | str  # the HTTP status, or the transport error's name


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of this test's own, so stopping it touches nothing else."""
    if not PG_URL:
        pytest.skip("OPTLINE_TEST_DATABASE_URL is not set")
    if os.getuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot run initdb")
    try:
        cluster = PrivateCluster()
    except (RuntimeError, KeyError) as exc:
        pytest.skip(f"no private PostgreSQL cluster: {exc}")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def on_private_pg(private_pg: PrivateCluster, fake: FakeTwilio, tmp_path: Path) -> Iterator[tuple[Processes, Db]]:
    """A migrated database on the private cluster, with processes and a Db on it (killed/closed at teardown)."""
    admin = sa.create_engine(private_pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE optline"))
    admin.dispose()
    url = private_pg.url("optline")
    upgrade(url)
    processes, db = Processes(database_url=url, fake=fake, workdir=tmp_path), Db(url)
    try:
        yield processes, db
    finally:
        processes.close()
        print(processes.logs())
        db.close()


HANG_SECONDS = 5.0  # "a few seconds": Twilio gives a webhook 15 s, a 503 should come well before
OUTAGE_SECONDS = 3.0


def test_postgresql_stopped_under_a_stream_of_stops_loses_none(
    private_pg: PrivateCluster, on_private_pg: tuple[Processes, Db], fake: FakeTwilio
) -> None:
    """Stop PostgreSQL for ~3 s under a stream of STOPs: every one answered 200 (spooled meanwhile), none lost.

    Then every phone is unsubscribed, got exactly one stop reply, and nothing else after its 200.
    """
    processes, db = on_private_pg
    server = processes.serve("serve", inprocess_worker=True)
    numbers = phones(204, 150)
    with httpx.Client() as client:
        for phone in numbers:  # each phone has joined (its prompt goes out before the stream starts)
            assert post_text(client, server.base_url, "JOIN", from_=phone).status_code == 200
    wait_until(lambda: len(fake.messages()) >= len(numbers), timeout=30, what="every prompt")
    attempts: list[Attempt] = []
    answered_at: dict[str, float] = {}  # phone -> time.time() of its STOP's 200
    queue_ = iter(numbers)
    lock = threading.Lock()

    def stream() -> None:
        with httpx.Client() as client:
            while True:
                with lock:
                    phone = next(queue_, None)
                if phone is None:
                    return
                started = time.monotonic()
                try:
                    outcome: int | str = post_text(client, server.base_url, "STOP", from_=phone,
                                                   timeout=2 * HANG_SECONDS).status_code
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                attempts.append(Attempt(phone, phone, started, time.monotonic() - started, outcome))
                if outcome == 200:
                    answered_at[phone] = time.time()
                time.sleep(0.02)

    threads = [threading.Thread(target=stream, name=f"stopper-{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        down_at = time.monotonic()
        private_pg.stop("fast")
        time.sleep(OUTAGE_SECONDS)
        private_pg.start()
        up_at = time.monotonic()
    finally:
        for thread in threads:
            thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    outcomes = Counter(a.outcome for a in attempts)
    during = Counter(a.outcome for a in attempts if down_at <= a.started <= up_at)
    slowest = max(attempts, key=lambda a: a.seconds)
    assert outcomes == {200: len(numbers)}, f"outcomes {outcomes}; during the outage {during}\n{processes.logs()}"
    assert during[200] > 0, "the outage did not overlap the stream"
    assert slowest.seconds < HANG_SECONDS, f"a webhook took {slowest.seconds:.1f}s ({slowest})"

    def all_unsubscribed() -> bool:
        rows = db.rows("SELECT phone, status FROM subscriptions WHERE program = 'deals'")
        return len(rows) == len(numbers) and {r.status for r in rows} == {"unsubscribed"}

    wait_until(all_unsubscribed, timeout=60, what="every STOP applied",
               detail=lambda: f"{db.rows('SELECT status, count(*) FROM subscriptions GROUP BY 1')}\n{processes.logs()}")
    wait_until(db.outbox_settled, timeout=60, what="the outbox to settle", detail=lambda: str(db.outbox_by_status()))
    lost = missing = doubled = after = 0
    for phone in numbers:
        to_phone = fake.messages(to=phone)
        stop_replies = [m for m in to_phone if m.body.startswith("ACME: you are unsubscribed")]
        missing += not stop_replies
        doubled += len(stop_replies) > 1
        after += sum(1 for m in to_phone if m not in stop_replies and m.received_at > answered_at[phone])
    lost = len(numbers) - len(db.rows("SELECT 1 FROM inbound_messages WHERE kind = 'stop'"))
    print(f"PostgreSQL stopped {OUTAGE_SECONDS:.0f} s under {len(numbers)} STOPs: answered 200 {outcomes[200]} "
          f"({during[200]} during the outage), lost {lost}, stop replies missing {missing}, doubled {doubled}, "
          f"other texts after the STOP {after}; slowest answer {slowest.seconds:.2f} s")
    assert (lost, missing, doubled, after) == (0, 0, 0, 0)


def test_a_hung_postgresql_spools_the_text_and_answers_200_in_time(
    private_pg: PrivateCluster, on_private_pg: tuple[Processes, Db], fake: FakeTwilio
) -> None:
    """PostgreSQL stops answering without closing anything (SIGSTOP): the STOP is spooled, answered 200 within
    the deadline, and applied once PostgreSQL is back."""
    processes, db = on_private_pg
    server = processes.serve("serve", inprocess_worker=True)
    first, second = phones(207, 2)
    with httpx.Client() as client:
        assert post_text(client, server.base_url, "JOIN", from_=first).status_code == 200
        assert post_text(client, server.base_url, "JOIN", from_=second).status_code == 200
        wait_until(lambda: len(fake.messages()) >= 2, timeout=15, what="both prompts")
        with private_pg.frozen():
            started = time.monotonic()
            try:
                status: int | str = post_text(client, server.base_url, "STOP", from_=second,
                                              timeout=HANG_SECONDS + 3).status_code  # the deadline is 4 s
            except httpx.TimeoutException:
                status = f"no answer within {HANG_SECONDS + 3}s"
            took = time.monotonic() - started
            healthz = client.get(server.base_url + "/healthz", timeout=2).status_code
    assert status == 200 and took < HANG_SECONDS + 1, (status, took)
    assert healthz == 200
    wait_until(lambda: db.scalar("SELECT status FROM subscriptions WHERE phone = :p", p=second) == "unsubscribed",
               timeout=60, what="the spooled STOP applied", detail=processes.logs)
    wait_until(lambda: any(m.body.startswith("ACME: you are unsubscribed") for m in fake.messages(to=second)),
               timeout=30, what="the stop reply")


def test_a_database_blip_at_the_send_decision_does_not_lose_the_reply(
    gateway_factory: Callable[..., Gateway], pg_url: str
) -> None:
    """The send decision (dispatch) cannot reach the database: nothing is sent, and the row stays retryable."""
    from app.db import Writer, make_engine
    from app.outbox.queue import claim

    gateway = gateway_factory(pg_url, inprocess_worker=False)
    phone = phones(206, 1)[0]
    assert gateway.text("JOIN", from_=phone).status_code == 200
    sender = gateway.state.sender
    [row] = gateway.state.writer.call(lambda conn, now: claim(conn, now, worker=sender.worker_id, limit=5,
                                                              lease=sender.lease))
    live = sender.writer
    # The decision's connection fails the way a PostgreSQL restart makes it fail (connection refused).
    dead = Writer(make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"), deadline=3.0)
    sender.writer = dead
    try:
        async def deliver() -> None:
            dead.start()
            await sender._deliver(row)
            await sender.recorded()  # the failure is recorded in the background (here: it cannot be)

        asyncio.run(deliver())
    finally:
        dead.stop()
        dead.engine.dispose()
        sender.writer = live
    assert gateway.fake.requests == []  # nothing was sent...
    [(status, reason)] = gateway.query("SELECT status, error_reason FROM outbox WHERE phone = :p", p=phone)
    assert status in ("pending", "sending"), reason  # ...so the row stays retryable (now, or after its lease)


# --- 5. graceful shutdown ---------------------------------------------------------------


def test_sigterm_lets_the_send_in_flight_finish_and_be_recorded(procs: Processes, fake: FakeTwilio, db: Db) -> None:
    """SIGTERM while a reply is being sent: the process waits for Twilio's answer and records it, then exits."""
    fake.delay(1.5, times=None)
    server = procs.serve("serve", inprocess_worker=True)
    phone = phones(205, 1)[0]
    with httpx.Client() as client:
        assert post_text(client, server.base_url, "JOIN", from_=phone).status_code == 200
    # In flight: claimed and decided (dispatching) while the fake holds its answer back.
    wait_until(lambda: db.scalar("SELECT count(*) FROM outbox WHERE status = 'dispatching'"), timeout=10,
               interval=0.01, what="the prompt to be on its way to the provider")

    term_at = time.monotonic()
    server.signal(signal.SIGTERM)
    returncode = server.wait(timeout=30)
    took = time.monotonic() - term_at

    # uvicorn runs the lifespan shutdown (sends in flight), then re-raises SIGTERM as a Unix server should.
    assert returncode in (0, -signal.SIGTERM), server.output()
    sent = fake.messages(to=phone)
    assert len(sent) == 1 and [r.answered for r in fake.requests] == [201]
    row = db.rows("SELECT status, provider_message_id, lease_until FROM outbox WHERE phone = :p", p=phone)
    assert [(r.status, r.provider_message_id, r.lease_until) for r in row] == [("queued", sent[0].sid, None)], took
