"""The `optline` command, run as a user runs it: a subprocess, from a folder that is not the repo."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import KEYWORDS

PHONE = "+14155550123"
ACME = "+15005550006"


def optline(*args: str, env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"optline {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI on SQLite: each command is a new process, and the engines are tested elsewhere."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPTLINE_", "TWILIO_"))}
    clean.update(OPTLINE_DATABASE_URL=sqlite_url, OPTLINE_RUN_DIR=str(tmp_path / "run"))
    return clean


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_check_accepts_the_shipped_keywords(env: dict[str, str], elsewhere: Path) -> None:
    result = optline("check", env=env, cwd=elsewhere)  # default file found from the package, not the cwd
    # Each brand's opt-out scope on a line of its own, then the verdict.
    assert result.stdout.splitlines() == [
        "brand 'acme': opt_out_scope brand: a plain STOP ends every program on every sender (revoke-all)",
        "brand 'bistro': opt_out_scope brand: a plain STOP ends every program on every sender (revoke-all)",
        f"{KEYWORDS}: ok (0 warnings)"]


def test_check_refuses_a_bad_file_with_its_line(env: dict[str, str], elsewhere: Path) -> None:
    bad = elsewhere / "bad.yaml"
    bad.write_text("version: 1\nbrands:\n  acme:\n    name: ACME\n    help_contact: a@b.c\n    colour: red\n"
                   "    programs: {}\n")
    result = optline("check", str(bad), env=env, cwd=elsewhere, check=False)
    assert result.returncode == 1
    assert f"{bad}:6:" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_check_warns_about_a_sender_whose_provider_is_not_enabled(env: dict[str, str], elsewhere: Path) -> None:
    path = elsewhere / "keywords.yaml"
    text = KEYWORDS.read_text().replace('senders: ["+15005550007"]',
                                        'senders: [{id: "+15005550007", provider: telnyx, rate: 2}]')
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "provider: telnyx" in row)
    env = {k: v for k, v in env.items() if not k.startswith("TELNYX_")}
    warned = [f"warning: {path}:{line}: program 'bistro/menu' sender +15005550007: provider telnyx is not in "
              "OPTLINE_PROVIDERS (console) here: serve and worker refuse to start with it", f"{path}: ok (1 warning)"]
    # OPTLINE_PROVIDERS unset: console only; the file named, or the one OPTLINE_KEYWORDS names
    def findings(stdout: str) -> list[str]:  # the warnings and the verdict, not each brand's scope line
        return [line for line in stdout.splitlines() if not line.startswith("brand '")]

    assert findings(optline("check", str(path), env=env, cwd=elsewhere).stdout) == warned
    assert findings(optline("check", env={**env, "OPTLINE_KEYWORDS": str(path)}, cwd=elsewhere).stdout) == warned
    enabled = {**env, "OPTLINE_PROVIDERS": "console,telnyx", "TELNYX_API_KEY": "KEY0123"}
    assert findings(optline("check", str(path), env=enabled, cwd=elsewhere).stdout) == [f"{path}: ok (0 warnings)"]
    # settings that cannot load (telnyx without its key): the named file is checked alone, without that warning
    broken = optline("check", str(path), env={**env, "OPTLINE_PROVIDERS": "telnyx"}, cwd=elsewhere)
    assert findings(broken.stdout) == [f"{path}: ok (0 warnings)"]


def test_migrate_creates_the_sqlite_file_from_any_folder(tmp_path: Path, elsewhere: Path) -> None:
    target = tmp_path / "new" / "sub" / "optline.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTLINE_")}
    env["OPTLINE_DATABASE_URL"] = f"sqlite:///{target}"
    optline("migrate", env=env, cwd=elsewhere)
    assert target.exists()
    optline("migrate", env=env, cwd=elsewhere)  # idempotent


def test_simulate_runs_a_conversation_through_the_pipeline(env: dict[str, str], elsewhere: Path,
                                                           database_url: str) -> None:
    env = {**env, "OPTLINE_DATABASE_URL": database_url}
    join = optline("simulate", "--from", PHONE, "--to", ACME, "JOIN", env=env, cwd=elsewhere).stdout.splitlines()
    assert join == ["[join deals]", "ACME Deals: reply YES to confirm up to 4 msgs/month. Msg&data rates may apply. "
                                    "Reply HELP for help, STOP to cancel."]
    yes = optline("simulate", "--from", PHONE, "--to", ACME, "YES", env=env, cwd=elsewhere).stdout.splitlines()
    assert yes[0] == "[confirm deals]" and yes[1].startswith("ACME Deals: you're in!")
    stop = optline("simulate", "--from", PHONE, "--to", ACME, "Stop please", env=env, cwd=elsewhere).stdout
    assert "[stop]" in stop and "ACME: you are unsubscribed from all ACME texts" in stop
    export = optline("export", "consent", "--brand", "acme", env=env, cwd=elsewhere).stdout
    rows = list(csv.DictReader(io.StringIO(export)))
    assert [(r["program"], r["event"], r["raw_text"]) for r in rows] == [
        ("deals", "join", "JOIN"), ("deals", "confirm", "YES"),
        ("deals", "stop", "Stop please"), ("news", "stop", "Stop please"),
    ]
    later = optline("export", "consent", "--brand", "acme", "--since", "2999-01-01T00:00:00Z", env=env, cwd=elsewhere)
    assert later.stdout.strip().count("\n") == 0  # header only
    today = datetime.now(UTC).date()
    for since, rows_expected in ((today.isoformat(), 4), ((today + timedelta(days=1)).isoformat(), 0)):
        # A date alone is midnight UTC: today's events are in, tomorrow's are none.
        dated = optline("export", "consent", "--brand", "acme", "--since", since, env=env, cwd=elsewhere).stdout
        assert len(list(csv.DictReader(io.StringIO(dated)))) == rows_expected, since
    refused = optline("export", "consent", "--brand", "acme", "--since", "2026-11-26T09:00:00", env=env, cwd=elsewhere,
                      check=False)  # a time without its zone is ambiguous (parse_since is tested in-process)
    assert refused.returncode == 2 and refused.stderr.startswith("optline: --since must be")
    unknown = optline("export", "consent", "--brand", "acme-eu", env=env, cwd=elsewhere, check=False)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [f"optline: unknown brand 'acme-eu'; {KEYWORDS} has acme, bistro"]
    assert optline("export", "consent", "--brand", "bistro", env=env, cwd=elsewhere).stdout.count("\n") == 1


def test_simulate_sends_its_own_reply_and_nobody_elses(env: dict[str, str], elsewhere: Path, database_url: str) -> None:
    """On a live database, other people's queued replies stay queued for the server's sender."""
    import sqlalchemy as sa

    env = {**env, "OPTLINE_DATABASE_URL": database_url}
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            for phone, purpose in (("+14155550100", "doi_prompt"), ("+14155550101", "stop")):
                conn.execute(sa.text(
                    "INSERT INTO outbox (channel, brand, program, phone, from_number, body, purpose, priority, status,"
                    " attempts, next_attempt_at, created_at, updated_at) VALUES ('sms', 'acme', 'deals', :p, :f,"
                    " 'queued by the server', :purpose, 0, 'pending', 0, :t, :t, :t)"),
                    {"p": phone, "f": ACME, "purpose": purpose, "t": datetime(2026, 1, 1, tzinfo=UTC)})
        optline("simulate", "--from", PHONE, "--to", ACME, "JOIN", env=env, cwd=elsewhere)
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT phone, status FROM outbox")).all())
    finally:
        engine.dispose()
    assert rows == {"+14155550100": "pending", "+14155550101": "pending", PHONE: "queued"}


def test_simulate_dry_run_writes_nothing(env: dict[str, str], elsewhere: Path, database_url: str) -> None:
    import sqlalchemy as sa

    env = {**env, "OPTLINE_DATABASE_URL": database_url}
    optline("simulate", "--from", PHONE, "--to", ACME, "JOIN", env=env, cwd=elsewhere)
    dry = optline("simulate", "--dry-run", "--from", PHONE, "--to", ACME, "  Stop please!! ", env=env,
                  cwd=elsewhere).stdout.splitlines()
    assert "normalized:  'stop please'" in dry
    assert any(line.startswith("matched:     stop") for line in dry)
    assert "transition:  deals: pendingDOI -> unsubscribed (stop)" in dry
    assert any(line.startswith("reply") and "unsubscribed from all ACME texts" in line for line in dry)
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            counts = [conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                      for t in ("inbound_messages", "consent_events", "outbox")]
            status = conn.execute(sa.text("SELECT status FROM subscriptions WHERE program = 'deals'")).scalar()
    finally:
        engine.dispose()
    assert counts == [1, 1, 1] and status == "pendingDOI"  # the JOIN's rows only


def test_simulate_refuses_a_malformed_number(env: dict[str, str], elsewhere: Path) -> None:
    result = optline("simulate", "--from", "banana", "--to", ACME, "JOIN", env=env, cwd=elsewhere, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("optline: --from:")


def test_keys_create_list_revoke(env: dict[str, str], elsewhere: Path) -> None:
    created = optline("keys", "create", "--brand", "acme", "--name", "crm", env=env, cwd=elsewhere).stdout
    key = created.strip().splitlines()[-1]
    assert key.startswith("olk_") and len(key) > 30
    prefix = key.split("_")[1]
    listed = optline("keys", "list", env=env, cwd=elsewhere).stdout.splitlines()
    assert listed[0].split() == ["PREFIX", "BRAND", "STATUS", "CREATED", "(UTC)", "NAME"]
    assert listed[1].split()[:3] == [prefix, "acme", "active"] and key not in "\n".join(listed)
    optline("keys", "revoke", prefix, env=env, cwd=elsewhere)
    assert optline("keys", "list", env=env, cwd=elsewhere).stdout.splitlines()[1].split()[2] == "revoked"
    unknown = optline("keys", "revoke", "nope", env=env, cwd=elsewhere, check=False)
    assert unknown.returncode == 2 and "no key with prefix nope" in unknown.stderr
    other = optline("keys", "create", "--brand", "nobody", env=env, cwd=elsewhere, check=False)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [f"optline: unknown brand 'nobody'; {KEYWORDS} has acme, bistro"]


def _every_action(parser: argparse.ArgumentParser, path: str = "optline") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _every_action(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def test_every_option_has_help_with_its_default() -> None:
    from app.cli import build_parser

    actions = _every_action(build_parser())
    assert len(actions) >= 12
    for path, action in actions:
        name = f"{path} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{name} has no help"
        if action.option_strings and not action.required:
            rendered = argparse.ArgumentDefaultsHelpFormatter("x")._get_help_string(action) or ""
            assert "default" in (action.help if action.default is None else rendered), f"{name} hides its default"
    serve = next(a.choices["serve"] for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "--port PORT" in serve.format_help() and "(default: 8000)" in serve.format_help()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-26", "2026-11-26T00:00:00+00:00"),
    ("2026-11-26T09:30:00Z", "2026-11-26T09:30:00+00:00"),
    ("2026-11-26T09:30:00+01:00", "2026-11-26T09:30:00+01:00"),
    ("2026-11-26T09:30:00", None),
    ("yesterday", None),
    ("2026-13-01", None),
], ids=["date-is-midnight-utc", "zulu", "offset", "no-zone", "words", "no-such-month"])
def test_parse_since(text: str, expected: str | None) -> None:
    from app.cli import parse_since

    if expected is None:
        with pytest.raises(ValueError):
            parse_since(text)
    else:
        assert parse_since(text).isoformat() == expected


@pytest.mark.parametrize("variables,message", [
    ({"OPTLINE_KEYWORDS": "/nonexistent/keywords.yaml"}, "/nonexistent/keywords.yaml"),
    ({"OPTLINE_PROVIDER": "twilio"}, "TWILIO_ACCOUNT_SID"),
    ({"OPTLINE_PROVIDER": "carrier-pigeon"}, "OPTLINE_PROVIDER"),
    ({"OPTLINE_DATABASE_URL": "mysql://x"}, "OPTLINE_DATABASE_URL"),
    ({"OPTLINE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}, "cannot reach the database"),
    ({"OPTLINE_PUBLIC_URL": "optline.example"}, "OPTLINE_PUBLIC_URL"),
    ({"OPTLINE_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t" * 32},
     "OPTLINE_PUBLIC_URL"),
], ids=["keywords-missing", "twilio-without-secret", "unknown-provider", "bad-db-url", "db-unreachable",
        "public-url", "twilio-with-the-default-public-url"])
def test_serve_refuses_bad_configuration_with_one_line(env: dict[str, str], elsewhere: Path,
                                                       variables: dict[str, str], message: str) -> None:
    result = optline("serve", env={**env, **variables}, cwd=elsewhere, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path: Path, elsewhere: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTLINE_")}
    env["OPTLINE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    result = optline("serve", env=env, cwd=elsewhere, check=False)
    assert result.returncode == 2 and "optline migrate" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _closed_by_server(port: int, head: bytes) -> bool:
    """Open a connection, send `head` (a request head cut short, or nothing), wait: True when the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            return sock.recv(1024) == b""
        except TimeoutError:
            return False


def test_serve_answers_and_stops_gracefully(env: dict[str, str], elsewhere: Path) -> None:
    port = _free_port()
    env = {**env, "OPTLINE_HEADER_TIMEOUT_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, cwd=elsewhere,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        unsigned = httpx.post(f"http://127.0.0.1:{port}/webhooks/twilio", data={"Body": "STOP"})
        assert unsigned.status_code == 403  # no TWILIO_AUTH_TOKEN: fail closed
        # Connections that send nothing, or trickle a request head, are closed (uvicorn alone kept them open).
        assert _closed_by_server(port, b"")
        assert _closed_by_server(port, b"POST /webhooks/twilio HTTP/1.1\r\nHost: optline\r\nContent-")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    # uvicorn finishes the lifespan (in-flight sends) and then re-raises SIGTERM, as a Unix server should.
    assert proc.returncode in (0, -signal.SIGTERM)


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_reload_reaches_every_worker_and_a_bad_file_changes_nothing(
    env: dict[str, str], elsewhere: Path, tmp_path: Path
) -> None:
    keywords = tmp_path / "keywords.yaml"
    keywords.write_text(KEYWORDS.read_text())
    env = {**env, "OPTLINE_KEYWORDS": str(keywords), "OPTLINE_LOG_LEVEL": "INFO"}
    run_dir = Path(env["OPTLINE_RUN_DIR"])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
                            env=env, cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def served() -> set[str]:
        # Each request is a new connection, so the two workers both answer over a few of them.
        seen = set()
        for _ in range(12):
            try:
                seen.add(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["keywords"]["sha256"])
            except httpx.TransportError:
                seen.add("down")
        return seen

    def sha() -> str:
        return hashlib.sha256(keywords.read_bytes()).hexdigest()

    try:
        _wait_for(lambda: len(list(run_dir.glob("serve-*.pid"))) == 2, proc)
        first = sha()
        assert served() == {first}

        keywords.write_text(keywords.read_text().replace("join: [NEWS]", "join: [NEWS, WEEKLY]"))
        reloaded = optline("reload", env=env, cwd=elsewhere).stdout
        assert reloaded.startswith("asked 2 processes to reload")
        second = sha()
        _wait_for(lambda: served() == {second}, proc, timeout=10)

        keywords.write_text(keywords.read_text().replace("join: [NEWS, WEEKLY]", "join: [NEWS, HELP]"))
        refused = optline("reload", env=env, cwd=elsewhere, check=False)
        assert refused.returncode == 2 and "is also a help keyword" in refused.stderr
        assert refused.stderr.strip().endswith("not reloaded: the running processes keep the rules they have")
        proc.send_signal(signal.SIGHUP)  # straight to serve: it passes the signal on; each worker refuses the file
        time.sleep(1)
        assert served() == {second}

        keywords.write_text(keywords.read_text().replace("join: [NEWS, HELP]", "join: [NEWS, DAILY]"))
        proc.send_signal(signal.SIGHUP)
        third = sha()
        _wait_for(lambda: served() == {third}, proc, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert list(run_dir.glob("*.pid")) == []
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    refusals = [r for r in records if r["msg"].startswith("keywords not reloaded")]
    assert len(refusals) == 2 and all(r["level"] == "ERROR" and first[:12] not in r["msg"] for r in refusals)
    assert not [r for r in records if r["logger"].startswith("alembic")]
