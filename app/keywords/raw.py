"""The shape of keywords.yaml as the loader reads it: each level's fields, and its records before they freeze.

`app.keywords.loader` fills these from the YAML nodes and freezes them into `Rules`; the
cross-checks (`conflicts`) and the warnings (`checks`) read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time as dt_time
from datetime import timedelta

from app.matching import Kind
from app.senders import SenderConfig

ROOT_FIELDS = ("version", "defaults", "brands", "retired")
RETIRED_FIELDS = ("brands", "programs", "senders")
DEFAULTS_FIELDS = ("double_opt_in", "doi_expires_after", "prompt_cooldown", "keywords")
DEFAULT_KEYWORD_FIELDS = ("stop", "help", "start", "confirm")
BRAND_FIELDS = (
    "name",
    "help_contact",
    "language",
    "default_region",
    "allowed_countries",
    "default_program",
    "messages",
    "events",
    "programs",
    "opt_out_scope",
    "quiet_hours",
    "timezone",
)
BRAND_MESSAGES = ("stop", "help")
EVENTS_FIELDS = ("url", "secret_env")
PROGRAM_FIELDS = (
    "name",
    "senders",
    "keywords",
    "messages",
    "double_opt_in",
    "doi_expires_after",
    "prompt_cooldown",
    "language",
    "max_per_day",
    "marketing",
)
SENDER_FIELDS = ("id", "provider", "rate")
PROGRAM_KEYWORD_FIELDS = ("join", "confirm", "stop", "help", "start")
PROGRAM_MESSAGES = ("welcome", "stop", "help", "doi_prompt", "already_subscribed", "doi_expired")


@dataclass
class Kw:
    written: str
    words: tuple[str, ...]
    language: str | None
    line: int | None  # None: the built-in floor
    own: bool = False  # written in this program (not inherited)


@dataclass
class Msg:
    text: str
    line: int


@dataclass
class RawSender:
    id: str  # as written
    line: int  # of the list item
    provider: str | None = None  # None: the deployment's default provider
    provider_line: int = 0
    rate: float | None = None  # None: the default rate of its kind

    def config(self) -> SenderConfig:
        return SenderConfig.of(self.id, self.provider, self.rate)


@dataclass
class RawProgram:
    brand: str
    key: str
    line: int
    name: str = ""
    senders: list[RawSender] = field(default_factory=list)
    double_opt_in: bool = True
    doi_expires_after: timedelta = timedelta(hours=48)
    prompt_cooldown: timedelta = timedelta(minutes=10)
    language: str = "en"
    keywords: dict[Kind, list[Kw]] = field(default_factory=dict)
    messages: dict[str, dict[str | None, Msg]] = field(default_factory=dict)
    messages_line: int = 0
    max_per_day: int | None = None
    marketing: bool = False


@dataclass
class RawBrand:
    key: str
    line: int
    name: str = ""
    help_contact: str = ""
    language: str = "en"
    default_region: str | None = "US"
    allowed_countries: frozenset[str] | None = None
    messages: dict[str, dict[str | None, Msg]] = field(default_factory=dict)
    messages_line: int = 0
    events_url: str | None = None
    events_secret_env: str | None = None
    programs: dict[str, RawProgram] = field(default_factory=dict)
    default_program: str | None = None
    default_program_line: int = 0
    opt_out_scope: str = "brand"
    opt_out_scope_line: int = 0
    quiet_hours: tuple[dt_time, dt_time] | None = None
    timezone: str = "UTC"
