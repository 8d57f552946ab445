"""`python -m bench --only send`: the sends/s of one `optline worker`, beside a bare async client.

Both post to the same fake Twilio (`bench.fake_api`, its own uvicorn process: the test fake's
thread-per-connection server tops out near 3,000 creates/s, below what a bare client posts),
and both are timed the same way, from the first to the last create the fake received:

- bare: N message creates straight from an async HTTP client (aiohttp, the transport under
  twilio's async client, and httpx2), with the form and headers the twilio library sends, as
  many in flight as the worker sends (OPTLINE_SEND_CONCURRENCY, 8 by default) and 32;
- worker: N replies queued as pending outbox rows to N distinct phones of the `deals` program
  in a freshly migrated database, then the real `optline worker` (Twilio provider, the
  program's sender allowed BENCH_RATE texts a second rather than a long code's one) started
  and left to send them all, at both concurrencies on SQLite; at the default (32) on PostgreSQL when it can
  be reached. `ratio` is the worker's rate over aiohttp's at the same concurrency.

Each figure also carries the CPU each side spent per send (from /proc, Linux): on a 2-core
machine the worker, the fake and PostgreSQL share the cores, so CPU per send is what moves
the rate, and it is steadier than the rate when other work shares the machine (`load1`, the
load average as the figure was taken, tells). The worker's CPU is counted from its first
send to its last, without start-up; `cpu_ratio` is aiohttp's CPU per send over the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa
from twilio import __version__ as TWILIO_VERSION

from app.db import utcnow
from app.keywords import load_rules
from app.models import outbox
from app.outbox.queue import sms_row
from app.settings import PROJECT_ROOT
from bench.load import Server, database, emit, free_port, phone_number, unthrottled_keywords
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN

BRAND, PROGRAM = "acme", "deals"
PUBLIC_URL = "https://optline.example"
STATUS_CALLBACK = PUBLIC_URL + "/webhooks/twilio/status"  # what the worker asks Twilio to call
FIRST_PHONE = 6_000_000  # phone_number(FIRST_PHONE + i): distinct phones, none the other sections use
CONCURRENCIES = (32, 8)  # OPTLINE_SEND_CONCURRENCY's default, and fewer in flight
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP = 300  # creates each bare client posts before it is timed

# The headers twilio's client sets on every request (twilio.base.client_base.ClientBase.get_headers).
LIBRARY_HEADERS = {
    "User-Agent": f"twilio-python/{TWILIO_VERSION} ({platform.system()} {platform.machine()})"
                  f" Python/{platform.python_version()}",
    "X-Twilio-Client": f"python-{TWILIO_VERSION}",
    "Accept-Charset": "utf-8",
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode(),
}


@dataclass(frozen=True)
class Reply:
    """The text every queued row carries: the program's welcome, from its first sender."""

    sender: str
    body: str

    @classmethod
    def configured(cls) -> Reply:
        rules = load_rules(str(PROJECT_ROOT / "keywords.yaml"))
        body = rules.render(BRAND, PROGRAM, "welcome", None)
        assert body is not None
        return cls(sender=rules.program(BRAND, PROGRAM).senders[0], body=body)

    def form(self, n: int) -> dict[str, str]:
        """The form the twilio library posts for the n-th text, in its field order."""
        return {"To": phone_number(FIRST_PHONE + n), "StatusCallback": STATUS_CALLBACK, "From": self.sender,
                "Body": self.body}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc), None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class FastFake:
    """`bench.fake_api` under uvicorn, in its own process."""

    def __init__(self, folder: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.server = Server([sys.executable, "-m", "uvicorn", "bench.fake_api:app", "--host", "127.0.0.1",
                              "--port", port, "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                              "--no-access-log"], env=dict(os.environ), ready_url=f"{self.url}/_bench/stats",
                             log=folder / "fake-api.log")
        self.client = httpx.Client(base_url=self.url, timeout=10)

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def stats(self) -> dict[str, Any]:
        return dict(self.client.get("/_bench/stats").json())

    def reset(self) -> None:
        self.client.post("/_bench/reset").raise_for_status()

    def stop(self) -> None:
        self.client.close()
        self.server.stop()


def per_second(stats: dict[str, Any]) -> float:
    """Creates per second from the first to the last the fake received."""
    span = (stats["last"] or 0.0) - (stats["first"] or 0.0)
    return round((stats["created"] - 1) / span, 1) if span > 0 else 0.0


# --- the bare client -------------------------------------------------------------------


async def _post_aiohttp(url: str, forms: list[dict[str, str]], concurrency: int) -> int:
    import aiohttp  # twilio's dependency (its async client); imported here, as only this section needs it

    path = f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    todo = iter(forms)
    failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=LIBRARY_HEADERS) as session:
        async def one_connection() -> None:
            nonlocal failed
            for form in todo:
                async with session.post(path, data=form) as response:
                    await response.json()
                    failed += response.status != 201

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return failed


async def _post_httpx(url: str, forms: list[dict[str, str]], concurrency: int) -> int:
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    todo = iter(forms)
    failed = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=LIBRARY_HEADERS, limits=limits, timeout=10) as client:
        async def one_connection() -> None:
            nonlocal failed
            for form in todo:
                response = await client.post(path, data=form)
                response.json()
                failed += response.status_code != 201

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return failed


BARE_CLIENTS = {"aiohttp": _post_aiohttp, "httpx2": _post_httpx}


def bare(fake: FastFake, reply: Reply, *, client: str, sends: int, concurrency: int) -> dict[str, Any]:
    """The bare client's figure: sends/s, and CPU per send of the client (this process) and the fake."""
    forms = [reply.form(n) for n in range(sends)]
    fake.reset()
    fake_cpu, own_cpu = cpu_seconds(fake.pid), time.process_time()
    failed = asyncio.run(BARE_CLIENTS[client](fake.url, forms, concurrency))
    own_cpu = time.process_time() - own_cpu
    fake_after = cpu_seconds(fake.pid)
    stats = fake.stats()
    return {"client": client, "concurrency": concurrency, "sends": stats["created"], "failed": failed,
            "load1": round(os.getloadavg()[0], 2),
            "per_second": per_second(stats), "client_cpu_us": round(own_cpu / sends * 1e6),
            "fake_cpu_us": _per_send(fake_cpu, fake_after, sends)}


def _per_send(before: float | None, after: float | None, sends: int) -> int | None:
    return None if before is None or after is None or not sends else round((after - before) / sends * 1e6)


# --- the worker --------------------------------------------------------------------------


def queue_replies(url: str, reply: Reply, sends: int) -> None:
    """`sends` pending welcome texts to distinct phones of the program, due now."""
    now = utcnow() - timedelta(seconds=1)
    rows = [sms_row(now=now, brand=BRAND, program=PROGRAM, phone=phone_number(FIRST_PHONE + n), body=reply.body,
                    purpose="welcome", from_number=reply.sender, service_id=None) for n in range(sends)]
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(outbox.insert(), rows)
    finally:
        engine.dispose()


def worker(fake: FastFake, reply: Reply, *, url: str, sends: int, concurrency: int, folder: Path,
           timeout: float) -> dict[str, Any]:
    """Run `optline worker` on a database holding `sends` due replies until the fake has them all."""
    env = dict(os.environ)
    env.update(
        OPTLINE_DATABASE_URL=url, OPTLINE_PROVIDER="twilio", TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN, OPTLINE_TWILIO_API_URL=fake.url, OPTLINE_PUBLIC_URL=PUBLIC_URL,
        OPTLINE_SEND_CONCURRENCY=str(concurrency), OPTLINE_RUN_DIR=str(folder / "run"),
        OPTLINE_SPOOL_DIR=str(folder / "spool"), OPTLINE_KEYWORDS=str(unthrottled_keywords(folder)),
    )
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True)
    queue_replies(url, reply, sends)
    fake.reset()
    log_path = folder / f"worker-send-{concurrency}-{url.split(':', 1)[0]}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        fake_cpu: list[float | None] = [None, None]
        worker_cpu: list[float | None] = [None, None]
        sampled_at = 0  # sends the fake had when the CPU was first sampled
        deadline = time.monotonic() + timeout
        stats = fake.stats()
        try:
            while stats["created"] < sends and proc.poll() is None and time.monotonic() < deadline:
                if worker_cpu[0] is None and stats["created"]:
                    worker_cpu[0], fake_cpu[0] = cpu_seconds(proc.pid), cpu_seconds(fake.pid)
                    sampled_at = stats["created"]
                time.sleep(0.05)
                stats = fake.stats()
            worker_cpu[1], fake_cpu[1] = cpu_seconds(proc.pid), cpu_seconds(fake.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            queued = conn.execute(sa.text("SELECT count(*) FROM outbox WHERE status = 'queued'")).scalar()
    finally:
        engine.dispose()
    # The CPU between the two samples went to the sends the fake received between them.
    between = stats["created"] - sampled_at
    return {"sends": stats["created"], "recorded": queued, "per_second": per_second(stats),
            "load1": round(os.getloadavg()[0], 2),
            "worker_cpu_us": _per_send(worker_cpu[0], worker_cpu[1], between),
            "fake_cpu_us": _per_send(fake_cpu[0], fake_cpu[1], between),
            "complete": stats["created"] >= sends, "log": str(log_path)}


def run(args: argparse.Namespace, folder: Path) -> None:
    """Bare figures, the worker on each engine, then the aiohttp figures again.

    The machine is shared (two cores, other work on them): load only ever lowers a figure, so
    each ratio divides by the better of the bare runs around the worker's.
    """
    reply = Reply.configured()
    fake = FastFake(folder)
    try:
        best: dict[tuple[str, int], float] = {}
        bare_cpu: dict[int, int] = {}  # aiohttp's least CPU per send, by concurrency

        def measure_bare(clients: list[str]) -> None:
            for concurrency in CONCURRENCIES:
                for client in clients:
                    if client == "httpx2" and concurrency != CONCURRENCIES[0]:
                        continue  # slower with more connections (1,540/s at 32 against 1,250 at 8): time saved
                    got = bare(fake, reply, client=client, sends=args.sends, concurrency=concurrency)
                    emit(figure="send_bare", **got)
                    best[(client, concurrency)] = max(best.get((client, concurrency), 0.0), got["per_second"])
                    if client == "aiohttp":
                        bare_cpu[concurrency] = min(bare_cpu.get(concurrency, got["client_cpu_us"]), got["client_cpu_us"])

        for post in BARE_CLIENTS.values():  # first connections, imports and code paths off the clock
            asyncio.run(post(fake.url, [reply.form(n) for n in range(WARM_UP)], CONCURRENCIES[0]))
        measure_bare(list(BARE_CLIENTS))
        runs: list[tuple[str, int, dict[str, Any]]] = []
        for engine_name in args.engines:
            # PostgreSQL at the default concurrency only: the section stays under a minute.
            for concurrency in CONCURRENCIES if engine_name == "sqlite" else CONCURRENCIES[:1]:
                with database(engine_name, folder, f"send{concurrency}") as url:
                    if url is None:
                        break
                    runs.append((engine_name, concurrency, worker(
                        fake, reply, url=url, sends=args.sends, concurrency=concurrency, folder=folder,
                        timeout=args.send_timeout)))
        measure_bare(["aiohttp"])
        for engine_name, concurrency, got in runs:
            base, base_httpx = best[("aiohttp", concurrency)], best.get(("httpx2", concurrency))
            # What the ratio would be if each side had a core to itself: bare client CPU over
            # worker CPU per send (steadier than the rates when other work shares the machine).
            cpu_ratio = (round(bare_cpu[concurrency] / got["worker_cpu_us"], 3)
                         if got["worker_cpu_us"] and concurrency in bare_cpu else None)
            emit(figure="send_worker", engine=engine_name, concurrency=concurrency, **got, bare_per_second=base,
                 ratio=round(got["per_second"] / base, 3) if base else None, bare_httpx2_per_second=base_httpx,
                 ratio_httpx2=round(got["per_second"] / base_httpx, 3) if base_httpx else None, cpu_ratio=cpu_ratio)
    finally:
        fake.stop()
