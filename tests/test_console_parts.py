"""The console's pure parts: the chart's geometry, CSV cells, session cookies."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.console import chart
from app.console.accounts import hash_password, normalise_email, password_matches
from app.console.queries import csv_cell
from app.console.sessions import SESSION_SECONDS, SessionCodec
from app.errors import InvalidInput
from app.settings import Settings


def _days(values: list[tuple[int, int]]) -> list[tuple[date, int, int]]:
    first = date(2026, 10, 28)
    return [(first + timedelta(days=i), j, o) for i, (j, o) in enumerate(values)]


@pytest.mark.parametrize(("peak", "top"), [(0, 4), (3, 4), (5, 8), (61, 100), (12_345, 20_000)],
                         ids=["empty", "small", "eight", "hundred", "beyond-the-table"])
def test_the_chart_scale_is_a_round_number_at_or_above_the_peak(peak: int, top: int) -> None:
    built = chart.build(_days([(0, 0)] * 29 + [(peak, 0)]))
    assert built.ticks[-1][1] == top
    tallest = max(built.bars, key=lambda b: b.height)
    assert tallest.y >= built.ticks[-1][0]  # never above the top grid line
    assert built.total_joins == peak


def test_the_chart_draws_two_bars_a_day_inside_its_frame() -> None:
    built = chart.build(_days([(i % 3, i % 2) for i in range(30)]))
    assert len(built.bars) == 60 and [b.kind for b in built.bars[:2]] == ["joins", "optouts"]
    assert all(built.left <= b.x and b.x + b.width <= built.right for b in built.bars)
    assert all(b.y + b.height == pytest.approx(built.baseline) for b in built.bars)
    assert [text for _x, text in built.labels] == ["Oct 29", "Nov 05", "Nov 12", "Nov 19", "Nov 26"]


@pytest.mark.parametrize(("column", "value", "text"), [
    ("raw_text", "=1+1", "'=1+1"), ("raw_text", "@SUM(A1)", "'@SUM(A1)"), ("raw_text", "-2", "'-2"),
    ("raw_text", "STOP", "STOP"), ("phone", "+14155550123", "+14155550123"), ("raw_text", None, ""),
    ("created_at", datetime(2026, 11, 26, 9, 30, tzinfo=UTC), "2026-11-26T09:30:00+00:00"),
    ("consent_proof", {"b": 1, "a": "é"}, '{"a": "é", "b": 1}'),
], ids=["formula", "at-sign", "minus", "plain", "phone-keeps-plus", "null", "time", "json"])
def test_csv_cells(column: str, value: object, text: str) -> None:
    assert csv_cell(column, value) == text


@pytest.mark.parametrize(("raw", "email"), [(" Ada@ACME.example ", "ada@acme.example")], ids=["trim-and-lower"])
def test_emails_are_stored_lower_case(raw: str, email: str) -> None:
    assert normalise_email(raw) == email


@pytest.mark.parametrize("raw", ["ada", "ada@", "@acme.example", "ada@localhost", "a da@acme.example",
                                 "a" * 250 + "@acme.example"],
                         ids=["no-at", "no-domain", "no-local", "no-dot", "space", "too-long"])
def test_not_an_email(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalise_email(raw)


def test_passwords_are_argon2id_and_checked() -> None:
    digest = hash_password("correct horse battery")
    assert digest.startswith("$argon2id$")
    assert password_matches(digest, "correct horse battery")
    assert not password_matches(digest, "correct horse batterY")
    assert not password_matches(None, "correct horse battery")  # an unknown email
    assert not password_matches("not a hash", "x")
    with pytest.raises(InvalidInput):
        hash_password("short")


def _request(cookie: str | None) -> Request:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def test_a_session_cookie_is_signed_and_expires() -> None:
    settings = Settings(_env_file=None, secret_key="k" * 40,  # type: ignore[call-arg]
                        public_url="https://optline.example")
    codec = SessionCodec(settings)
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    response = Response()
    session = codec.issue(response, user_id=7, now=now)
    value = response.headers["set-cookie"].split(";", 1)[0]
    assert codec.read(_request(value), now=now + timedelta(hours=1)) == session
    assert codec.read(_request(value), now=now + timedelta(seconds=SESSION_SECONDS)) is None
    assert codec.read(_request(value + "x"), now=now) is None
    other = SessionCodec(Settings(_env_file=None, secret_key="j" * 40))  # type: ignore[call-arg]
    assert other.read(_request(value), now=now) is None  # another key: not ours
    token = codec.csrf_token(session.nonce)
    assert codec.csrf_ok(token, session.nonce) and not codec.csrf_ok(token, "other") and not codec.csrf_ok(None, "x")
    assert not codec.csrf_ok(codec.csrf_token(session.nonce), session.nonce + "x")
