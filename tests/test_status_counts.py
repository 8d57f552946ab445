"""The subscriptions per (brand, program, status) kept up by every status write (app.status_counts) equal a
COUNT(*) of the subscriptions after each path that changes a status, folded or not, on both databases, and
under writers running at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app import status_counts
from app.auth import create_key
from app.inbound import due_for_expiry, expire_due
from app.models import subscriptions
from tests.conftest import Gateway
from tests.test_console import Console, _cell, signed_in

PROOF = {"termsUrl": "https://acme.example/sms-terms", "termsVersion": "2026-10", "sourceText": "Text me deals"}


def counted(gateway: Gateway) -> dict[tuple[str, str, str], int]:
    """What a COUNT(*) of the subscriptions says."""
    return {(r[0], r[1], r[2]): int(r[3]) for r in gateway.query(
        "SELECT brand, program, status, count(*) FROM subscriptions GROUP BY brand, program, status")}


def kept(gateway: Gateway) -> dict[tuple[str, str, str], int]:
    """What app.status_counts says, for every brand."""
    brands = [r[0] for r in gateway.query("SELECT DISTINCT brand FROM subscription_counts")]
    out = {}
    for brand in brands:
        read = gateway.state.writer.call(lambda c, _now, b=brand: status_counts.read(c, brand=b))
        out.update({(brand, p, s): n for p, by_status in read.items() for s, n in by_status.items()})
    return out


def fold(gateway: Gateway) -> None:
    gateway.state.writer.call(lambda c, _now: status_counts.compact(c))


@pytest.fixture
def ada(gateway_factory: Callable[..., Gateway], database_url: str) -> Console:
    return signed_in(gateway_factory, database_url, "compliance")


def _key(gateway: Gateway) -> dict[str, str]:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="t"))
    return {"x-api-key": str(key)}


def _opt_in(phone: str, **changes: Any) -> dict[str, Any]:
    return {"phoneNumber": phone, "program": "deals", "consentSource": "web-checkout",
            "consentedAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(), "consentProof": PROOF, **changes}


def test_every_path_that_changes_a_status_keeps_the_counts_exact(ada: Console) -> None:
    gateway = ada.gateway
    key = _key(gateway)
    phones = [f"+1415555{n:04d}" for n in range(12)]
    steps: list[tuple[str, Callable[[], None]]] = []

    def sms() -> None:
        for n, phone in enumerate(phones[:8]):
            for text in ("JOIN", "YES", "STOP", "START")[: 1 + n % 4]:
                assert gateway.text(text, from_=phone).status_code == 200

    def doi_expiry() -> None:  # the sweep, and a text arriving after the DOI lapsed
        gateway.clock.advance(hours=49)
        now = gateway.clock()
        due = gateway.state.writer.call(lambda c, _now: due_for_expiry(c, now))
        assert due
        expired = gateway.state.writer.call(
            lambda c, _now: expire_due(c, now, phones=due[1:], rules=gateway.state.rules), locks=due[1:])
        assert expired == len(due) - 1
        assert gateway.text("YES", from_=due[0]).status_code == 200

    def api() -> None:
        for phone in phones[8:10]:
            assert gateway.client.post("/v1/subscriptions/opt-in", json=_opt_in(phone), headers=key).status_code == 200
        response = gateway.client.post("/v1/subscriptions/opt-in", json=_opt_in(phones[10], doubleOptIn=True),
                                       headers=key)
        assert response.status_code == 200 and response.json()["status"] == "pendingDOI"
        for body in ({"phoneNumber": phones[8], "program": "deals"}, {"phoneNumber": phones[9]}):
            assert gateway.client.post("/v1/subscriptions/opt-out", json=body, headers=key).status_code == 200

    def opt_out_import() -> None:  # numbers never seen (written in bulk) and numbers subscribed (a transition)
        when = (gateway.clock() - timedelta(days=1)).isoformat()
        lines = [f"{p},{when}" for p in [*phones[10:], "+14155559000", "+14155559001"]]
        response = gateway.client.post("/v1/opt-outs/import", content="phoneNumber,optedOutAt\n" + "\n".join(lines),
                                       headers={**key, "content-type": "text/csv"})
        assert response.status_code == 200, response.text
        assert response.json()["applied"] >= 3

    def console_opt_out() -> None:
        phone = phones[1]  # subscribed to deals
        assert ada.sign_in("ada@acme.example").status_code == 303  # the DOI's two days ended the session
        response = ada.post(f"/console/phones/{phone.replace('+', '%2B')}/opt-out", csrf=ada.csrf(), program="all",
                            confirmed="yes", reason="asked us by email")
        assert response.status_code == 303, response.text
        assert set(gateway.subs(phone).values()) == {"unsubscribed"}

    def erasure() -> None:  # keeps the statuses: the counts must not move
        assert gateway.client.post(f"/v1/contacts/{phones[2]}/erase", headers=key).status_code == 200

    def join_again() -> None:  # an erased number's row comes back under it, and an opted-out one rejoins
        for phone in (phones[2], phones[1]):
            assert gateway.text("JOIN", from_=phone).status_code == 200

    steps = [("sms", sms), ("doi expiry", doi_expiry), ("api", api), ("import", opt_out_import),
             ("console", console_opt_out), ("erasure", erasure), ("join again", join_again)]
    for n, (name, step) in enumerate(steps):
        step()
        gateway.drain()
        assert kept(gateway) == {k: v for k, v in counted(gateway).items() if v}, name
        if n % 2:
            fold(gateway)  # folded or not, the same figures
            assert kept(gateway) == {k: v for k, v in counted(gateway).items() if v}, f"{name}, folded"
            assert gateway.query("SELECT count(*) FROM subscription_counts")[0][0] == len(kept(gateway))
    statuses = {k[2] for k in counted(gateway)}
    assert {"none", "pendingDOI", "subscribed", "unsubscribed"} <= statuses  # every status went through


def test_the_programs_page_and_the_api_read_the_kept_counts(ada: Console) -> None:
    gateway = ada.gateway
    for phone, texts in (("+14155550101", ["JOIN", "YES"]), ("+14155550102", ["JOIN"])):
        for text in texts:
            assert gateway.text(text, from_=phone).status_code == 200
    # A row written around the status writes (as a bulk load might) shows only once recounted:
    # the pages read the kept counts, not the subscriptions.
    gateway.state.writer.call(lambda c, now: c.execute(subscriptions.insert().values(
        id="sub_x", brand="acme", program="deals", phone="+14155550199", status="subscribed", created_at=now,
        updated_at=now)))

    def api_counts() -> dict[str, int]:
        page = gateway.client.get("/v1/programs", headers=key).json()
        return dict(next(p for p in page["items"] if p["key"] == "deals")["counts"])

    key = _key(gateway)
    assert _cell(ada.get("/console/programs").text, "deals", "subscribed") == 1
    assert (api_counts()["subscribed"], api_counts()["pendingDOI"]) == (1, 1)
    gateway.state.writer.call(lambda c, _now: status_counts.recount(c))
    assert _cell(ada.get("/console/programs").text, "deals", "subscribed") == 2
    assert (api_counts()["subscribed"], api_counts()["pendingDOI"]) == (2, 1)


def test_writers_at_once_on_postgresql_keep_the_counts_exact(gateway_factory: Callable[..., Gateway],
                                                            database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    first, second = gateway_factory(database_url), gateway_factory(database_url)  # two processes' writers
    key = _key(first)
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn(gateway: Gateway, base: int) -> None:
        # Opt-ins (single and double) and opt-outs of the same numbers from two writers: some are
        # refused (409: an opt-in older than an opt-out just made), and every write that commits counts.
        try:
            for round_ in range(4):
                for n in range(15):
                    phone = f"+1646555{base + n:04d}"
                    if round_ % 2:
                        path, body = "/v1/subscriptions/opt-out", {"phoneNumber": phone, "program": "deals"}
                    else:
                        path, body = "/v1/subscriptions/opt-in", _opt_in(phone, doubleOptIn=round_ == 2)
                    response = gateway.client.post(path, json=body, headers=key)
                    assert response.status_code in (200, 409), response.text
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def folding() -> None:
        while not stop.is_set():
            try:
                fold(first)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=churn, args=(g, b)) for g, b in ((first, 0), (second, 0), (second, 100))]
    folder = threading.Thread(target=folding)
    for t in [*threads, folder]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    folder.join()
    assert not errors, errors
    [(changes, kinds)] = first.query("SELECT count(*), count(DISTINCT event) FROM consent_events")
    assert changes >= 60 and kinds >= 2  # the writers did change statuses, in several ways
    assert kept(first) == {k: v for k, v in counted(first).items() if v}
    fold(second)
    assert kept(second) == {k: v for k, v in counted(second).items() if v}
