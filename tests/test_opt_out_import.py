"""Opt-out lists in and out on both databases: POST /v1/opt-outs/import (CSV and JSON, streamed),
`optline import opt-outs`, GET /v1/opt-outs, and what an imported opt-out refuses."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app import suppression
from app.auth import create_key
from app.errors import InvalidInput
from tests.conftest import Gateway, unlimited

RULES = Path(__file__).parent / "data" / "consent_rules.yaml"
PROOF = {"termsUrl": "https://shop.example/sms", "termsVersion": "1", "sourceText": "Text me"}
ROWS = 100_000


@pytest.fixture
def shop(gateway_factory: Callable[..., Gateway], database_url: str) -> Gateway:
    return gateway_factory(database_url, keywords=unlimited(RULES))


def make_key(gateway: Gateway, brand: str) -> dict[str, str]:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="t"))
    return {"x-api-key": str(key)}


def csv_body(phones: Iterator[str], header: str = "phoneNumber,optedOutAt") -> Iterator[bytes]:
    """A CSV file in pieces of about 64 KiB, as a client streams it."""
    when = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    piece = [header + "\n"]
    size = 0
    for phone in phones:
        line = f"{phone},{when}\n"
        piece.append(line)
        size += len(line)
        if size > 65536:
            yield "".join(piece).encode()
            piece, size = [], 0
    yield "".join(piece).encode()


def numbers(n: int) -> Iterator[str]:
    return (f"+1646{2000000 + i:07d}" for i in range(n))


def test_a_hundred_thousand_opt_outs_apply_once_and_a_reimport_changes_nothing(shop: Gateway) -> None:
    key = {**make_key(shop, "solo"), "content-type": "text/csv"}
    first = shop.client.post("/v1/opt-outs/import", content=csv_body(numbers(ROWS)), headers=key)
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["rows"], report["applied"], report["unchanged"], report["rejected"]) == (ROWS, ROWS, 0, 0)
    assert report["batchId"].startswith("imp_")
    counted = shop.query("SELECT count(*), count(DISTINCT phone) FROM consent_events WHERE brand = 'solo'"
                         " AND source = 'import' AND event = 'import_opt_out'")[0]
    assert tuple(counted) == (ROWS, ROWS)
    assert shop.query("SELECT count(*) FROM subscriptions WHERE brand = 'solo' AND status = 'unsubscribed'")[0][0] == ROWS
    again = shop.client.post("/v1/opt-outs/import", content=csv_body(numbers(ROWS)), headers=key).json()
    assert (again["applied"], again["unchanged"]) == (0, ROWS) and again["batchId"] != report["batchId"]
    assert shop.query("SELECT count(*) FROM consent_events WHERE brand = 'solo'")[0][0] == ROWS
    batches = shop.query("SELECT rows, applied, unchanged FROM opt_out_imports ORDER BY created_at, id")
    assert [tuple(b) for b in batches] == [(ROWS, ROWS, 0), (ROWS, 0, ROWS)]


def test_bad_rows_are_reported_by_line_and_the_rest_applied(shop: Gateway) -> None:
    key = make_key(shop, "shop")
    rows = [{"phoneNumber": "+14155550100"}, {"phoneNumber": "not a phone"}, {"phone": "+14155550101", "program": "news"},
            {"phoneNumber": "+14155550102", "optedOutAt": "2026-01-01T00:00:00"}, "just text",
            {"phoneNumber": "+14155550103", "program": "nope"}, {"phoneNumber": "+14155550104", "optedOutAt": "2020-05-01T10:00:00Z"}]
    response = shop.client.post("/v1/opt-outs/import", content=json.dumps(rows), headers=key)
    report = response.json()
    assert (report["rows"], report["applied"], report["rejected"]) == (7, 3, 4)
    assert [e["line"] for e in report["errors"]] == [2, 4, 5, 6]
    assert "offset" in report["errors"][1]["message"]
    subs = dict((tuple(r[:2]), r[2]) for r in shop.query("SELECT phone, program, status FROM subscriptions"))
    assert subs[("+14155550100", "alerts")] == "unsubscribed" and ("+14155550101", "alerts") not in subs
    event = shop.query("SELECT consent_proof, consented_at, created_at FROM consent_events WHERE phone = '+14155550104'")[0]
    proof = event[0] if isinstance(event[0], dict) else json.loads(event[0])
    assert proof == {"batchId": report["batchId"], "line": 7} and str(event[1]).startswith("2020-05-01")


@pytest.mark.parametrize(("content", "content_type", "status"), [
    (b"{\"phoneNumber\": \"+14155550100\"}", "application/json", 400),
    (b"[{\"phoneNumber\": \"+14155550100\"}", "application/json", 400),
    (b"", "application/json", 400),
    (b"name,email\nx,y\n", "text/csv", 400),
    (b"\xff\xfe", "text/csv", 400),
    (b"phoneNumber\n+14155550100\n", "application/xml", 415),
    # schemathesis found this one a 500: a lone CR inside an unquoted field (the csv module's "new-line
    # character seen in unquoted field").
    ("\x05\x0e\r\U000fe69c\x8aö¨é\U000e2113J\U000772bb\x98".encode(), "text/csv", 400),
    (b'phoneNumber\n"+1415555\r0100"x\r\n', "text/csv", 200),
], ids=["object", "unclosed", "empty", "no-phone-column", "not-utf8", "xml", "lone-cr", "cr-in-quotes"])
def test_a_file_that_cannot_be_read_is_4xx(shop: Gateway, content: bytes, content_type: str, status: int) -> None:
    headers = {**make_key(shop, "shop"), "content-type": content_type}
    response = shop.client.post("/v1/opt-outs/import", content=content, headers=headers)
    assert response.status_code == status, response.text


def test_an_imported_opt_out_is_refused_by_the_send_check_and_api_opt_ins(shop: Gateway) -> None:
    key = make_key(shop, "shop")
    phone = "+14155550177"
    shop.text("ALERTS", from_=phone, to="+15005550011")
    joined = shop.clock()
    body = f"phoneNumber,optedOutAt\n{phone},{(joined - timedelta(days=1)).isoformat()}\n"
    stale = shop.client.post("/v1/opt-outs/import", content=body, headers={**key, "content-type": "text/csv"}).json()
    # The phone joined alerts after that opt-out: a stale list does not undo its join; the rest it ends.
    assert stale["applied"] == 1
    assert shop.subs(phone) == {"alerts": "subscribed", "deals": "unsubscribed", "news": "unsubscribed"}
    shop.client.post("/v1/opt-outs/import", content=f"phoneNumber\n{phone}\n", headers={**key, "content-type": "text/csv"})
    assert shop.subs(phone)["alerts"] == "unsubscribed"
    check = shop.client.post("/v1/send-check", json={"items": [{"phoneNumber": phone, "program": "alerts"}]},
                             headers=key).json()["items"][0]
    reason = check["reasons"][0]
    assert (check["allowed"], reason["code"], reason["source"], reason["scope"]) == (False, "opted_out", "import",
                                                                                    "brand")
    opt_in = {"phoneNumber": phone, "program": "alerts", "consentSource": "web", "consentProof": PROOF,
              "consentedAt": (datetime.now(UTC) - timedelta(days=2)).isoformat()}
    assert shop.client.post("/v1/subscriptions/opt-in", json=opt_in, headers=key).status_code == 409


def test_the_suppression_list_pages_by_time_as_json_and_csv(shop: Gateway) -> None:
    key = make_key(shop, "shop")
    shop.text("NEWS", from_="+14155550111", to="+15005550010")
    shop.text("STOP", from_="+14155550111", to="+15005550010")
    shop.clock.advance(seconds=60)
    since = shop.clock()
    shop.client.post("/v1/opt-outs/import", content="phoneNumber,program\n+14155550112,deals\n",
                     headers={**key, "content-type": "text/csv"})
    everything = shop.client.get("/v1/opt-outs", params={"limit": 2}, headers=key).json()
    assert len(everything["items"]) == 2 and everything["nextCursor"]
    rest = shop.client.get("/v1/opt-outs", params={"limit": 2, "cursor": everything["nextCursor"]}, headers=key).json()
    listed = everything["items"] + rest["items"]
    assert {(i["phoneNumber"], i["program"], i["source"]) for i in listed} == {
        ("+14155550111", "alerts", "sms"), ("+14155550111", "deals", "sms"), ("+14155550111", "news", "sms"),
        ("+14155550112", "deals", "import")}
    recent = shop.client.get("/v1/opt-outs", params={"since": since.isoformat(), "format": "csv"}, headers=key)
    assert recent.headers["content-type"].startswith("text/csv")
    lines = recent.text.splitlines()
    assert lines[0] == "phoneNumber,program,optedOutAt,source" and len(lines) == 2 and lines[1].endswith(",import")
    other = shop.client.get("/v1/opt-outs", headers=make_key(shop, "solo")).json()
    assert other["items"] == []
    assert shop.client.get("/v1/opt-outs", params={"since": "yesterday"}, headers=key).status_code == 400
    assert shop.client.get("/v1/opt-outs", params={"format": "xml"}, headers=key).status_code == 400


def test_the_reader_streams_rows_split_anywhere() -> None:
    text = 'phoneNumber,program\n+14155550100,news\n"+14155550101","de\nals"\n+14155550102\n'
    for size in (1, 3, 7, len(text)):
        reader = suppression.Reader("csv")
        data = text.encode()
        rows: list[Any] = []
        for i in range(0, len(data), size):
            rows += reader.feed(data[i:i + size])
        rows += reader.close()
        assert rows == [(2, {"phoneNumber": "+14155550100", "program": "news"}),
                        (3, {"phoneNumber": "+14155550101", "program": "de\nals"}),
                        (5, {"phoneNumber": "+14155550102"})], size
    items = json.dumps([{"phoneNumber": "+1415555010" + str(i)} for i in range(5)] + [12345]).encode()
    for size in (1, 5, len(items)):
        reader = suppression.Reader("json")
        got: list[Any] = []
        for i in range(0, len(items), size):
            got += reader.feed(items[i:i + size])
        got += reader.close()
        assert [line for line, _ in got] == [1, 2, 3, 4, 5, 6] and got[-1][1] == 12345, size
    with pytest.raises(InvalidInput):
        list(suppression.Reader("json").feed(b"[,1]"))


def test_the_cli_imports_a_file(shop: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"phoneNumber": "+14155550150"}, {"phoneNumber": "oops"}]))
    monkeypatch.setenv("OPTLINE_DATABASE_URL", shop.settings.database_url)
    monkeypatch.setenv("OPTLINE_KEYWORDS", shop.settings.keywords)
    assert main(["import", "opt-outs", str(path), "--brand", "shop"]) == 0
    out = capsys.readouterr()
    assert "2 rows, 1 applied, 0 already opted out, 1 rejected" in out.out and "line 2: phoneNumber" in out.err
    assert main(["import", "opt-outs", str(path), "--brand", "shop"]) == 0
    assert "0 applied, 1 already opted out" in capsys.readouterr().out
    assert shop.subs("+14155550150") == {"alerts": "unsubscribed", "deals": "unsubscribed", "news": "unsubscribed"}
