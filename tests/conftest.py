"""Shared fixtures: real databases (SQLite always, PostgreSQL when OPTLINE_TEST_DATABASE_URL is set),
a fake clock, the fake Twilio API and a running gateway wired to them.

Each test gets its own SQLite file (copied from a template migrated once) or a freshly
truncated PostgreSQL database created for this test session, so tests leave nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from app.keywords import Rules, load_rules
from app.logs import setup_logging
from app.main import create_app
from app.migrate import upgrade
from app.settings import PROJECT_ROOT, Settings
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, sign_twilio, twilio_inbound_params, twilio_status_params
from tests.fake_twilio import fake_twilio  # noqa: F401 - the fixture, shared by every test module

PG_URL = os.environ.get("OPTLINE_TEST_DATABASE_URL")
PUBLIC_URL = "https://optline.example.test"
KEYWORDS = PROJECT_ROOT / "keywords.yaml"
ACME = "+15005550006"  # acme's shared sender (deals + news)
# A long code may send 1 text a second. The tests' clock stands still unless a test moves it,
# so a second text from one sender would wait for ever: the gateways the fixtures build use
# the repository's keywords.yaml with every plain sender given this rate (a test that brings
# its own file passes it through `unlimited` when it needs the same).
TEST_RATE = 10_000
_SENDERS_LINE = re.compile(r'^(?P<head>\s*senders:\s*)\[(?P<items>[^\]{}#]*)\](?P<tail>\s*(#.*)?)$', re.M)
_UNLIMITED = Path(tempfile.mkdtemp(prefix="optline-keywords-"))


def unlimited(path: str | Path) -> str:
    """A copy of keywords file `path` whose plain senders send TEST_RATE texts a second; lines keep their numbers."""
    source = Path(path)
    text = source.read_text(encoding="utf-8")

    def rated(match: re.Match[str]) -> str:
        items = [item.strip() for item in match["items"].split(",") if item.strip()]
        maps = ", ".join(f"{{id: {item}, rate: {TEST_RATE}}}" for item in items)
        return f"{match['head']}[{maps}]{match['tail']}"

    target = _UNLIMITED / f"{abs(hash((str(source.resolve()), text)))}-{source.name}"
    if not target.exists():
        target.write_text(_SENDERS_LINE.sub(rated, text), encoding="utf-8")
    return str(target)



class _Sink(io.StringIO):
    """Where the product's JSON log lines go in tests: formatted in full (a bad log call fails), then dropped."""

    def write(self, text: str) -> int:
        return len(text)


def _raise_logging_error(_record: logging.LogRecord) -> None:
    """A log line that cannot be formatted fails the test (logging would print it and go on)."""
    raise  # noqa: PLE0704 - called by logging inside its `except`, with the error being handled


@pytest.fixture(scope="session", autouse=True)
def product_logging() -> Iterator[None]:
    """The product's default logging (INFO, its JSON lines with numbers masked) in every in-process gateway.

    A log call that fails only when INFO is on (a missing attribute in its arguments, a bad format)
    fails the request it is in, as it would for users; tests that read records use caplog as usual.
    """
    root = logging.getLogger()
    level = root.level
    setup_logging("INFO")
    handlers = [h for h in root.handlers if getattr(h, "_optline", False)]
    for handler in handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(_Sink())
        handler.handleError = _raise_logging_error  # type: ignore[method-assign]
    yield
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextlib.contextmanager
def new_pg_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database, migrated, dropped afterwards; its URL."""
    if not PG_URL:
        pytest.skip("OPTLINE_TEST_DATABASE_URL is not set")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    with new_pg_database("optline_test") as url:
        yield url


@pytest.fixture
def unanalysed_pg_url() -> Iterator[str]:
    """A new, migrated PostgreSQL database whose tables have no statistics (autovacuum kept off them)."""
    with new_pg_database("optline_plans") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for table in ("inbound_messages", "subscriptions", "outbox"):
                conn.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        engine.dispose()
        yield url


def explain_plans(conn: sa.Connection, plans: list[str]) -> None:
    """Collect the plan of every statement `conn` runs in this transaction (auto_explain, as notices).

    Every statement is prepared and planned generically, as psycopg does from its fifth run on.
    """
    driver = conn.connection.driver_connection
    driver.prepare_threshold = 0
    driver.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    for setting in ("LOAD 'auto_explain'", "SET LOCAL auto_explain.log_min_duration = 0",
                    "SET LOCAL auto_explain.log_level = notice", "SET LOCAL plan_cache_mode = force_generic_plan"):
        conn.exec_driver_sql(setting)


def _truncate(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))]
        # TRUNCATE fires no row triggers, so the append-only ledger can be emptied between tests.
        conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database of each engine."""
    if request.param == "sqlite":
        path = tmp_path / "optline.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_session_url")
    _truncate(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty SQLite database (for tests that are about one engine only)."""
    path = tmp_path / "optline.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


class FakeClock:
    """A clock tests move by hand; starts at real time so the fake Twilio's timestamps agree."""

    def __init__(self) -> None:
        self._now = self.start = datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self._now += timedelta(microseconds=1)  # strictly increasing, like real time
            return self._now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules(unlimited(KEYWORDS))


def make_settings(database_url: str, fake: FakeTwilio, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "keywords": unlimited(KEYWORDS),
        "public_url": PUBLIC_URL,
        "provider": "twilio",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_api_url": fake.url,
        "poll_seconds": 0.05,
        "retry_base_seconds": 0.05,
        "retry_cap_seconds": 0.2,
        "lease_seconds": 30.0,
        # Each test's spool lives beside its database, never in the repository's var/.
        "spool_dir": str(Path(tempfile.mkdtemp(prefix="optline-spool-"))),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Gateway:
    """A running optline (lifespan started) with helpers that talk to it the way Twilio does."""

    client: TestClient
    fake: FakeTwilio
    clock: FakeClock
    settings: Settings

    @property
    def state(self) -> Any:
        return self.client.app.state.optline  # type: ignore[attr-defined]

    def post_signed(self, path: str, params: dict[str, str], **headers: str) -> Any:
        url = PUBLIC_URL + path
        signed = {"X-Twilio-Signature": sign_twilio(url, params)}
        signed.update(headers)
        return self.client.post(path, data=params, headers=signed)

    def text(self, body: str, *, from_: str = "+14155550123", to: str = ACME, **extra: str | None) -> Any:
        """Post one signed inbound SMS; returns the response."""
        params = twilio_inbound_params(Body=body, From=from_, To=to, **extra)
        response = self.post_signed("/webhooks/twilio", params)
        response.params = params  # type: ignore[attr-defined]
        return response

    def status(self, message_sid: str, status: str, **extra: str | None) -> Any:
        return self.post_signed("/webhooks/twilio/status", twilio_status_params(message_sid, status, **extra))

    def drain(self, timeout: float = 5.0, *, advance: float = 0.0) -> None:
        """Wait until no outbox row is due or being sent.

        `advance` moves the fake clock that many seconds each poll, so retries waiting out
        their backoff come due (keep it above the retry cap and far below the lease).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.query("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'dispatching')")[0][0]
            if left == 0:
                return
            if advance:
                self.clock.advance(seconds=advance)
            time.sleep(0.02)
        raise AssertionError(f"outbox did not drain: {self.query('SELECT id, status, attempts FROM outbox')}")

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.state.reader.connect() as conn:
            return conn.execute(sa.text(sql), params).all()

    def subs(self, phone: str) -> dict[str, str]:
        rows = self.query("SELECT program, status FROM subscriptions WHERE phone = :p", p=phone)
        return {r.program: r.status for r in rows}

    def replies(self, to: str) -> list[str]:
        return [m.body for m in self.fake.messages(to=to)]


@pytest.fixture
def gateway_factory(fake_twilio: FakeTwilio, clock: FakeClock) -> Iterator[Callable[..., Gateway]]:
    """Build gateways on a database URL (started; closed after the test)."""
    opened: list[TestClient] = []

    def build(database_url: str, **overrides: Any) -> Gateway:
        settings = make_settings(database_url, fake_twilio, **overrides)
        client = TestClient(create_app(settings, clock=clock), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return Gateway(client=client, fake=fake_twilio, clock=clock, settings=settings)

    yield build
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], database_url: str) -> Gateway:
    """optline on each database, sending to the fake Twilio."""
    return gateway_factory(database_url)
