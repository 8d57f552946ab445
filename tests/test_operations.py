"""Day-two operations in one process: reloading keywords.yaml, /readyz, revoking a key."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.auth import create_key, revoke_key
from app.db import make_engine, run_in_transaction
from app.errors import NotFound
from app.reload import reload_rules
from tests.conftest import KEYWORDS, Gateway

PHONE = "+14155550123"


@pytest.fixture
def keywords_copy(tmp_path: Path) -> Path:
    path = tmp_path / "keywords.yaml"
    shutil.copy(KEYWORDS, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_readyz_shows_the_files_hash_not_brands_and_logs_nothing(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        caplog.clear()
        for _ in range(3):
            ready = gateway.client.get("/readyz")
            assert ready.status_code == 200
        assert [r for r in caplog.records if r.name.startswith("alembic")] == []
    body = ready.json()
    assert body["keywords"] == {"sha256": sha256(Path(gateway.settings.keywords))}
    assert "acme" not in ready.text and "brands" not in body


def test_reload_swaps_the_rules_and_a_bad_file_keeps_them(
    gateway_factory: Callable[..., Gateway], database_url: str, keywords_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = gateway_factory(database_url, keywords=str(keywords_copy))
    assert gateway.text("SALE", from_=PHONE).status_code == 200
    assert gateway.subs(PHONE) == {}  # not a keyword yet

    keywords_copy.write_text(keywords_copy.read_text().replace("join: [JOIN, DEALS]", "join: [JOIN, DEALS, SALE]"))
    assert reload_rules(gateway.state) is True
    assert gateway.client.get("/readyz").json()["keywords"]["sha256"] == sha256(keywords_copy)
    assert gateway.text("SALE", from_=PHONE).status_code == 200
    assert gateway.subs(PHONE) == {"deals": "pendingDOI"}
    assert gateway.state.sender.rules is gateway.state.rules  # the sender answers by the same rules

    good = sha256(keywords_copy)
    keywords_copy.write_text(keywords_copy.read_text().replace("join: [NEWS]", "join: [NEWS, HELP]"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="optline"):
        assert reload_rules(gateway.state) is False
    [line] = [r for r in caplog.records if r.name == "optline"]
    assert line.levelno == logging.ERROR and "keywords not reloaded" in line.getMessage()
    assert "is also a help keyword" in line.getMessage()
    assert gateway.client.get("/readyz").json()["keywords"]["sha256"] == good
    assert gateway.text("SALE", from_="+14155550124").status_code == 200  # the old (good) rules still apply
    assert gateway.subs("+14155550124") == {"deals": "pendingDOI"}


def test_a_brand_whose_events_secret_is_missing_is_not_reloaded(
    gateway_factory: Callable[..., Gateway], database_url: str, keywords_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACME_EVENTS_SECRET", raising=False)
    gateway = gateway_factory(database_url, keywords=str(keywords_copy))
    before = gateway.state.rules
    keywords_copy.write_text(keywords_copy.read_text().replace(
        "    # events:\n    #   url: https://crm.acme.example/hooks/optline\n    #   secret_env: ACME_EVENTS_SECRET",
        "    events:\n      url: https://crm.acme.example/hooks/optline\n      secret_env: ACME_EVENTS_SECRET"))
    assert "    events:\n" in keywords_copy.read_text()
    assert reload_rules(gateway.state) is False
    assert gateway.state.rules is before


@pytest.mark.parametrize("by", ["prefix", "whole-key"], ids=["by-prefix", "by-whole-key"])
def test_a_revoked_key_is_refused_at_once_by_every_process(
    gateway_factory: Callable[..., Gateway], database_url: str, by: str
) -> None:
    # Two gateways on one database stand for two processes; the revocation comes from a third (the CLI).
    first, second = gateway_factory(database_url), gateway_factory(database_url)
    _info, key = first.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="crm"))
    for gateway in (first, second):
        assert gateway.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200
    cli = make_engine(database_url, writer=True)
    try:
        ref = key.split("_")[1] if by == "prefix" else key
        run_in_transaction(cli, lambda c, now: revoke_key(c, now, key_or_prefix=ref))
    finally:
        cli.dispose()
    for gateway in (first, second):
        refused = gateway.client.get("/v1/programs", headers={"x-api-key": key})
        assert refused.status_code == 401, refused.text


def test_revoke_names_a_key_by_prefix_or_whole_key_only(gateway: Gateway) -> None:
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="crm"))
    prefix = key.split("_")[1]
    for ref, message in ((key[:-4] + "AAAA", "no such key"), ("olk_00000000", "no key with prefix 00000000")):
        with pytest.raises(NotFound, match=message):
            gateway.state.writer.call(lambda c, now, ref=ref: revoke_key(c, now, key_or_prefix=ref))
    revoked = gateway.state.writer.call(lambda c, now: revoke_key(c, now, key_or_prefix=f"olk_{prefix}"))
    assert revoked.prefix == prefix and revoked.revoked_at is not None


def test_a_key_created_elsewhere_works_at_once(gateway: Gateway) -> None:
    # Unknown keys are not remembered: a 401 before the key exists does not stick.
    cli = make_engine(gateway.settings.database_url, writer=True)
    try:
        info, key = run_in_transaction(cli, lambda c, now: create_key(c, now, brand="acme", name="new"))
        assert gateway.client.get("/v1/programs", headers={"x-api-key": key + "x"}).status_code == 401
        assert gateway.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200
    finally:
        cli.dispose()
    assert info.prefix in key


def test_keys_are_checked_on_a_connection_that_comes_back(gateway: Gateway) -> None:
    # The kept connection breaks (a database restart): the next call opens another.
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="crm"))
    assert gateway.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200
    gateway.state.keys._conn.driver_connection.close()
    assert gateway.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200


def test_a_brand_removed_by_a_reload_takes_its_keys_with_it(
    gateway_factory: Callable[..., Gateway], database_url: str, keywords_copy: Path
) -> None:
    gateway = gateway_factory(database_url, keywords=str(keywords_copy))
    _info, key = gateway.state.writer.call(lambda c, now: create_key(c, now, brand="bistro", name="crm"))
    assert gateway.client.get("/v1/programs", headers={"x-api-key": key}).status_code == 200
    text = keywords_copy.read_text()
    keywords_copy.write_text(text[:text.index("\n  bistro:")] + "\n")
    assert reload_rules(gateway.state) is True
    refused = gateway.client.get("/v1/programs", headers={"x-api-key": key})
    assert refused.status_code == 401 and "bistro" in refused.json()["detail"]
