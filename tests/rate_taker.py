"""Processes sending from one sender as fast as app.ratelimit lets them, for tests/test_ratelimit.py.

`python -m tests.rate_taker PROCESSES URL SENDER RATE BURST SECONDS` forks PROCESSES
processes (this one imports optline once, then forks before any connection exists, so each
child starts in milliseconds with its own engine). From a common start they all take slots
for SENDER until SECONDS after it, each try in its own transaction, sleeping the wait they
are told (plus a little jitter) when refused, with the real clock. Prints one JSON object per process on a line:
its pid and its granted takes' times (integer µs since the epoch).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import make_engine
from app.ratelimit import take

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STARTUP = 0.3  # seconds for the children to connect before the race starts


def send_as_fast_as_allowed(url: str, sender: str, rate: float, burst: float, start: float,
                            seconds: float) -> tuple[int, list[int]]:
    """One process's run: its pid and the times of its granted takes."""
    # The writer's engine: on SQLite it begins IMMEDIATE, as optline's own writer does.
    engine = make_engine(url, writer=True)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))  # connected before the start, so the race begins at once
    end = datetime.fromtimestamp(start + seconds, UTC)
    time.sleep(max(0.0, start - time.time()))
    granted: list[int] = []
    while True:
        now = datetime.now(UTC)
        if now >= end:
            break
        with engine.begin() as conn:
            wait = take(conn, now, sender=sender, rate=rate, burst=burst)
        if wait == 0.0:
            granted.append((now - _EPOCH) // timedelta(microseconds=1))
        else:
            # Real senders are never in step: a little jitter, or SQLite's busy handler (which
            # backs off) can leave one process winning every round while the others wait.
            time.sleep(wait + random.uniform(0, 0.5 / rate))
    engine.dispose()
    return os.getpid(), granted


def main(processes: int, url: str, sender: str, rate: float, burst: float, seconds: float) -> None:
    start = time.time() + STARTUP
    # Forked from this fresh interpreter, which holds no connection and runs no other thread.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        runs = pool.starmap(send_as_fast_as_allowed, [(url, sender, rate, burst, start, seconds)] * processes)
    for pid, granted in runs:
        print(json.dumps({"pid": pid, "granted": granted}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
