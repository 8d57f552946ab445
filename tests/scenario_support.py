"""Helpers for the scenario tests: real `optline serve` / `optline worker` processes on PostgreSQL.

Everything here is bounded: every wait has a deadline, every process started is registered
and SIGKILLed at teardown (by its own pid), and everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import sqlalchemy as sa

from app.migrate import upgrade
from app.settings import PROJECT_ROOT
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, sign_twilio, twilio_inbound_params
from tests.conftest import unlimited

T = TypeVar("T")

ACME = "+15005550006"  # acme's shared sender: deals (JOIN) and news
KEYWORDS = PROJECT_ROOT / "keywords.yaml"
READY_SECONDS = 30.0  # start-up budget of one process (imports, engine, lifespan)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = "condition",
               detail: Callable[[], str] | None = None) -> T:
    """Poll `predicate` until it returns something truthy; AssertionError (with `detail()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


# --- databases --------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database on the server of `admin_url`; dropped (FORCE) afterwards."""
    name = f"optline_scn_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class Db:
    """Read-only looks at the database the processes share (the test's own engine)."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True,
                                       connect_args={"connect_timeout": 3})

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def outbox_by_status(self) -> dict[str, int]:
        """How many SMS outbox rows are in each status."""
        return {r[0]: r[1] for r in self.rows("SELECT status, count(*) FROM outbox WHERE channel = 'sms' GROUP BY 1")}

    def outbox_settled(self) -> bool:
        """True when no SMS row is due or being sent."""
        counts = self.outbox_by_status()
        return not counts.get("pending") and not counts.get("sending") and not counts.get("dispatching")

    def close(self) -> None:
        self.engine.dispose()


# --- a private PostgreSQL cluster (for the test that stops PostgreSQL) ------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on its own port; never the machine's own.

    initdb refuses to run as root, so as root every pg binary runs as the `postgres` OS user
    (runuser), in a folder that user owns.
    """

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="optline-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_user: list[str] = []
        if os.getuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.root.chmod(0o700)
        self.running = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}\n"
                               f"{self.log_tail()}")

    def init(self) -> None:
        """initdb (trust auth, no fsync of the initial files: it is thrown away)."""
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=50"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop it (`fast`: roll back open transactions, cut every client, shut down cleanly)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def pids(self) -> list[int]:
        """The postmaster and its children (this cluster's processes only)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, timeout=10).stdout
        return [postmaster, *(int(pid) for pid in children.split())]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP every process of this cluster (a hung server, a partitioned network); SIGCONT after."""
        pids = self.pids()
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop (immediate) if running and remove the folder."""
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --- optline processes ------------------------------------------------------------------


@dataclass
class Proc:
    """One optline process started by the test."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} serves no HTTP"
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def output(self, lines: int = 40, chars: int = 8000) -> str:
        """The tail of the process's log (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.name} (pid {self.pid}) ---\n" + "\n".join(text.splitlines()[-lines:])[-chars:]


@dataclass
class Processes:
    """Starts optline processes against one database and one fake Twilio; `close()` kills them all."""

    database_url: str
    fake: FakeTwilio
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    started: list[Proc] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a process: the test's own, minus any OPTLINE_/TWILIO_ variable, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTLINE_", "TWILIO_"))}
        env.update(
            PYTHONPATH=str(PROJECT_ROOT),
            OPTLINE_DATABASE_URL=self.database_url,
            OPTLINE_KEYWORDS=unlimited(KEYWORDS),
            OPTLINE_PROVIDER="twilio",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            OPTLINE_TWILIO_API_URL=self.fake.url,
            OPTLINE_LEASE_SECONDS="3",
            OPTLINE_POLL_SECONDS="0.1",
            OPTLINE_RETRY_BASE_SECONDS="0.1",
            OPTLINE_RETRY_CAP_SECONDS="1",
            OPTLINE_SPOOL_DIR=str(self.workdir / "spool"),
            # A worker needs a public URL too (its sends name the status callback); a server
            # started by `serve` gets its own address instead.
            OPTLINE_PUBLIC_URL="https://optline.example.test",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str], port: int | None) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        proc = Proc(name=name, popen=popen, log_path=log_path, port=port)
        self.started.append(proc)
        return proc

    def serve(self, name: str, *, inprocess_worker: bool, port: int | None = None, wait: bool = True,
              **env: str) -> Proc:
        """`optline serve` on 127.0.0.1 (its public URL is its own address); waits for /readyz."""
        port = port or free_port()
        environ = self.env(OPTLINE_PUBLIC_URL=f"http://127.0.0.1:{port}",
                           OPTLINE_INPROCESS_WORKER="1" if inprocess_worker else "0", **env)
        proc = self._spawn(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], environ, port)
        if wait:
            wait_ready(proc)
        return proc

    def worker(self, name: str, **env: str) -> Proc:
        """`optline worker` (no HTTP: it is ready when it claims)."""
        return self._spawn(name, ["worker"], self.env(**env), None)

    def logs(self) -> str:
        return "\n".join(proc.output() for proc in self.started)

    def close(self) -> None:
        """SIGKILL every process still running and reap it."""
        for proc in self.started:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.popen.pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)


def wait_ready(proc: Proc, timeout: float = READY_SECONDS) -> None:
    """Poll GET /readyz until it answers 200; fails early if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode} before it was ready\n{proc.output()}")
        try:
            if httpx.get(proc.base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"{proc.name} not ready after {timeout}s\n{proc.output()}")
        time.sleep(0.1)


# --- texting the way Twilio does --------------------------------------------------------


def phones(block: int, count: int) -> list[str]:
    """`count` distinct, valid US numbers; `block` (200-999) keeps one test's numbers apart."""
    assert 200 <= block <= 999 and count <= 10_000
    return [f"+1415{block:03d}{i:04d}" for i in range(count)]


def signed_text(base_url: str, body: str, *, from_: str, to: str = ACME,
                message_sid: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(params, headers) of a signed inbound SMS webhook to the server at `base_url` (its public URL)."""
    extra = {"MessageSid": message_sid} if message_sid else {}  # None would drop the field
    params = twilio_inbound_params(Body=body, From=from_, To=to, **extra)
    return params, {"X-Twilio-Signature": sign_twilio(base_url + "/webhooks/twilio", params)}


def post_text(client: httpx.Client, base_url: str, body: str, *, from_: str, to: str = ACME,
              message_sid: str | None = None, timeout: float = 15.0) -> httpx.Response:
    """Post one signed inbound SMS to `base_url`; returns the response."""
    params, headers = signed_text(base_url, body, from_=from_, to=to, message_sid=message_sid)
    return client.post(base_url + "/webhooks/twilio", data=params, headers=headers, timeout=timeout)
