"""Shared by the dialect tables (tests/test_dialect_*.py): a gateway on the repository's keywords.yaml
with acme's `default_program: deals` set, and keys in each vendor's way."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from app.auth import create_key
from tests.conftest import KEYWORDS, Gateway, unlimited

_DIR = Path(tempfile.mkdtemp(prefix="optline-dialects-"))


def keywords_with_default_program() -> str:
    """keywords.yaml with acme's default program set: Noticia's opt-in names none (000:29-39)."""
    text = KEYWORDS.read_text(encoding="utf-8")
    anchor = "    allowed_countries: [US, CA, FR]\n"
    assert anchor in text, "acme's allowed_countries line moved; update the anchor"
    path = _DIR / "keywords.yaml"
    path.write_text(text.replace(anchor, anchor + "    default_program: deals\n", 1), encoding="utf-8")
    return unlimited(path)


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway], database_url: str) -> Gateway:
    """optline on each database, acme's default_program being deals."""
    return gateway_factory(database_url, keywords=keywords_with_default_program())


def make_key(gateway: Gateway, brand: str = "acme") -> str:
    return str(gateway.state.writer.call(lambda c, now: create_key(c, now, brand=brand, name="dialect"))[1])


def basic(key: str) -> str:
    """HTTP Basic with the key as the user and no password (Cordial)."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()

