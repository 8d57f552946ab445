"""A STOP is honoured by history: a keywords file cannot silently drop what people are subscribed through,
and a STOP to a number keywords.yaml no longer routes still ends what the phone joined through it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.cli import main
from app.errors import ConfigError
from app.keywords import load_rules
from app.main import check_database
from app.reload import reload_rules
from tests.conftest import KEYWORDS, Gateway

ACME, BISTRO = "+15005550006", "+15005550007"
ADA, BOB = "+14155550123", "+33612345678"  # an acme subscriber; a bistro one (bistro serves FR)


@pytest.fixture
def keywords_copy(tmp_path: Path) -> Path:
    path = tmp_path / "keywords.yaml"
    shutil.copy(KEYWORDS, path)
    return path


def without_bistro(text: str) -> str:
    """The file cut off before the bistro brand: still valid YAML, as a truncated copy would be."""
    return text[:text.index("\n  bistro:")] + "\n"


def joined(gateway: Gateway, phone: str, to: str, words: tuple[str, ...]) -> None:
    for word in words:
        assert gateway.text(word, from_=phone, to=to).status_code == 200
        gateway.drain(advance=0.5)


def test_a_reload_that_drops_a_brand_with_subscribers_is_refused_until_retired_and_its_stops_still_apply(
    gateway_factory: Callable[..., Gateway], database_url: str, keywords_copy: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = gateway_factory(database_url, keywords=str(keywords_copy))
    joined(gateway, BOB, BISTRO, ("MENU", "OUI"))
    assert gateway.subs(BOB) == {"menu": "subscribed"}
    good = gateway.state.rules
    keywords_copy.write_text(without_bistro(keywords_copy.read_text()))

    with caplog.at_level(logging.INFO, logger="optline"):
        assert reload_rules(gateway.state) is False
    assert gateway.state.rules is good
    assert any("brand 'bistro' is not in the file but 1 phone is still subscribed" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    with pytest.raises(ConfigError, match="brand 'bistro'"):
        check_database(gateway.settings, load_rules(keywords_copy))  # start-up refuses it too
    monkeypatch.setenv("OPTLINE_DATABASE_URL", database_url)
    assert main(["check", str(keywords_copy)]) == 1
    assert "brand 'bistro' is not in the file" in capsys.readouterr().out

    # Retired on purpose: accepted, and the brand's subscriber can still stop.
    keywords_copy.write_text(keywords_copy.read_text() + "retired:\n  brands: [bistro]\n")
    assert main(["check", str(keywords_copy)]) == 0
    assert reload_rules(gateway.state) is True
    assert gateway.text("ARRET", from_=BOB, to=BISTRO).status_code == 200
    gateway.drain(advance=0.5)
    assert gateway.subs(BOB) == {"menu": "unsubscribed"}
    [event] = gateway.query("SELECT source, reason FROM consent_events WHERE phone = :p AND to_status = "
                            "'unsubscribed'", p=BOB)
    assert event.source == "sms" and "no longer routes" in event.reason
    assert gateway.query("SELECT kind, brand FROM inbound_messages WHERE body = 'ARRET'")[0] == ("stop", "bistro")


def test_a_stop_to_a_retired_number_of_a_live_brand_ends_what_was_joined_through_it_and_is_answered(
    gateway_factory: Callable[..., Gateway], database_url: str, keywords_copy: Path,
) -> None:
    gateway = gateway_factory(database_url, keywords=str(keywords_copy))
    joined(gateway, BOB, BISTRO, ("MENU", "OUI"))
    moved = keywords_copy.read_text().replace('senders: ["+15005550007"]', 'senders: ["+15005550008"]')
    assert moved != keywords_copy.read_text()
    keywords_copy.write_text(moved)
    assert reload_rules(gateway.state) is False  # the old number still has a subscriber
    keywords_copy.write_text(moved + 'retired:\n  senders: ["+15005550007"]\n')
    assert reload_rules(gateway.state) is True
    before = len(gateway.replies(BOB))
    assert gateway.text("STOP", from_=BOB, to=BISTRO).status_code == 200
    gateway.drain(advance=0.5)
    assert gateway.subs(BOB) == {"menu": "unsubscribed"}
    replies = gateway.replies(BOB)
    assert len(replies) == before + 1 and replies[-1].startswith("Bistro Lumière : vous ne recevrez plus")  # in French
    assert gateway.fake.messages(to=BOB)[-1].from_ == BISTRO  # from the number the phone texted


def test_a_plain_stop_on_a_sender_ends_a_program_that_moved_away_from_it(
    gateway_factory: Callable[..., Gateway], database_url: str, keywords_copy: Path,
) -> None:
    """deals moves from the shared number to a number of its own; a STOP to the shared number still ends it."""
    gateway = gateway_factory(database_url, keywords=str(keywords_copy))
    joined(gateway, ADA, ACME, ("DEALS", "YES"))
    text = keywords_copy.read_text()
    deals = text.index("      deals:")
    first = text.index('senders: ["+15005550006"]', deals)
    moved = text[:first] + 'senders: ["+15005550009"]' + text[first + len('senders: ["+15005550006"]'):]
    keywords_copy.write_text(moved + 'retired:\n  senders: ["+15005550006"]\n')
    assert reload_rules(gateway.state) is True
    assert gateway.state.rules.for_sender(ACME) is not None  # news still lives there
    assert gateway.text("STOP", from_=ADA, to=ACME).status_code == 200
    gateway.drain(advance=0.5)
    assert gateway.subs(ADA)["deals"] == "unsubscribed"


def test_a_stop_to_a_number_nobody_joined_through_changes_nothing(gateway: Gateway) -> None:
    assert gateway.text("STOP", from_=ADA, to="+15005550099").status_code == 200
    assert gateway.subs(ADA) == {}
    assert gateway.query("SELECT kind FROM inbound_messages")[0][0] == "unrouted"
