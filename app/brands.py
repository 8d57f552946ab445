"""A brand and its programs as keywords.yaml configures them, defaults applied: plain frozen values.

app.keywords builds them from the file; app.matching and every service read them. They live
in a room of their own so that the matcher, which the loader uses, needs nothing of the loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time as dt_time
from datetime import timedelta
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Program:
    """One SMS program of a brand, as configured, with defaults applied."""

    brand: str  # brand key, e.g. "acme"
    key: str  # program key, e.g. "deals"
    name: str
    senders: tuple[str, ...]  # sender ids as configured (E.164, short code or MG SID); Rules.sender_config has the rest
    double_opt_in: bool
    doi_expires_after: timedelta
    prompt_cooldown: timedelta
    language: str  # the program's language, inheriting the brand's
    join: tuple[str, ...]  # join keywords as written
    messages: Mapping[str, Mapping[str, str]]  # message name -> language -> template
    # kind ("stop", "help", "start", "confirm", "join") -> every keyword active for this
    # program as written, floor and defaults included (for GET /v1/programs).
    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)
    # Consent rules (docs/compliance.md): at most this many texts to one phone in 24 h (None: no
    # cap of the brand's own), and whether the program markets (state caps then apply too).
    max_per_day: int | None = None
    marketing: bool = False


@dataclass(frozen=True)
class Brand:
    """One brand: its contact details, brand-level messages and programs."""

    key: str
    name: str
    help_contact: str
    language: str
    default_region: str | None  # for API numbers written without a country code
    allowed_countries: frozenset[str] | None  # None = every country
    messages: Mapping[str, Mapping[str, str]]  # brand-level stop/help: name -> language -> template
    events_url: str | None
    events_secret_env: str | None
    programs: Mapping[str, Program]  # key -> Program, in file order
    default_program: str | None = None  # receives API requests that name no program
    rules_sha256: str = ""  # of the keywords file this brand was loaded from (the consent ledger records it)
    # What a plain opt-out ends: "brand" (every program, every sender; the FCC's revoke-all
    # rule) or "sender" (the programs on the number texted). STOP <program> is always one program.
    opt_out_scope: str = "brand"
    # The brand's own sending window (local start, end), narrowing the law's; None: the law's alone.
    quiet_hours: tuple[dt_time, dt_time] | None = None
    timezone: str = "UTC"  # IANA name: the brand's days and weeks in the console's analytics


__all__ = ["Brand", "Program"]
