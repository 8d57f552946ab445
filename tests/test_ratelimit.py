"""Each sender's send rate (app.ratelimit), on SQLite and PostgreSQL, within one process and across several."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.db import make_engine
from app.ratelimit import take
from app.settings import PROJECT_ROOT

LONG_CODE = "+15005550006"
SHORT_CODE = "384387"
SERVICE = "MG0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, writer=True)
    yield engine
    engine.dispose()


def at(seconds: float) -> datetime:
    """T0 plus `seconds`, to the microsecond."""
    return T0 + timedelta(microseconds=round(seconds * 1_000_000))


def take_at(engine: Engine, when: datetime, sender: str = LONG_CODE, rate: float = 1.0, burst: float = 1.0) -> float:
    """One take in its own transaction, committed as the caller would."""
    with engine.begin() as conn:
        return take(conn, when, sender=sender, rate=rate, burst=burst)


def tat_of(engine: Engine, sender: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT tat_us FROM sender_rates WHERE sender = :s"), {"s": sender}).scalar()


@pytest.mark.parametrize(("rate", "burst", "wait"), [
    (1, 1, 1.0),
    (3, 1, 0.333334),  # the interval is rounded up to the microsecond: never faster than the rate
    (100, 1, 0.01),
    (1, 3, 1.0),
    (100, 5, 0.01),
    (20, 2.5, 0.025),  # two back to back, the third half an interval later
], ids=["long-code", "toll-free", "short-code", "burst-3", "short-code-burst-5", "fractional-burst"])
def test_a_burst_goes_back_to_back_and_the_next_waits_one_interval(engine: Engine, rate: float, burst: float,
                                                                   wait: float) -> None:
    now = at(0)
    assert [take_at(engine, now, rate=rate, burst=burst) for _ in range(int(burst))] == [0.0] * int(burst)
    assert take_at(engine, now, rate=rate, burst=burst) == wait
    assert take_at(engine, now + timedelta(seconds=wait) - timedelta(microseconds=1), rate=rate, burst=burst) == 1e-6
    assert take_at(engine, now + timedelta(seconds=wait), rate=rate, burst=burst) == 0.0


def test_waits_are_exact_and_count_down_with_the_clock(engine: Engine) -> None:
    assert take_at(engine, at(0)) == 0.0
    assert take_at(engine, at(0.25)) == 0.75
    assert take_at(engine, at(0.5)) == 0.5
    assert take_at(engine, at(0.999999)) == 0.000001
    assert take_at(engine, at(1)) == 0.0
    assert take_at(engine, at(1)) == 1.0


def test_a_refused_take_records_nothing(engine: Engine) -> None:
    assert take_at(engine, at(0), burst=2) == 0.0
    assert take_at(engine, at(0), burst=2) == 0.0
    tat = tat_of(engine, LONG_CODE)
    assert [take_at(engine, at(0.1), burst=2) for _ in range(5)] == [0.9] * 5
    assert tat_of(engine, LONG_CODE) == tat


def test_an_idle_sender_refills_its_burst_and_no_more(engine: Engine) -> None:
    kw = {"sender": SHORT_CODE, "rate": 100, "burst": 5}
    assert [take_at(engine, at(0), **kw) for _ in range(6)] == [0.0] * 5 + [0.01]
    # Idle for two intervals: two slots back, not five.
    assert [take_at(engine, at(0.02), **kw) for _ in range(3)] == [0.0, 0.0, 0.01]
    # Idle for an hour: the whole burst, and only the burst.
    assert [take_at(engine, at(3600), **kw) for _ in range(6)] == [0.0] * 5 + [0.01]


@pytest.mark.parametrize("rate", [1, 3, 100])
def test_a_sender_retrying_after_each_wait_gets_exactly_its_rate(engine: Engine, rate: float) -> None:
    """Going back when told, a sender is granted one slot every interval: the rate exactly, never more."""
    now, granted, tries = at(0), [], 0
    while now < at(2):
        tries += 1
        wait = take_at(engine, now, sender=SERVICE, rate=rate)
        if wait == 0.0:
            granted.append(now)
        else:
            now += timedelta(seconds=wait)
    interval = timedelta(microseconds=-(-1_000_000 // rate))
    assert all(b - a == interval for a, b in zip(granted, granted[1:], strict=False))
    assert len(granted) == 2 * rate
    assert tries == 2 * len(granted)  # each refusal's wait led straight to a grant


def test_rates_differ_per_call(engine: Engine) -> None:
    """100 texts 10 ms apart: all go at a short code's 100/s; at a long code's 1/s only the first."""
    times = [at(i / 100) for i in range(100)]
    assert [take_at(engine, t, sender=SHORT_CODE, rate=100) for t in times] == [0.0] * 100
    assert [take_at(engine, t, sender=LONG_CODE, rate=1) == 0.0 for t in times] == [True] + [False] * 99


def test_senders_do_not_share_their_budget(engine: Engine) -> None:
    assert take_at(engine, at(0), sender=LONG_CODE) == 0.0
    assert take_at(engine, at(0), sender=LONG_CODE) == 1.0
    assert take_at(engine, at(0), sender="+15005550007") == 0.0
    assert take_at(engine, at(0.5), sender="+15005550007") == 0.5
    assert take_at(engine, at(0.5), sender=LONG_CODE) == 0.5


def test_a_rolled_back_take_gives_its_slot_back(engine: Engine) -> None:
    """The caller owns the transaction: a send it abandons spends nothing."""
    with engine.connect() as conn:
        with conn.begin() as trans:
            assert take(conn, at(0), sender=LONG_CODE, rate=1) == 0.0
            trans.rollback()
    assert tat_of(engine, LONG_CODE) is None
    assert take_at(engine, at(0)) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (1, 0.5),
                                             (1, float("nan"))])
def test_a_rate_or_burst_that_means_nothing_is_refused(engine: Engine, rate: float, burst: float) -> None:
    with pytest.raises(ValueError), engine.begin() as conn:
        take(conn, at(0), sender=LONG_CODE, rate=rate, burst=burst)


def test_a_naive_time_is_refused(engine: Engine) -> None:
    with pytest.raises(TypeError), engine.begin() as conn:
        take(conn, datetime(2026, 11, 26, 12, 0), sender=LONG_CODE, rate=1)


PROCESSES = 3
RATE = 20.0
BURST = 2.0
SECONDS = 2.0


def test_processes_racing_for_one_sender_keep_to_its_rate_together(database_url: str) -> None:
    """Three processes take for one sender with the real clock; together they get the rate, never more.

    GCRA bounds every window, not just the run: any second holds at most rate + burst grants.
    """
    sender = "race-" + uuid.uuid4().hex[:8]
    run = subprocess.run([sys.executable, "-m", "tests.rate_taker", str(PROCESSES), database_url, sender, str(RATE),
                          str(BURST), str(SECONDS)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    runs = [json.loads(line) for line in run.stdout.splitlines()]
    assert len({r["pid"] for r in runs}) == PROCESSES  # each run in its own process
    granted = sorted(t for r in runs for t in r["granted"])
    print(f"granted per process: {[len(r['granted']) for r in runs]}, total {len(granted)}")
    assert len(granted) <= RATE * SECONDS + BURST
    assert len(granted) >= 0.8 * RATE * SECONDS
    assert sum(1 for r in runs if r["granted"]) >= 2  # they did race: more than one process won slots
    window = 1_000_000  # µs
    for i, first in enumerate(granted):
        in_window = sum(1 for t in granted[i:] if t <= first + window)
        assert in_window <= RATE + BURST, f"{in_window} grants in the second from {first}"
