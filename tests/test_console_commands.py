"""`optline users`: one run as a person runs it (a subprocess, the password on standard input), the rest in-process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main

PASSWORD = "correct horse battery"


@pytest.fixture
def env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's environment on a new SQLite database (also set in this process, for in-process runs)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPTLINE_", "TWILIO_"))}
    for name in list(os.environ):
        if name.startswith(("OPTLINE_", "TWILIO_")):
            monkeypatch.delenv(name)
    clean.update(OPTLINE_DATABASE_URL=sqlite_url)
    monkeypatch.setenv("OPTLINE_DATABASE_URL", sqlite_url)
    return clean


def users(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
          stdin: str = "") -> tuple[int, str, str]:
    """Run `optline users ARGS` in this process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["users", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_with_the_password_on_stdin_as_a_subprocess(env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "users", "create", "--brand", "acme", "--email", "Ada@Acme.example",
         "--password-stdin"], env=env, cwd=tmp_path, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "created console user ada@acme.example (viewer) for brand acme\n", "")


def test_create_list_disable_enable_and_roles(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for brand, email, role in (("acme", "ada@acme.example", "owner"), ("bistro", "chef@bistro.example", "viewer")):
        assert users(capsys, monkeypatch, "create", "--brand", brand, "--email", email, "--role", role,
                     "--password-stdin", stdin=PASSWORD)[0] == 0
    _code, out, _err = users(capsys, monkeypatch, "list")
    lines = out.splitlines()
    assert lines[0].split() == ["EMAIL", "BRAND", "ROLE", "STATE", "CREATED"]
    assert [line.split()[:4] for line in lines[1:]] == [["ada@acme.example", "acme", "owner", "active"],
                                                        ["chef@bistro.example", "bistro", "viewer", "active"]]
    assert users(capsys, monkeypatch, "list", "--brand", "bistro")[1].count("\n") == 2
    assert users(capsys, monkeypatch, "disable", "ADA@acme.example") == (
        0, "disabled console user ada@acme.example of brand acme\n", "")
    assert "disabled 20" in users(capsys, monkeypatch, "list")[1].splitlines()[1]
    assert users(capsys, monkeypatch, "create", "--brand", "acme", "--email", "ada@acme.example",
                 "--password-stdin", stdin=PASSWORD) == (
        2, "", "optline: ada@acme.example already has a console account (disabled): enable it with "
               "`optline users enable ada@acme.example`\n")
    assert users(capsys, monkeypatch, "enable", "ada@acme.example") == (
        0, "enabled console user ada@acme.example of brand acme\n", "")
    assert users(capsys, monkeypatch, "list")[1].splitlines()[1].split()[3] == "active"
    assert users(capsys, monkeypatch, "role", "chef@bistro.example", "compliance") == (
        0, "console user chef@bistro.example of brand bistro is now compliance\n", "")
    assert users(capsys, monkeypatch, "list", "--brand", "bistro")[1].splitlines()[1].split()[2] == "compliance"


def test_reset_password_prints_a_one_time_link(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTLINE_PUBLIC_URL", "https://optline.example.com")
    assert users(capsys, monkeypatch, "create", "--brand", "acme", "--email", "ada@acme.example",
                 "--password-stdin", stdin=PASSWORD)[0] == 0
    code, out, err = users(capsys, monkeypatch, "reset-password", "ada@acme.example")
    assert (code, err) == (0, "")
    first, link = out.splitlines()
    assert first.startswith("one-time link for ada@acme.example (valid 24 hours")
    assert link.startswith("https://optline.example.com/console/reset/") and len(link.rsplit("/", 1)[1]) >= 40
    again = users(capsys, monkeypatch, "reset-password", "ada@acme.example")[1].splitlines()[1]
    assert again != link  # a new link; the earlier one stops working (tests/test_console_signin.py uses them)
    assert users(capsys, monkeypatch, "disable", "ada@acme.example")[0] == 0
    assert users(capsys, monkeypatch, "reset-password", "ada@acme.example") == (
        2, "", "optline: ada@acme.example is disabled: enable it first (`optline users enable ada@acme.example`)\n")


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["create", "--brand", "nope", "--email", "a@b.example", "--password-stdin"], PASSWORD,
     "optline: unknown brand 'nope' (keywords.yaml has acme, bistro)"),
    (["create", "--brand", "acme", "--email", "not-an-email", "--password-stdin"], PASSWORD,
     "optline: not an email address"),
    (["create", "--brand", "acme", "--email", "a@b.example", "--password-stdin"], "short",
     "optline: the password must have at least 10 characters"),
    (["disable", "nobody@acme.example"], "", "optline: no console account for nobody@acme.example"),
    (["enable", "nobody@acme.example"], "", "optline: no console account for nobody@acme.example"),
    (["reset-password", "nobody@acme.example"], "", "optline: no console account for nobody@acme.example"),
], ids=["unknown-brand", "bad-email", "short-password", "disable-unknown", "enable-unknown", "reset-unknown"])
def test_mistakes_are_one_line(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: str, message: str) -> None:
    assert users(capsys, monkeypatch, *args, stdin=stdin) == (2, "", message + "\n")


def test_an_email_has_one_account(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["create", "--brand", "acme", "--email", "ada@acme.example", "--password-stdin"]
    assert users(capsys, monkeypatch, *args, stdin=PASSWORD)[0] == 0
    assert users(capsys, monkeypatch, *args, stdin=PASSWORD) == (
        2, "", "optline: ada@acme.example already has a console account\n")
