"""`OutboxSender`: claims due rows, decides each under the phone's lock, sends through the provider, records.

The async half of the outbox: the SQL it runs is in app.outbox.queue (claim),
app.outbox.dispatch (decide, rate) and app.outbox.records (outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from app.db import Writer
from app.errors import DatabaseUnavailable
from app.keywords.schema import Rules
from app.metrics import Metrics
from app.outbox.dispatch import RATE_WAIT_IN_PLACE, SendRate, dispatch, dispatch_many
from app.outbox.queue import CHANNEL_EVENT, CHANNEL_SMS, Claimed, Deadlines, claim, claim_row
from app.outbox.records import CarrierOptOut, SentRecord, record_failure, record_sent_many
from app.phone import mask
from app.providers.base import OutboundSms, SendError, SendResult
from app.providers.registry import Providers
from app.sql import Raw

log = logging.getLogger("optline.outbox")

# How long a sender keeps trying to record a send's outcome through a database outage.
RECORD_PATIENCE = 300.0
# The longest a sender waits for more free slots before claiming (see OutboxSender._pipeline).
BATCH_WAIT = 0.005


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
    """Seconds to wait before retry `attempt` (1-based): exponential backoff with full jitter."""
    return rng.uniform(0, min(cap, base * (2 ** (attempt - 1))))


_UNDECIDED = object()  # a row `_deliver` must decide itself


@dataclass(frozen=True)
class _DispatchFailed:
    """The batch's dispatch job failed (the database): the row records a transient failure."""

    error: Exception


class OutboxSender:
    """Claims due rows, re-checks them, sends through the provider, records the outcome."""

    def __init__(
        self,
        *,
        writer: Writer,
        reader: Engine,
        providers: Providers,
        rules: Rules | None,
        public_url: str | None,
        lease_seconds: float = 60.0,
        concurrency: int = 8,
        deadlines: Deadlines = Deadlines(),
        retry_base: float = 2.0,
        retry_cap: float = 600.0,
        poll_seconds: float = 0.5,
        clock: Callable[[], datetime],
        event_poster: Callable[[Claimed], None] | None = None,
        metrics: Metrics | None = None,
        carrier_opt_out: CarrierOptOut | None = None,
    ) -> None:
        self.writer = writer
        self.carrier_opt_out = carrier_opt_out  # applies a 21610 refusal's opt-out (app.carrier)
        self.reader = reader
        self.providers = providers
        self.rules = rules
        self.public_url = public_url  # delivery reports come back to {public_url}/webhooks/{provider}/status
        self.lease = timedelta(seconds=lease_seconds)
        self.concurrency = concurrency
        self.deadlines = deadlines
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.event_poster = event_poster
        self.metrics = metrics or Metrics()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:64]
        # Brand events get their own, smaller share of threads: a CRM that hangs must never
        # hold up a stop reply.
        self.event_concurrency = max(2, concurrency // 2)
        self._executor = ThreadPoolExecutor(max_workers=concurrency + self.event_concurrency,
                                            thread_name_prefix="optline-send")
        self._wakes = {CHANNEL_SMS: asyncio.Event(), CHANNEL_EVENT: asyncio.Event()}
        self._urgent = {CHANNEL_SMS: True, CHANNEL_EVENT: True}
        self._stopping = False
        self._unrecorded: set[int] = set()  # rows sent whose outcome is not recorded yet
        self._recording: set[asyncio.Task[None]] = set()  # outcomes being recorded
        self._together: list[tuple[Any, tuple[str, ...], asyncio.Future[None]]] = []
        self._flushes: set[asyncio.Future[None]] = set()
        self._next_lease_check: dict[str, float] = {}  # channel -> time.monotonic() of the next look
        self.sent = 0

    def wake(self, *, urgent: bool = True) -> None:
        """Ask the loops to look for due rows (call from the event loop thread); `urgent`: at once, not in a batch."""
        for channel, event in self._wakes.items():
            event.set()
            if urgent:
                self._urgent[channel] = True

    async def run(self) -> None:
        """Send until `stop()`; finishes the sends in flight before returning."""
        await asyncio.gather(self._pipeline(CHANNEL_SMS, self.concurrency),
                             self._pipeline(CHANNEL_EVENT, self.event_concurrency))

    async def _pipeline(self, channel: str, slots: int) -> None:
        """Keep up to `slots` rows of one channel in flight, claiming more as each finishes.

        A claimed batch is decided and sent by a task of its own, so the next claim does not
        wait for the previous batch's decision: claims, decisions and sends overlap.
        """
        batches: set[asyncio.Task[None]] = set()
        busy = 0  # rows claimed and not finished
        done = asyncio.Event()

        def finished(_row: Claimed) -> None:
            nonlocal busy
            busy -= 1
            done.set()

        hinted = True  # woken by a webhook, or the last claim found rows: claim without looking first
        urgent = True  # a stop reply (or a caller that cannot wait) is queued: claim at once
        woken = False  # a webhook queued a reply since the last claim
        # A claim for every reply queued, or for every send that finishes, would decide one row
        # a job. Unless a stop reply is waiting, a few milliseconds more make each claim, and its
        # decision, a batch: for a quarter of the slots to free, or for more replies to queue.
        batch = max(1, slots // 4)
        while not self._stopping:
            free = slots - busy
            if not urgent and 0 < free < batch and busy:
                done.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), BATCH_WAIT)
                free = slots - busy
            elif not urgent and woken and free > 0:
                await asyncio.sleep(BATCH_WAIT)
            rows: list[Claimed] = []
            if free > 0 and not hinted:
                # A poll: look on a reader connection first, so an idle sender never takes the
                # write lock (on SQLite it would queue behind the webhooks for nothing).
                try:
                    hinted = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._has_due, channel)
                except Exception:  # noqa: BLE001 - the claim below reports database trouble
                    hinted = True
            if free > 0 and hinted:
                # Rows a dead sender left leased: looked for every few seconds, not at every claim.
                # Two statements of about ten a claim; in `make bench` the claims of a busy
                # sender are many, and these found nothing unless a sender had crashed.
                expired = time.monotonic() >= self._next_lease_check.get(channel, 0.0)
                if expired:
                    self._next_lease_check[channel] = time.monotonic() + min(5.0, self.lease.total_seconds() / 4)
                try:
                    rows = await self.writer.run(lambda conn, now: claim(
                        conn, now, worker=self.worker_id, limit=free, lease=self.lease, channel=channel,
                        expired=expired))
                except DatabaseUnavailable as exc:
                    log.warning("outbox claim failed (%s); retrying", exc)
                except Exception:  # noqa: BLE001 - a database blip must not kill the sender
                    log.exception("outbox claim failed; retrying")
            woken = False  # what woke it is claimed now
            if rows:
                busy += len(rows)
                task = asyncio.create_task(self._run_batch(channel, rows, finished))
                batches.add(task)
                task.add_done_callback(batches.discard)
                if busy < slots:
                    continue  # there may be more due right now
            wake = self._wakes[channel]
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(done.wait())]
            await asyncio.wait(waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            hinted = wake.is_set() or done.is_set() or bool(rows)
            woken, urgent = wake.is_set(), self._urgent[channel]
            self._urgent[channel] = False
            done.clear()
            wake.clear()
        while batches:
            await asyncio.gather(*batches, return_exceptions=True)
        await self.recorded()

    async def _run_batch(self, channel: str, rows: list[Claimed], finished: Callable[[Claimed], None]) -> None:
        """Decide a claimed batch (texts: in one job), then send each row; `finished` as each one ends."""
        decisions = await self._dispatch_batch(rows) if channel == CHANNEL_SMS else {}

        async def one(row: Claimed) -> None:
            try:
                await self._deliver(row, decisions.get(row.id, _UNDECIDED))
            finally:
                finished(row)

        await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)

    def _has_due(self, channel: str) -> bool:
        """True when a row of `channel` is due or its lease has run out (a read, no lock)."""
        with self.reader.connect() as conn:
            return Raw(conn).scalar(
                "SELECT 1 FROM outbox WHERE channel = :channel AND ((status = 'pending' AND next_attempt_at <= :now)"
                " OR (status IN ('sending', 'dispatching') AND lease_until < :now)) LIMIT 1",
                {"channel": channel, "now": self.clock()},
            ) is not None

    def stop(self) -> None:
        """Stop claiming; `run` returns once the sends in flight are recorded."""
        self._stopping = True
        self.wake()

    def close(self) -> None:
        """Release the send threads."""
        self._executor.shutdown(wait=True)

    async def run_once(self) -> int:
        """Claim one batch, send it, record every outcome; returns how many rows were claimed."""
        rows = await self.writer.run(
            lambda conn, now: claim(conn, now, worker=self.worker_id, limit=self.concurrency * 4, lease=self.lease)
        )
        if rows:
            sem = asyncio.Semaphore(self.concurrency)

            async def one(row: Claimed) -> None:
                async with sem:
                    await self._deliver(row)

            await asyncio.gather(*(one(row) for row in rows))
        await self.recorded()
        return len(rows)

    async def recorded(self) -> None:
        """Wait until every outcome sent so far is recorded."""
        while self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)

    async def send_now(self, row_id: int) -> bool:
        """Claim and send one pending row by id, now; False when it was not pending."""
        row = await self.writer.run(lambda conn, now: claim_row(conn, now, row_id=row_id, worker=self.worker_id,
                                                                lease=self.lease))
        if row is None:
            return False
        await self._deliver(row)
        await self.recorded()
        return True

    async def _deliver(self, row: Claimed, decided: float | None | object = _UNDECIDED) -> None:
        """Decide (unless the batch did: `decided`), send and have the outcome recorded; the slot frees once sent."""
        if row.id in self._unrecorded:
            # Sent by this process already; its outcome is still being recorded (the database was
            # away longer than the lease). Sending it again would text the phone twice.
            return
        outcome: SendResult | SendError | None = None
        try:
            if isinstance(decided, _DispatchFailed):
                raise decided.error
            wait = await self._dispatch(row) if decided is _UNDECIDED else decided  # type: ignore[assignment]
            while wait is not None and 0 < wait <= RATE_WAIT_IN_PLACE:
                await asyncio.sleep(wait)  # the sender's next slot is that close: still ours, try again
                wait = await self._dispatch(row)
        except Exception as exc:  # noqa: BLE001 - nothing was sent: a database blip is a reason to retry
            wait, outcome = None, SendError(f"database unavailable before sending: {type(exc).__name__}",
                                            transient=True)
        if wait:
            self.metrics.sent(row.channel, "rate_limited")  # back to pending, due when its sender has a slot
            return
        allowed = wait is not None and outcome is None
        if allowed:
            try:
                outcome = await self._send(row)
            except Exception as exc:  # noqa: BLE001 - an adapter bug is a permanent failure of this row
                log.exception("send of outbox row %s crashed", row.id)
                outcome = SendError(f"adapter error: {exc!r}"[:200])
        if outcome is None:
            self.metrics.sent(row.channel, "cancelled")
            return
        if isinstance(outcome, SendResult):
            self.sent += 1
            self.metrics.sent(row.channel, "sent")
            self._record_later(SentRecord(row.id, self.worker_id, outcome, self.rules, self.carrier_opt_out),
                               row, locks=[row.phone] if row.phone else (), sent=True)
            return
        retry_at = deadline = None
        if outcome.transient:
            now = self.clock()
            deadline = row.deadline_at or row.created_at + self.deadlines.budget(row.channel, row.purpose)
            wait = backoff(row.attempts, base=self.retry_base, cap=self.retry_cap)
            if outcome.retry_after is not None:
                wait = max(wait, outcome.retry_after)  # the provider said when (429 Retry-After)
            if now < deadline:
                # The last retry lands on the deadline rather than giving up early.
                retry_at = min(now + timedelta(seconds=wait), deadline)
        self.metrics.sent(row.channel, "opted_out" if outcome.opted_out else "retry" if retry_at else "failed", outcome)
        log.warning("send of outbox row %s to %s failed: %s%s", row.id, mask(row.phone), outcome,
                    " (will retry)" if retry_at else "")
        self._record_later(lambda c, now: record_failure(c, now, row=row, worker=self.worker_id, error=outcome,
                                                         retry_at=retry_at, rules=self.rules,
                                                         opt_out=self.carrier_opt_out, deadline=deadline),
                           row, locks=[row.phone] if outcome.opted_out and row.phone else (), sent=False)

    def _record_later(self, job: Any, row: Claimed, *, locks: list[str] | tuple[str, ...], sent: bool) -> None:
        """Record an outcome in the background: the send's slot is free for the next row meanwhile.

        Until it is recorded, `_unrecorded` keeps this process from sending the row again.
        """
        if sent:
            self._unrecorded.add(row.id)
        task = asyncio.create_task(self._record(job, row, locks=locks, sent=sent))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, job: Any, row: Claimed, *, locks: list[str] | tuple[str, ...], sent: bool) -> None:
        """Record a send's outcome, retrying through a database outage: a lost record of a sent text means a second send.

        A text the provider accepted (`sent`) is retried for minutes, and until it is recorded
        this process does not send the row again even if its lease runs out and a claim hands
        it back (see `_deliver`); another process could, after the lease. A failure is retried
        while the lease lasts: if it is lost, the row is simply tried again after its lease.
        """
        deadline = time.monotonic() + (RECORD_PATIENCE if sent else self.lease.total_seconds() / 2)
        pause = 0.2
        if sent:
            self._unrecorded.add(row.id)
        try:
            while True:
                try:
                    await self._write_together(job, locks)
                    return
                except Exception:  # noqa: BLE001 - a database blip; the row stays ours meanwhile
                    if time.monotonic() + pause > deadline or self._stopping:
                        log.exception("could not record the outcome of outbox row %s; it is retried after its lease",
                                      row.id)
                        return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        finally:
            self._unrecorded.discard(row.id)

    async def _write_together(self, job: Any, locks: Iterable[str]) -> None:
        """Run `job` in one writer job with the others submitted in this turn of the loop.

        Recording a batch of sends as one job, not one each, saves the writer's per-job cost.
        When the shared job fails, each job runs again on its own, so one bad row fails alone.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._together.append((job, tuple(locks), future))
        if len(self._together) == 1:
            loop.call_soon(self._start_flush)
        await future

    def _start_flush(self) -> None:
        # The loop keeps only a weak reference to a task: this set keeps it alive until done.
        task = asyncio.ensure_future(self._flush_together())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_together(self) -> None:
        batch, self._together = self._together, []
        jobs = [job for job, _locks, _future in batch if not isinstance(job, SentRecord)]
        # Accepted sends are recorded together, in two statements (see record_sent_many).
        sent = [job for job, _locks, _future in batch if isinstance(job, SentRecord)]
        locks = sorted({lock for _job, locks, _future in batch for lock in locks})
        try:
            await self.writer.run(lambda conn, now: [record_sent_many(conn, now, sent),
                                                     *(job(conn, now) for job in jobs)], locks=locks)
        except Exception as exc:  # noqa: BLE001 - find out which: each on its own
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
                return
            for job, job_locks, future in batch:
                try:
                    await self.writer.run(job, locks=job_locks)
                except Exception as exc:  # noqa: BLE001 - handed to the waiter
                    future.set_exception(exc)
                else:
                    future.set_result(None)
            return
        for _job, _locks, future in batch:
            future.set_result(None)

    async def _dispatch_batch(self, rows: list[Claimed]) -> dict[int, Any]:
        """Decide a claimed batch of texts in one writer job (see `dispatch_many`); on failure, each row learns why."""
        limits = {row.id: limit for row in rows if (limit := self._rate_of(row)) is not None}
        locks = {row.phone for row in rows if row.phone} | {f"sender:{limit.sender}" for limit in limits.values()}
        try:
            return await self.writer.run(  # type: ignore[no-any-return]
                lambda conn, now: dispatch_many(conn, now, rows=rows, worker=self.worker_id, limits=limits),
                locks=sorted(locks))
        except Exception as exc:  # noqa: BLE001 - nothing was sent: each row records a transient failure
            return {row.id: _DispatchFailed(exc) for row in rows}

    async def _dispatch(self, row: Claimed) -> float | None:
        """The cancel rule and the sender's rate, decided as late as possible under the phone's lock (see `dispatch`)."""
        if row.channel != CHANNEL_SMS:
            return 0.0  # a brand event is not a text to the phone: a stop does not cancel it
        limit = self._rate_of(row)
        locks = [row.phone] if row.phone else []
        if limit is not None:
            # Every process takes this sender's slots in one order with its phones (sorted
            # advisory locks on PostgreSQL), so two batches cannot deadlock on the rate row.
            locks.append(f"sender:{limit.sender}")
        return await self.writer.run(  # type: ignore[no-any-return]
            lambda conn, now: dispatch(conn, now, row_id=row.id, worker=self.worker_id, limit=limit), locks=locks)

    def _rate_of(self, row: Claimed) -> SendRate | None:
        """The rate limit of the row's sender; None for the console provider, which sends nothing."""
        config = self.rules.sender_config(row.service_id or row.from_number or "") if self.rules is not None else None
        if config is None or self.providers.name_for(self.rules, row.from_number, row.service_id) == "console":
            return None
        # Up to a hundredth of a second's worth back to back (one for a long code): a batch from
        # a fast sender goes out together, and no second holds more than 1 % over the rate.
        burst = max(1.0, config.rate / 100)
        return SendRate(sender=config.id, rate=config.rate, burst=burst + 1 if row.purpose == "stop" else burst)

    async def _send(self, row: Claimed) -> SendResult | SendError:
        """Send one row: a text through its sender's provider (awaited), a brand event on a thread."""
        started = time.perf_counter()
        try:
            if row.channel == CHANNEL_EVENT:
                if self.event_poster is None:
                    raise SendError("no brand event delivery configured")
                await asyncio.get_running_loop().run_in_executor(self._executor, self.event_poster, row)
                return SendResult(message_id=f"event-{row.id}", status="delivered")
            assert row.phone is not None
            name = self.providers.name_for(self.rules, row.from_number, row.service_id)
            callback = f"{self.public_url}/webhooks/{name}/status" if self.public_url else None
            return await self.providers.send(name, OutboundSms(
                to=row.phone, body=row.body, from_number=None if row.service_id else row.from_number,
                service_id=row.service_id, status_callback=callback), self._executor)
        except SendError as exc:
            return exc
        finally:
            self.metrics.send_seconds.labels(row.channel).observe(time.perf_counter() - started)
