"""Short codes as senders: Twilio posts the digits in `To` (courier's captured Twilio payloads show
`To=384387`, nyaruka/courier handlers/twilio/handler_test.go); replies go out from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.keywords import check
from tests.conftest import KEYWORDS, Gateway

SHORT_CODE = "384387"


def short_code_keywords(tmp_path: Path) -> Path:
    text = KEYWORDS.read_text().replace('senders: ["+15005550007"]', f'senders: ["+15005550007", "{SHORT_CODE}"]')
    assert SHORT_CODE in text
    path = tmp_path / "keywords.yaml"
    path.write_text(text)
    return path


def test_check_accepts_a_short_code_sender_and_refuses_other_digit_strings(tmp_path: Path) -> None:
    path = short_code_keywords(tmp_path)
    assert check(path).ok
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace(f'"{SHORT_CODE}"', '"12"'))
    assert any("not a phone number in E.164 form" in str(f) for f in check(bad).errors)


def test_a_conversation_on_a_short_code(gateway_factory: Callable[..., Gateway], sqlite_url: str,
                                        tmp_path: Path) -> None:
    gateway = gateway_factory(sqlite_url, keywords=str(short_code_keywords(tmp_path)))
    phone = "+33612345678"  # bistro serves FR
    for text in ("MENU", "OUI", "STOP"):
        assert gateway.text(text, from_=phone, to=SHORT_CODE).status_code == 200
        gateway.drain()
    messages = gateway.fake.messages(to=phone)
    assert [m.from_ for m in messages] == [SHORT_CODE] * 3
    assert [m.body.split(" ")[0] for m in messages] == ["Menu", "Menu", "Bistro"]
    assert gateway.subs(phone) == {"menu": "unsubscribed"}
