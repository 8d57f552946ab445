"""The Writer: group commit on the event loop (SQLite) or a thread (PostgreSQL), failures isolated per job."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.db import Writer, make_engine

CREATE = "CREATE TABLE IF NOT EXISTS writer_probe (n INTEGER PRIMARY KEY)"


def insert(n: int) -> Any:
    def job(conn: Connection, _now: Any) -> int:
        conn.exec_driver_sql(CREATE)
        conn.execute(sa.text("INSERT INTO writer_probe (n) VALUES (:n)"), {"n": n})
        return n
    return job


def stored(url: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.exec_driver_sql("SELECT n FROM writer_probe ORDER BY n")]
    finally:
        engine.dispose()


@pytest.fixture
def writer(database_url: str) -> Any:
    w = Writer(make_engine(database_url, writer=True))
    drop = "DROP TABLE IF EXISTS writer_probe"
    w.call(lambda conn, _now: conn.exec_driver_sql(drop))
    yield w
    w.stop()
    # The PostgreSQL database is shared by the session: leave it with the migrated schema only.
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(drop)
    engine.dispose()
    w.engine.dispose()


def test_sqlite_batches_run_on_the_loop_and_postgresql_on_a_thread(database_url: str, writer: Writer) -> None:
    ran_on: list[str] = []

    async def main() -> None:
        writer.start()
        await asyncio.gather(*(writer.run(lambda conn, _now: ran_on.append(threading.current_thread().name))
                               for _ in range(20)))

    asyncio.run(main())
    if database_url.startswith("sqlite"):
        assert set(ran_on) == {"MainThread"}
    else:
        assert set(ran_on) == {"optline-writer"}
    assert writer.batches < 20, "jobs that were ready together share a transaction"


class Many:
    """A job whose class has `run_many`: the writer hands consecutive ones to it together."""

    groups: list[list[int]] = []

    def __init__(self, n: int):
        self.n = n

    def __call__(self, conn: Connection, now: Any) -> int:
        return int(insert(self.n)(conn, now))

    @staticmethod
    def run_many(conn: Connection, jobs: list[tuple[Any, Many]]) -> list[int]:
        Many.groups.append([job.n for _now, job in jobs])
        return [job(conn, now) * 10 for now, job in jobs]


def test_consecutive_jobs_with_run_many_go_to_it_together_in_order(database_url: str, writer: Writer) -> None:
    Many.groups = []

    async def main() -> list[Any]:
        writer.start()
        await writer.run(insert(0))  # the table exists before the batch
        jobs: list[Any] = [Many(1), Many(2), insert(3), Many(4), Many(5), Many(6)]
        return await asyncio.gather(*(writer.run(job, locks=["probe"]) for job in jobs))

    results = asyncio.run(main())
    assert results == [10, 20, 3, 40, 50, 60]
    assert Many.groups == [[1, 2], [4, 5, 6]]
    assert stored(writer.engine.url.render_as_string(hide_password=False)) == [0, 1, 2, 3, 4, 5, 6]


def test_a_failing_run_many_group_is_run_again_one_job_at_a_time(database_url: str, writer: Writer) -> None:
    Many.groups = []

    async def main() -> list[Any]:
        writer.start()
        await writer.run(insert(0))
        return await asyncio.gather(*(writer.run(Many(n), locks=["probe"]) for n in (7, 0, 8)),
                                    return_exceptions=True)

    first, duplicate, last = asyncio.run(main())
    assert Many.groups == [[7, 0, 8]]
    # Alone, each job is called as itself (no `* 10`): only the duplicate fails.
    assert (first, last) == (7, 8)
    assert isinstance(duplicate, sa.exc.IntegrityError)
    assert stored(writer.engine.url.render_as_string(hide_password=False)) == [0, 7, 8]


def test_a_failing_job_fails_alone_and_the_rest_of_its_batch_commits(database_url: str, writer: Writer) -> None:
    def boom(conn: Connection, _now: Any) -> None:
        conn.execute(sa.text("INSERT INTO writer_probe (n) VALUES (1)"))  # a duplicate of job 1

    async def main() -> list[Any]:
        writer.start()
        await writer.run(insert(0))
        # Queued together, the three run in this order in one batch.
        return await asyncio.gather(*(writer.run(job, locks=["probe"]) for job in (insert(1), boom, insert(2))),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], sa.exc.IntegrityError)
    assert stored(database_url) == [0, 1, 2]


def test_call_from_another_thread_joins_the_running_loop(database_url: str, writer: Writer) -> None:
    async def main() -> int:
        writer.start()
        return await asyncio.to_thread(writer.call, insert(7))

    assert asyncio.run(main()) == 7
    assert stored(database_url) == [7]


def test_sqlite_waits_for_another_process_off_the_loop(sqlite_url: str) -> None:
    """Two processes on one file: while the other holds the write lock, this loop keeps serving.

    Judged by an event, not by time: while our job waits for the lock, a coroutine handed to the
    loop from another thread must run (a blocked loop would never run it; the test then fails
    after a generous deadline instead of hanging, because a timer lets the lock go).
    """
    ours, theirs = (Writer(make_engine(sqlite_url, writer=True)) for _ in range(2))
    ours.call(insert(0))

    async def main() -> tuple[bool, bool, int]:
        ours.start()
        theirs._process_lock.acquire()  # the other process is mid-batch
        released = threading.Event()

        def let_go() -> None:
            if not released.is_set():
                released.set()
                theirs._process_lock.release()

        safety = threading.Timer(30, let_go)
        safety.start()
        job = asyncio.ensure_future(ours.run(insert(1)))
        await asyncio.sleep(0.05)  # the job reaches the lock
        loop = asyncio.get_running_loop()

        def probe() -> bool:
            try:
                return bool(asyncio.run_coroutine_threadsafe(asyncio.sleep(0, True), loop).result(timeout=15))
            except TimeoutError:
                return False

        served = await asyncio.to_thread(probe)
        waiting = not job.done()
        safety.cancel()
        let_go()
        return served, waiting, await job

    try:
        served, waiting, result = asyncio.run(main())
        assert served, "the loop was blocked while the lock was held"
        assert waiting and result == 1
        assert stored(sqlite_url) == [0, 1]
    finally:
        ours.stop()
        theirs.stop()


def test_a_busy_loop_gathers_many_jobs_into_few_commits(sqlite_url: str) -> None:
    writer = Writer(make_engine(sqlite_url, writer=True))

    async def main() -> None:
        writer.start()
        await asyncio.gather(*(writer.run(insert(n)) for n in range(500)))

    try:
        asyncio.run(main())
        assert writer.jobs == 500
        assert writer.batches <= 500 // writer.max_batch + 1
        assert stored(sqlite_url) == list(range(500))
    finally:
        writer.stop()
