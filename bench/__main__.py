"""`make bench`: SPEC §9 figures, one JSON line each, every one beside a bare Starlette endpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.load import Server, free_port, mix, signed_requests, tempdir, uvicorn_bare, write_script, wrk
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

ACME = "+15005550006"


def emit(**figure: object) -> None:
    print(json.dumps(figure), flush=True)


def optline_server(*, port: int, workers: int, database_url: str, fake_url: str, folder: Path) -> Server:
    env = dict(os.environ)
    env.update(
        OPTLINE_DATABASE_URL=database_url, OPTLINE_PUBLIC_URL=f"http://127.0.0.1:{port}", OPTLINE_PROVIDER="twilio",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, OPTLINE_TWILIO_API_URL=fake_url,
        OPTLINE_LOG_LEVEL="WARNING",
    )
    import subprocess

    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True)
    args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)]
    return Server(args, env=env, ready_url=f"http://127.0.0.1:{port}/readyz", log=folder / f"optline-{port}.log")


def inbound_case(*, engine: str, database_url: str, workers: int, connections: int, seconds: float,
                 phones: int, fake: FakeTwilio, folder: Path) -> None:
    port = free_port()
    bare = uvicorn_bare(port, workers, folder / "bare.log")
    try:
        script = write_script(signed_requests(f"http://127.0.0.1:{port}", mix(phones, ACME)), folder)
        base = wrk(f"http://127.0.0.1:{port}", script, connections=connections, seconds=seconds)
    finally:
        bare.stop()
    port = free_port()
    server = optline_server(port=port, workers=workers, database_url=database_url, fake_url=fake.url, folder=folder)
    try:
        script = write_script(signed_requests(f"http://127.0.0.1:{port}", mix(phones, ACME)), folder)
        got = wrk(f"http://127.0.0.1:{port}", script, connections=connections, seconds=seconds)
    finally:
        server.stop()
    emit(figure="inbound_mix", engine=engine, processes=workers, connections=connections,
         rps=got["rps"], p50_ms=got["p50_ms"], p99_ms=got["p99_ms"], non2xx=got["non2xx"], errors=got["errors"],
         bare_rps=base["rps"], bare_p99_ms=base["p99_ms"], ratio=round(got["rps"] / base["rps"], 3),
         requests=got["requests"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--phones", type=int, default=8000, help="distinct phones in the mix (5 texts each)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    args = parser.parse_args()
    folder = tempdir()
    with FakeTwilio() as fake:
        if args.only in (None, "sqlite"):
            for workers in (1, 2):
                db = folder / f"bench-{workers}.db"
                inbound_case(engine="sqlite", database_url=f"sqlite:///{db}", workers=workers,
                             connections=args.connections, seconds=args.seconds, phones=args.phones, fake=fake,
                             folder=folder)


if __name__ == "__main__":
    main()
