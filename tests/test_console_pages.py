"""The console's read-only workspace pages on both engines: keywords (what the loaded file says for
the brand) and operations (backlog, held texts, failures by code, STOP latency)."""

from __future__ import annotations

import re
from datetime import timedelta
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from app.console.operations import percentile
from app.models import outbox
from tests.conftest import Gateway
from tests.test_console import ADA, ZOE, Console, converse, signed_in


@pytest.fixture
def ada(gateway_factory: Callable[..., Gateway], database_url: str) -> Console:
    return signed_in(gateway_factory, database_url, "viewer")


def test_the_keywords_page_shows_the_brands_loaded_file(ada: Console) -> None:
    page = ada.get("/console/keywords")
    assert page.status_code == 200
    html = page.text
    rules = ada.gateway.state.rules
    assert re.search(rf'id="loaded-sha256">{rules.sha256}<', html)
    assert re.search(rf'id="disk-sha256">{rules.sha256}<', html) and 'id="changed"' not in html
    deals = re.search(r'data-program="deals">(.*?)</section>', html, re.S).group(1)  # type: ignore[union-attr]
    assert '<tr data-kind="confirm"><td>confirm</td><td>fr</td><td>OUI</td></tr>' in deals  # per language
    assert "JOIN" in deals and "reply YES to confirm" in deals
    assert re.search(r'data-sender="\+15005550006"><td><code>\+15005550006</code></td><td>long_code</td>', deals)
    assert "Menu du jour" not in html and "bistro" not in html  # nothing of another brand


def _outbox_row(**values: Any) -> dict[str, Any]:
    return {"channel": "sms", "brand": "acme", "program": "deals", "phone": ADA, "body": "x", "purpose": "prompt",
            "priority": 2, "attempts": 1, **values}


def test_the_operations_page(ada: Console) -> None:
    converse(ada.gateway)  # ZOE's STOP was suppressed and answered
    now = ada.gateway.clock()

    def add(conn: sa.Connection, _now: Any) -> None:
        for row in [
            _outbox_row(status="failed", error_code=30007, error_reason="carrier filtered", created_at=now,
                        updated_at=now),
            _outbox_row(status="failed", error_code=30007, error_reason="carrier filtered", created_at=now,
                        updated_at=now),
            _outbox_row(status="undelivered", error_code=30003, created_at=now, updated_at=now),
            # Held for quiet hours (app.holds): pending, due when the window opens, with why.
            _outbox_row(status="pending", held_until=now + timedelta(hours=9), held_reason="quiet_hours",
                        next_attempt_at=now + timedelta(hours=9), created_at=now, updated_at=now),
            _outbox_row(status="pending", next_attempt_at=now, created_at=now, updated_at=now,
                        brand="bistro"),  # another brand's backlog is not shown
        ]:
            conn.execute(outbox.insert().values(**row))

    ada.gateway.state.writer.call(add)
    html = ada.get("/console/operations").text
    assert re.search(r'<tr data-status="pending"><th scope="row">pending</th><td class="num" data-field="count">1<',
                     html)
    held = re.search(r'<table class="held">(.*?)</table>', html, re.S).group(1)  # type: ignore[union-attr]
    assert ADA in held and "quiet hours" in held and 'id="held-empty"' not in html
    assert re.search(r'<tr data-code="30007"><td>failed</td><td>30007</td><td>carrier filtered</td>'
                     r'<td class="num">2</td>', html)
    assert 'data-code="30003"' in html
    rows = re.findall(r'<th scope="row">STOP → (suppression|reply)</th><td>(last hour|last day)</td>'
                      r'<td class="num">(\d+)</td>', html)
    assert rows == [("suppression", "last hour", "1"), ("suppression", "last day", "1"),
                    ("reply", "last hour", "1"), ("reply", "last day", "1")]
    assert ZOE not in html  # numbers appear only for held texts


def test_the_operations_page_with_nothing_to_show(ada: Console) -> None:
    html = ada.get("/console/operations").text
    assert 'id="held-empty"' in html and 'id="failures-empty"' in html
    assert html.count("<td class=\"num\">0</td><td class=\"num\">–</td>") == 4


@pytest.mark.parametrize(("values", "q", "expected"), [([], 50, None), ([3.0], 99, 3.0), ([1, 2, 3, 4], 50, 2),
                                                        (list(range(1, 101)), 99, 99), (list(range(1, 1001)), 99, 990)],
                         ids=["none", "one", "even", "hundred", "thousand"])
def test_percentiles_are_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected
