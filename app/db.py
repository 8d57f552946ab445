"""Engines, the column types every table shares, and the one place that commits.

Writes go through `Writer`, which owns the write connection and runs the jobs it is handed
in batches, one transaction per batch (group commit). Webhooks wait for their job's batch
to commit before answering. If a batch fails, it is rolled back and each job is run again
in its own transaction, so one bad job fails only itself.

Where the batch runs depends on the engine:
- SQLite: on the event loop itself, in a callback scheduled after the requests that are
  ready have queued their jobs. A local file answers in microseconds; handing each job to
  a thread instead cost more than the job (the two threads convoy on the GIL at every
  sqlite3 call), and halved the webhooks a process could take.
- PostgreSQL: on a writer thread with its own connection, so a server that stops answering
  blocks only it and the webhooks can still answer 503 at their deadline. One thread, not
  one per core: the inbound texts of a batch are written together (app.inbound), so the
  bigger the batch the less each text costs. With the inbound mix of `make bench`, one
  process took 1,700 texts/s with one writer thread, 1,470 with two and 1,300 with four.

Consecutive jobs of a class with a `run_many` method are handed to it together (`_run_jobs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RootTransaction
from sqlalchemy.exc import DBAPIError, OperationalError

from app.errors import DatabaseUnavailable, OptlineError

log = logging.getLogger("optline.db")

T = TypeVar("T")
Job = Callable[[Connection, datetime], T]

# How long a SQLite connection waits for another's write lock (never on the event loop).
SQLITE_BUSY_MS = 30000


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the engine stores."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC so text comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    """True for the embedded SQLite engine."""
    return engine_or_conn.dialect.name == "sqlite"


def make_engine(url: str, *, writer: bool = False, pool_size: int = 8) -> Engine:
    """An engine for `url`; `writer=True` gives SQLite's single write connection (BEGIN IMMEDIATE)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # The writer has exactly one connection; readers get a small pool of their own.
            pool_size=1 if writer else 8,
            max_overflow=0,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from pysqlite so BEGIN is ours to issue.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # WAL is a property of the file, kept once set. Setting it again needs a lock, which
            # another connection's open write transaction refuses ("database is locked").
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError:
                    log.warning("SQLite is busy: journal_mode stays %s until optline migrate sets WAL",
                                cur.execute("PRAGMA journal_mode").fetchone()[0])
            # FULL: a webhook answered 200 must survive a power cut; group commit pays for it.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front: a deferred transaction that later
            # upgrades can fail with SQLITE_BUSY instead of waiting its turn.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_recycle=1800,
        # Keep connections: a pool that reopens under load makes requests pay for backends.
        pool_timeout=30,
        connect_args={
            "connect_timeout": 5,
            # A hung or partitioned server must surface as an error, not a request that never ends.
            "options": "-c statement_timeout=15000 -c idle_in_transaction_session_timeout=60000",
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        },
    )


def lock_phones(conn: Connection, phones: Iterable[str]) -> None:
    """Serialise work on these phones across processes (PostgreSQL advisory locks, sorted to avoid deadlock).

    SQLite needs nothing: BEGIN IMMEDIATE already serialises every writer.
    """
    keys = sorted(set(phones))
    if is_sqlite(conn) or not keys:
        return
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    # One round trip for the whole batch, in sorted order so two processes cannot deadlock.
    cur.execute("SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM (SELECT unnest(%s::text[]) AS k ORDER BY 1) s",
                (keys,))


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


class _Item:
    __slots__ = ("fn", "locks", "done", "result", "error")

    def __init__(self, fn: Job[Any], locks: tuple[str, ...], done: Callable[[_Item], None]):
        self.fn = fn
        self.locks = locks
        self.done = done
        self.result: Any = None
        self.error: BaseException | None = None


class Writer:
    """Runs write jobs in batched transactions and reports each job's result after commit."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow, max_batch: int = 64,
                 deadline: float = 4.0, inline: bool | None = None,
                 on_locked: Callable[[Connection, list[str]], None] | None = None):
        self.engine = engine
        # Called with the locked keys once they are held, before any job reads (app.erasure.restore).
        self.on_locked = on_locked
        self.deadline = deadline
        self.clock = clock
        self.max_batch = max_batch
        # SQLite's batches run on the event loop (see the module docstring); PostgreSQL's on a thread.
        self.inline = is_sqlite(engine) if inline is None else inline
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: list[_Item] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False  # an inline batch is on the helper thread (its commit, or waiting for another process)
        self._helper: ThreadPoolExecutor | None = None
        # One user of the connection at a time: the loop's batches, or call() with no loop running.
        self._conn_lock = threading.Lock()
        self.batches = 0
        self.jobs = 0
        self._process_lock = _SqliteWriteLock(engine)
        # The writer keeps one connection: checking one out of the pool and back in (with its
        # reset ROLLBACK) for every batch cost a tenth of the webhook's CPU.
        self._conn: Connection | None = None

    def start(self) -> None:
        """Start the writer thread, or note the running event loop for inline batches (idempotent)."""
        if self.inline:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop_thread, name="optline-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the queued jobs and stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None
        self._loop = None
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._process_lock.close()

    async def run(self, fn: Job[T], *, locks: Iterable[str] = (), timeout: float | None = None) -> T:
        """Run `fn(conn, now)` in the next batch and return its result once the batch has committed.

        Waits at most `timeout` seconds (default `self.deadline`), then raises DatabaseUnavailable:
        a hung database must give Twilio a 503 it retries, not a request it times out on.
        The job may still commit later; webhooks are deduplicated, so the retry is harmless.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self.inline:
            item = _Item(fn, tuple(locks), partial(_settle_from_any_thread, loop, fut))
            self._pending.append(item)
            if len(self._pending) == 1 and not self._busy:
                # After the callbacks already due: the requests that are ready join this batch.
                loop.call_soon(self._flush, loop)
        else:
            self._queue.put(_Item(fn, tuple(locks), lambda item: loop.call_soon_threadsafe(_settle, fut, item)))
        # The job may still commit after the deadline; its late outcome is then dropped.
        timer = loop.call_later(timeout or self.deadline, _expire, fut, timeout or self.deadline)
        try:
            return await fut
        finally:
            timer.cancel()

    def call(self, fn: Job[T], *, locks: Iterable[str] = ()) -> T:
        """Run `fn` and wait for it, from a thread that is not the event loop (CLI, tests, senders)."""
        loop = self._loop if self.inline else None
        if loop is not None and loop.is_running() and not _on_loop(loop):
            return asyncio.run_coroutine_threadsafe(self.run(fn, locks=locks), loop).result()
        if self.inline or self._thread is None:
            with self._conn_lock, self._process_lock:
                return self._run_one(_Item(fn, tuple(locks), lambda item: None))
        fut: Future[T] = Future()

        def done(item: _Item) -> None:
            if item.error is not None:
                fut.set_exception(item.error)
            else:
                fut.set_result(item.result)

        self._queue.put(_Item(fn, tuple(locks), done))
        return fut.result()

    # --- inline (SQLite): batches on the event loop -------------------------------------------

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the pending jobs' statements now; their COMMIT (an fsync) goes to the helper thread.

        While it syncs, the loop reads and verifies the next webhooks, whose jobs form the next
        batch. Only one batch is in flight: `_busy` holds the rest back until it has committed.
        """
        while self._pending and not self._busy:
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            self._busy = True
            if not self._process_lock.acquire(blocking=False):
                # Another process holds the database: wait for it on the helper, not on the loop.
                self._helper_pool().submit(self._run_on_helper, loop, batch)
                return
            self._conn_lock.acquire()
            try:
                try:
                    begun = self._begin_nowait()
                except Exception:  # noqa: BLE001 - cannot even connect now: the helper reports it per job
                    log.debug("cannot begin a batch on the loop", exc_info=True)
                    begun = None
                if begun is None:
                    # Someone that is no optline writer (a backup, the sqlite3 shell, a CLI command)
                    # holds SQLite's write lock: wait for it on the helper, never on the loop, so
                    # /healthz keeps answering and webhooks reach their deadline (and the spool).
                    self._release()
                    self._helper_pool().submit(self._run_on_helper, loop, batch)
                    return
                trans = self._execute(batch, begun)
            except BaseException:
                self._release()
                raise
            if trans is None:  # failed, and each job was run again alone: nothing left to commit
                self._release()
                self._busy = False
                _finish(batch)
                continue
            self._helper_pool().submit(self._commit_on_helper, loop, trans, batch)

    def _helper_pool(self) -> ThreadPoolExecutor:
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="optline-writer")
        return self._helper

    def _commit_on_helper(self, loop: asyncio.AbstractEventLoop, trans: RootTransaction, batch: list[_Item]) -> None:
        try:
            self._commit(trans, batch)
        finally:
            self._release()
            loop.call_soon_threadsafe(self._resume, loop, batch)

    def _run_on_helper(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        try:
            with self._conn_lock, self._process_lock:
                self._run_batch(batch, settle=False)
        finally:
            loop.call_soon_threadsafe(self._resume, loop, batch)

    def _release(self) -> None:
        self._conn_lock.release()
        self._process_lock.release()

    def _resume(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        self._busy = False
        _finish(batch)
        self._flush(loop)

    # --- threaded (PostgreSQL) ----------------------------------------------------------------

    def _loop_thread(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            with self._process_lock:
                self._run_batch(batch)

    # --- both ---------------------------------------------------------------------------------

    def _run_batch(self, batch: list[_Item], *, settle: bool = True) -> None:
        """Execute and commit a batch on this thread, then (unless told not to) report each job."""
        trans = self._execute(batch)
        if trans is not None:
            self._commit(trans, batch)
        if settle:
            _finish(batch)

    def _connection(self) -> Connection:
        if self._conn is not None and (self._conn.invalidated or self._conn.closed):
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _begin_nowait(self) -> RootTransaction | None:
        """BEGIN IMMEDIATE without waiting (SQLite, on the loop): the transaction, or None while another holds the lock."""
        conn = self._connection()
        dbapi = conn.connection.driver_connection
        dbapi.execute("PRAGMA busy_timeout = 0")  # type: ignore[union-attr]
        try:
            return conn.begin()
        except OperationalError as exc:
            if "locked" not in str(exc.orig).lower() and "busy" not in str(exc.orig).lower():
                raise
            if conn.in_transaction():
                with contextlib.suppress(Exception):
                    conn.rollback()
            return None
        finally:
            dbapi.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")  # type: ignore[union-attr]

    def _execute(self, batch: list[_Item], begun: RootTransaction | None = None) -> RootTransaction | None:
        """Run the batch's jobs in one open transaction (`begun`, or a new one) and return it, uncommitted.

        If any job fails, the batch is rolled back and each job runs again in its own
        transaction (its result or error recorded on the item); then None is returned.
        """
        self.batches += 1
        self.jobs += len(batch)
        trans: RootTransaction | None = begun
        try:
            conn = self._connection()
            if trans is None:
                trans = conn.begin()
            self._lock(conn, [k for item in batch for k in item.locks])
            self._run_jobs(conn, batch)
            return trans
        except BaseException:  # noqa: BLE001 - any failure: retry each job alone, with reconnects
            log.debug("batch of %d failed; retrying jobs one by one", len(batch), exc_info=True)
            self._abandon(trans)
            self._run_each(batch)
            return None

    def _lock(self, conn: Connection, keys: list[str]) -> None:
        lock_phones(conn, keys)
        if self.on_locked is not None and keys:
            self.on_locked(conn, keys)

    def _run_jobs(self, conn: Connection, batch: list[_Item]) -> None:
        """Each job's result, in order; consecutive jobs of a class with `run_many` go to it together.

        `run_many(conn, [(now, job), ...])` must return what calling each job in turn would,
        in one list (app.inbound.InboundJob writes a whole batch of texts in a few statements).
        """
        i = 0
        while i < len(batch):
            kind = type(batch[i].fn)
            many = getattr(kind, "run_many", None)
            if many is None:
                batch[i].result = batch[i].fn(conn, self.clock())
                i += 1
                continue
            end = i + 1
            while end < len(batch) and type(batch[end].fn) is kind:
                end += 1
            group = batch[i:end]
            results = many(conn, [(self.clock(), item.fn) for item in group])
            for item, result in zip(group, results, strict=True):
                item.result = result
            i = end

    def _commit(self, trans: RootTransaction, batch: list[_Item]) -> None:
        """Commit `trans`; if the commit fails, nothing of the batch happened: run each job alone."""
        try:
            trans.commit()
        except BaseException:  # noqa: BLE001
            log.debug("commit of a batch of %d failed; retrying jobs one by one", len(batch), exc_info=True)
            self._abandon(trans)
            self._run_each(batch)

    def _abandon(self, trans: RootTransaction | None) -> None:
        if trans is not None and trans.is_active:
            with contextlib.suppress(Exception):
                trans.rollback()
        self._drop_invalidated()

    def _run_each(self, batch: list[_Item]) -> None:
        for item in batch:
            item.result = None
            try:
                item.result = self._run_one(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                item.error = exc

    def _run_one(self, item: _Item) -> Any:
        """One job in its own transaction on the writer's connection, reconnecting after a drop."""

        def once() -> Any:
            conn = self._connection()
            with conn.begin():
                self._lock(conn, list(item.locks))
                return item.fn(conn, self.clock())

        return _with_retries(once, on_error=self._drop_invalidated)

    def _drop_invalidated(self) -> None:
        if self._conn is not None and self._conn.invalidated:
            self._conn.close()
            self._conn = None


class _SqliteWriteLock:
    """A file lock that queues the writer threads of several processes on one SQLite file.

    Without it they meet in SQLite's busy handler, which sleeps and retries with growing
    back-off (up to 100 ms a sleep) and gives two `optline serve` processes a tail of
    seconds; a blocked flock() wakes the next writer the moment the lock is free.
    PostgreSQL needs nothing of the kind.
    """

    def __init__(self, engine: Engine):
        self._fd: int | None = None
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        if path and path != ":memory:":
            self._fd = os.open(path + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; without blocking, False when another process holds it."""
        if self._fd is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        """Let the next process's writer in."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Release the lock file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run_in_transaction(
    engine: Engine, fn: Job[T], *, locks: Iterable[str] = (), clock: Callable[[], datetime] = utcnow
) -> T:
    """Run one job in its own transaction, retrying dropped connections a few times."""
    locks = tuple(locks)

    def once() -> T:
        with engine.begin() as conn:
            lock_phones(conn, locks)
            return fn(conn, clock())

    return _with_retries(once)


def _with_retries(once: Callable[[], T], *, attempts: int = 3, on_error: Callable[[], None] = lambda: None) -> T:
    """`once()`, again after a dropped connection (`on_error` runs after any database error first).

    Our own refusals (OptlineError) and other database errors are raised at once; a
    connection still dropped after the last attempt becomes DatabaseUnavailable (503).
    """
    for attempt in range(attempts):
        try:
            return once()
        except OptlineError:
            raise
        except DBAPIError as exc:
            on_error()
            if not _is_disconnect(exc):
                raise
            if attempt == attempts - 1:
                raise DatabaseUnavailable(str(exc.orig).splitlines()[0] if exc.orig else "database unavailable") from exc
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _expire(fut: asyncio.Future[Any], seconds: float) -> None:
    if not fut.done():
        fut.set_exception(DatabaseUnavailable(f"the database did not answer within {seconds:g} s"))


def _finish(batch: list[_Item]) -> None:
    for item in batch:
        item.done(item)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _settle_from_any_thread(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], item: _Item) -> None:
    if _on_loop(loop):
        _settle(fut, item)
    else:
        loop.call_soon_threadsafe(_settle, fut, item)


def _settle(fut: asyncio.Future[Any], item: _Item) -> None:
    if fut.done():
        return
    if item.error is not None:
        fut.set_exception(item.error)
    else:
        fut.set_result(item.result)
