"""Load generation with wrk and pre-signed, Twilio-shaped requests (so the generator is never the limit),
and what every bench section shares: servers, fresh databases, one JSON line per figure."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import sqlalchemy as sa
import yaml

from tests.fake_twilio import sign_twilio, twilio_inbound_params

REPO = Path(__file__).resolve().parent.parent
# A long code may send one text a second (keywords.yaml's senders keep that default): the bench
# measures optline, not carrier pacing, so its processes read a copy whose senders may send this many.
BENCH_RATE = 10_000
_SENDERS_LIST = re.compile(r"^(?P<key>\s*senders:\s*)(?P<items>\[.*\])\s*$", re.M)

PG_ADMIN = os.environ.get("OPTLINE_BENCH_DATABASE_URL") or os.environ.get(
    "OPTLINE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

LUA_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

LUA_TEMPLATE = r"""
-- One request per line: path TAB signature TAB body (LuaJIT cannot hold 30k literal constants).
local reqs = {}
for line in io.lines("%(data)s") do
  local path, sig, body = line:match("([^\t]*)\t([^\t]*)\t(.*)")
  reqs[#reqs + 1] = {path, {["Content-Type"] = "application/x-www-form-urlencoded", ["X-Twilio-Signature"] = sig}, body}
end
-- wrk calls request() once as a thread starts and drops what it returns (wrk.c, thread_main):
-- counting from -1 makes that call build the last request, and the first sent is reqs[1].
local n = -1
request = function()
  n = n + 1
  local r = reqs[((n - 1) %% #reqs) + 1]
  return wrk.format("POST", r[1], r[2], r[3])
end
"""



@dataclass(frozen=True)
class Signed:
    path: str
    body: str
    signature: str


def signed_requests(base_url: str, texts: Iterable[tuple[str, str, str]], path: str = "/webhooks/twilio",
                    auth_token: str | None = None) -> list[Signed]:
    """(from, to, body) triples → form bodies signed for base_url + path."""
    out = []
    for from_, to, body in texts:
        params = twilio_inbound_params(Body=body, From=from_, To=to)
        kwargs = {"auth_token": auth_token} if auth_token else {}
        out.append(Signed(path, urlencode(params), sign_twilio(base_url + path, params, **kwargs)))
    return out


MIX_BLOCK = 200  # phones a block of the mix walks through, one text each, before their next text


def mix(phones: int, to: str, first_phone: int = 0) -> list[tuple[str, str, str]]:
    """JOIN, YES, HELP, STOP and an unmatched text for each of `phones` distinct phones, interleaved.

    In blocks of MIX_BLOCK phones: each block's JOINs, then their YESes, HELPs, STOPs and free
    texts, then the next block. Every stretch of a run is the whole mix (a run of 10 s covers
    a few blocks, not only the JOINs), and a phone's texts stay MIX_BLOCK requests apart, in
    order, so each lands after the one before it is answered.
    """
    texts = ["JOIN", "YES", "HELP", "STOP", "what time do you open tomorrow"]
    out = []
    for start in range(0, phones, MIX_BLOCK):
        block = range(start, min(phones, start + MIX_BLOCK))
        for body in texts:
            out.extend((phone_number(first_phone + n), to, body) for n in block)
    return out


def phone_number(n: int) -> str:
    """The n-th of 8 million valid, distinct US mobile-style numbers (exchanges 200-999 of area 415)."""
    return f"+1415{200 + (n // 10_000) % 800:03d}{n % 10_000:04d}"


def write_script(requests: list[Signed], folder: Path, name: str = "script") -> Path:
    """A wrk script that sends `requests` in order (wrapping around when it runs out)."""
    data = folder / f"{name}.tsv"
    with data.open("w") as fh:
        for r in requests:
            fh.write(f"{r.path}\t{r.signature}\t{r.body}\n")
    script = folder / f"{name}.lua"
    script.write_text(LUA_TEMPLATE % {"data": str(data)} + LUA_DONE.replace("%%", "%"))
    return script


def wrk(url: str, script: Path, *, connections: int, seconds: float, threads: int = 1,
        until: Callable[[], bool] | None = None) -> dict[str, float]:
    """Run wrk; returns requests/s and latency percentiles (ms).

    With `until`, wrk is interrupted (SIGINT: it stops and still reports) as soon as `until()`
    is true, polled every 0.2 s; `seconds` is then only the upper bound.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does this)")
    proc = subprocess.Popen(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if until is not None:
        while proc.poll() is None and not until():
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=seconds + 60)
    line = next((line for line in out.splitlines() if line.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {err or out}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    secs = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"], "rps": round(raw["requests"] / secs, 1), "non2xx": raw["non2xx"],
        "errors": raw["errors"], "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000, "seconds": secs,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process on 127.0.0.1, waited for on a URL and stopped with SIGTERM."""

    def __init__(self, args: list[str], *, env: dict[str, str], ready_url: str, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: see {log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def uvicorn_bare(port: int, workers: int, log: Path) -> Server:
    args = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
            "--no-access-log"]
    return Server(args, env=dict(os.environ), ready_url=f"http://127.0.0.1:{port}/", log=log)


def tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="optline-bench-"))


def emit(**figure: Any) -> None:
    print(json.dumps(figure), flush=True)


@contextmanager
def database(engine_name: str, folder: Path, tag: str) -> Iterator[str | None]:
    """A fresh database URL of that engine (None when PostgreSQL is not reachable)."""
    if engine_name == "sqlite":
        yield f"sqlite:///{folder / f'{tag}.db'}"
        return
    name = f"optline_bench_{tag}_{os.getpid()}"
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        emit(skipped=f"postgresql ({tag})", reason=str(exc.orig).splitlines()[0])
        yield None
        return
    try:
        yield sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def unthrottled_keywords(folder: Path) -> Path:
    """The repository's keywords.yaml with every listed sender given BENCH_RATE texts a second."""

    def rated(match: re.Match[str]) -> str:
        senders = [item if isinstance(item, dict) else {"id": item} for item in yaml.safe_load(match["items"])]
        return match["key"] + json.dumps([{**sender, "rate": BENCH_RATE} for sender in senders])  # JSON is YAML

    target = folder / "keywords-bench.yaml"
    target.write_text(_SENDERS_LIST.sub(rated, (REPO / "keywords.yaml").read_text(encoding="utf-8")), encoding="utf-8")
    return target
