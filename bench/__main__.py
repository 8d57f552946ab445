"""`make bench`: the figures of SPEC §9, one JSON line each, beside a bare Starlette endpoint.

`default` (bench.default) measures one `optline serve` as `make run` runs it (its in-process
sender, INFO logs) and the same with the sender off, on SQLite and PostgreSQL, with CPU and
statements per text. Every inbound figure is measured against the bare endpoint in the same run and reported as
a ratio too. optline runs as it would in production: `optline serve` (N processes, the
in-process sender off) plus one `optline worker` at a lower CPU priority, so on a 2-core
machine the webhooks are not starved by the sender; replies queue in the outbox and drain.
The inbound mix is measured with and without that worker running (see `inbound`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import sqlalchemy as sa

from bench import console, default, ledger, optout, rules, send
from bench.load import (
    LUA_DONE,
    Server,
    database,
    emit,
    free_port,
    mix,
    phone_number,
    signed_requests,
    tempdir,
    unthrottled_keywords,
    uvicorn_bare,
    write_script,
    wrk,
)
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, sign_twilio, twilio_inbound_params

ACME = "+15005550006"
WORKER_NICE = 10  # the outbox worker's (and the fake Twilio's) CPU priority: below `optline serve`'s


class Optline:
    """`optline serve` (+ a nice'd `optline worker`) on one database, sending to the fake Twilio."""

    def __init__(self, *, database_url: str, workers: int, fake: FakeTwilio, folder: Path, sender: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            OPTLINE_DATABASE_URL=database_url, OPTLINE_PUBLIC_URL=self.url, OPTLINE_PROVIDER="twilio",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, OPTLINE_TWILIO_API_URL=fake.url,
            OPTLINE_LOG_LEVEL="WARNING", OPTLINE_INPROCESS_WORKER="0",
            OPTLINE_KEYWORDS=str(unthrottled_keywords(folder)),
        )
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=self.env, check=True, capture_output=True)
        self.servers = [Server([sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--workers",
                                str(workers)], env=self.env, ready_url=f"{self.url}/readyz",
                               log=folder / f"serve-{self.port}.log")]
        if sender:
            self.servers.append(Server(["nice", "-n", str(WORKER_NICE), sys.executable, "-m", "app.cli", "worker"], env=self.env,
                                       ready_url=f"{self.url}/healthz", log=folder / f"worker-{self.port}.log"))

    def key(self, brand: str = "acme") -> str:
        out = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--brand", brand], env=self.env,
                             check=True, capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def post_text(client: httpx.Client, base: str, body: str, phone: str) -> int:
    params = twilio_inbound_params(Body=body, From=phone, To=ACME)
    signature = sign_twilio(base + "/webhooks/twilio", params)
    return client.post(base + "/webhooks/twilio", data=params, headers={"X-Twilio-Signature": signature}).status_code


class Probe:
    """Sends STOPs and YESes while the load runs and times their replies at the fake Twilio."""

    def __init__(self, base: str, fake: FakeTwilio, *, first_phone: int, count: int = 200):
        self.base = base
        self.fake = fake
        self.stop_phones = [phone_number(first_phone + i) for i in range(count)]
        self.yes_phones = [phone_number(first_phone + count + i) for i in range(count)]
        self.sent: dict[str, tuple[str, float]] = {}
        self._halt = threading.Event()
        with httpx.Client() as client:
            for phone in self.yes_phones:  # pending DOIs to confirm under load
                post_text(client, base, "JOIN", phone)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client() as client:
            for stop_phone, yes_phone in zip(self.stop_phones, self.yes_phones, strict=True):
                if self._halt.is_set():
                    break
                for body, phone in (("STOP", stop_phone), ("YES", yes_phone)):
                    started = time.time()
                    if post_text(client, self.base, body, phone) == 200:
                        self.sent[phone] = (body, started)
                self._halt.wait(0.1)

    def finish(self, timeout: float = 180.0) -> dict[str, list[float]]:
        """Each probe's reply latency; `unanswered`: replies still queued when `timeout` ran out after the load."""
        self._halt.set()
        self.thread.join()
        deadline = time.monotonic() + timeout
        latencies: dict[str, list[float]] = {"STOP": [], "YES": []}
        pending = dict(self.sent)
        while pending and time.monotonic() < deadline:
            for phone, (body, started) in list(pending.items()):
                replies = [m for m in self.fake.messages(to=phone) if m.received_at >= started]
                if replies:
                    latencies[body].append(replies[0].received_at - started)
                    del pending[phone]
            time.sleep(0.05)
        latencies["unanswered"] = [float(len(pending))]
        return latencies


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def inbound(engine_name: str, processes: int, args: argparse.Namespace, fake: FakeTwilio, folder: Path) -> None:
    """The mix twice: webhooks alone (the worker not running), then with the worker sending every reply.

    On a 2-core machine the second shares the CPU with the sends (the `twilio` library and the
    fake's HTTP server cost about as much per reply as optline does per text), so it is the
    first that measures the webhook path; the reply latencies come from the second.
    """
    port = free_port()
    bare = uvicorn_bare(port, processes, folder / "bare.log")
    try:
        script = write_script(signed_requests(f"http://127.0.0.1:{port}", mix(args.phones, ACME)), folder, "bare")
        base = wrk(f"http://127.0.0.1:{port}", script, connections=args.connections, seconds=args.seconds)
    finally:
        bare.stop()
    for sender in (False, True):
        with database(engine_name, folder, f"in{processes}{'s' if sender else 'w'}") as url:
            if url is None:
                return
            app = Optline(database_url=url, workers=processes, fake=fake, folder=folder, sender=sender)
            try:
                script = write_script(signed_requests(app.url, mix(args.phones, ACME)), folder, "optline")
                probe = Probe(app.url, fake, first_phone=7_000_000 + processes * 100_000) if sender else None
                if probe is not None:
                    probe.start()
                got = wrk(app.url, script, connections=args.connections, seconds=args.seconds)
                latencies = probe.finish() if probe is not None else None
            finally:
                app.stop()
        emit(figure="inbound_mix", engine=engine_name, processes=processes, sending=sender,
             connections=args.connections, rps=got["rps"], p50_ms=got["p50_ms"], p99_ms=got["p99_ms"],
             non2xx=got["non2xx"], errors=got["errors"], bare_rps=base["rps"], bare_p99_ms=base["p99_ms"],
             ratio=round(got["rps"] / base["rps"], 3))
        if latencies is None:
            continue
        for kind in ("STOP", "YES"):
            emit(figure="reply_latency", trigger=kind, engine=engine_name, processes=processes,
                 p50_ms=pct(latencies[kind], 0.5), p99_ms=pct(latencies[kind], 0.99), samples=len(latencies[kind]),
                 unanswered=int(latencies["unanswered"][0]))


def burst(args: argparse.Namespace, fake: FakeTwilio, folder: Path) -> None:
    count = args.burst
    with database("sqlite", folder, "burst") as url:
        assert url is not None
        app = Optline(database_url=url, workers=1, fake=fake, folder=folder)
        try:
            first = 5_000_000
            texts = [(phone_number(first + n), ACME, "JOIN") for n in range(count)]
            script = write_script(signed_requests(app.url, texts), folder, "burst")
            # Each request once: wrk calls request() once before the run (and drops it), so the
            # index starts at 0; the thread stops itself after the last answer.
            script.write_text(script.read_text().replace(
                "local n = -1", f"local n = -1\nlocal answered = 0\nresponse = function(status, headers, body)\n"
                f"  answered = answered + 1\n  if answered >= {count} then wrk.thread:stop() end\nend").replace(
                "local r = reqs[((n - 1) % #reqs) + 1]", "local r = reqs[math.max(1, math.min(n, #reqs))]"))
            engine = sa.create_engine(url)

            def all_stored() -> bool:
                with engine.connect() as conn:
                    return (conn.execute(sa.text("SELECT count(*) FROM inbound_messages")).scalar() or 0) >= count

            started = time.monotonic()
            got = wrk(app.url, script, connections=args.connections, seconds=600, until=all_stored)
            webhooks_done = time.monotonic() - started
            engine.dispose()
            phones = {t[0] for t in texts}
            deadline = time.monotonic() + args.burst_timeout
            sent = 0
            while time.monotonic() < deadline:
                sent = len({m.to for m in fake.messages() if m.to in phones})
                if sent >= count:
                    break
                time.sleep(0.5)
            all_sent = time.monotonic() - started
        finally:
            app.stop()
    emit(figure="join_burst", joins=count, non2xx=got["non2xx"], errors=got["errors"],
         webhooks_seconds=round(webhooks_done, 1), rps=round(got["requests"] / webhooks_done, 1),
         prompts_sent=sent, all_prompts_seconds=round(all_sent, 1) if sent >= count else None)


def api(args: argparse.Namespace, fake: FakeTwilio, folder: Path) -> None:
    with database("sqlite", folder, "api") as url:
        assert url is not None
        app = Optline(database_url=url, workers=1, fake=fake, folder=folder, sender=False)
        try:
            key = app.key()
            single = [json.dumps({"externalId": f"crm-{n}", "phoneNumber": phone_number(3_000_000 + n),
                                  "firstName": "Ada", "attributes": {"plan": "gold", "n": n}}) for n in range(60_000)]
            got = wrk_json(app.url, "/v1/profiles", single, key, folder, "single", args)
            emit(figure="api_upserts", mode="single", per_second=got["rps"], p99_ms=got["p99_ms"],
                 non2xx=got["non2xx"])
            batches = [json.dumps({"items": [{"externalId": f"bulk-{b}-{i}", "phoneNumber": phone_number(
                4_000_000 + b * 1000 + i), "attributes": {"b": b}} for i in range(1000)]}) for b in range(60)]
            got = wrk_json(app.url, "/v1/profiles/batch", batches, key, folder, "batch", args, connections=2)
            emit(figure="api_upserts", mode="batch_1000", per_second=round(got["rps"] * 1000, 1),
                 requests=got["requests"], p99_ms=got["p99_ms"], non2xx=got["non2xx"])
            list_pages(app, key, url, args)
        finally:
            app.stop()


def wrk_json(base: str, path: str, bodies: list[str], key: str, folder: Path, name: str, args: argparse.Namespace,
             connections: int | None = None) -> dict[str, float]:
    data = folder / f"{name}.tsv"
    data.write_text("".join(f"{path}\t\t{body}\n" for body in bodies))
    script = folder / f"{name}.lua"
    script.write_text(f"""
local reqs = {{}}
for line in io.lines("{data}") do
  local path, _, body = line:match("([^\\t]*)\\t([^\\t]*)\\t(.*)")
  reqs[#reqs + 1] = {{path, body}}
end
local n = 0
local headers = {{["Content-Type"] = "application/json", ["x-api-key"] = "{key}"}}
request = function()
  n = n + 1
  local r = reqs[((n - 1) % #reqs) + 1]
  return wrk.format("POST", r[1], headers, r[2])
end
""" + LUA_DONE.replace("%%", "%"))
    return wrk(base, script, connections=connections or args.connections, seconds=args.seconds)


def list_pages(app: Optline, key: str, url: str, args: argparse.Namespace) -> None:
    """Time list pages at the start and at the end of 10k, then of 1M profiles (keyset paging stays flat)."""
    from app.settings import load_settings
    from app.web.api import encode_cursor

    engine = sa.create_engine(url)
    headers = {"x-api-key": key}
    with httpx.Client(base_url=app.url, headers=headers, timeout=30) as client:
        for total in (10_000, args.profiles):
            fill_profiles(engine, total)
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT updated_at, id FROM profiles WHERE brand = 'acme' "
                                            "ORDER BY updated_at, id LIMIT 1 OFFSET :o"), {"o": total - 200}).first()
            # Signed with the servers' key: they read OPTLINE_SECRET_KEY (or var/secret.key) as we do.
            deep = encode_cursor([str(rows[0]).replace(" ", "T") + "+00:00", rows[1]], load_settings())
            for where, cursor in (("first", None), ("last", deep)):
                times = []
                for _ in range(30):
                    started = time.perf_counter()
                    response = client.get("/v1/profiles", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                emit(figure="list_page", profiles=total, page=where, limit=100,
                     p50_ms=round(statistics.median(times) * 1000, 2), p99_ms=pct(times, 0.99))
    engine.dispose()


def fill_profiles(engine: sa.Engine, total: int) -> None:
    """Bring acme's profile count up to `total` with plain inserts (the API path is measured elsewhere)."""
    with engine.begin() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM profiles WHERE brand = 'acme'")).scalar() or 0
        chunk = 20_000
        for start in range(have, total, chunk):
            rows = [{"id": f"prof_bench{n:018d}", "phone": phone_number(1_000_000 + n), "ext": f"fill-{n}",
                     "ts": f"2026-01-01 00:00:{n % 60:02d}.{n:06d}"[:26]} for n in range(start, min(total, start + chunk))]
            conn.execute(sa.text(
                "INSERT INTO profiles (id, brand, external_id, phone, attributes, created_at, updated_at)"
                " VALUES (:id, 'acme', :ext, :phone, '{}', :ts, :ts)"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--phones", type=int, default=8000, help="distinct phones in the mix (5 texts each)")
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--burst-timeout", type=float, default=240.0)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--sends", type=int, default=3000, help="texts each send figure posts")
    parser.add_argument("--send-timeout", type=float, default=60.0)
    parser.add_argument("--console-subscriptions", type=int, default=1_000_000,
                        help="subscriptions the console figure loads (default: 1,000,000)")
    parser.add_argument("--console-events", type=int, default=10_000_000,
                        help="consent events the console figure loads (default: 10,000,000)")
    parser.add_argument("--console-requests", type=int, default=20, help="requests of each console page")
    sections = ["default", "inbound", "burst", "api", "send", "rules", "optout", "ledger", "console"]
    parser.add_argument("--only", nargs="*", default=sections, choices=sections)
    parser.add_argument("--engines", nargs="*", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    if args.only == ["optout"]:  # pure: no servers, no fake Twilio
        optout.run()
        return
    if args.only == ["ledger"]:  # no servers either
        ledger.run(args.engines, tempdir())
        return
    folder = tempdir()
    emit(bench="optline", cores=os.cpu_count(), seconds=args.seconds, connections=args.connections, folder=str(folder))
    if "default" in args.only:
        default.run(args, folder)
    if {"inbound", "burst", "api"} & set(args.only):
        fake = FakeTwilio()
        # Twilio is a remote service: its stand-in runs at the worker's low priority, so the
        # figures measure optline's webhooks rather than the fake's own HTTP server.
        fake.nice = WORKER_NICE
        with fake:
            if "inbound" in args.only:
                for engine_name in args.engines:
                    for processes in (1, 2):
                        inbound(engine_name, processes, args, fake, folder)
            if "burst" in args.only:
                burst(args, fake, folder)
            if "api" in args.only:
                api(args, fake, folder)
    if "send" in args.only:  # its own, faster fake Twilio (see bench.send)
        send.run(args, folder)
    if "rules" in args.only:  # the send check and opt-out imports (see bench.rules)
        rules.run(args, folder)
    if "optout" in args.only:
        optout.run()
    if "ledger" in args.only:
        ledger.run(args.engines, folder)
    if "console" in args.only:  # a database of each engine filled to 1M subscriptions and 10M events
        console.run(args, folder)


if __name__ == "__main__":
    main()
