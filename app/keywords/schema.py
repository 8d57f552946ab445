"""What keywords.yaml becomes: the frozen `Rules`, and what `check` reports (`Finding`, `CheckReport`).

Also two value readers other rooms use: `parse_duration` ("48h") and `segments` (how many
SMS parts a text takes). Pure: no file and no YAML here (app.keywords.loader reads the file).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType

from app.brands import Brand, Program
from app.matching import KeywordEntry, Kind, SenderRules
from app.senders import SenderConfig, sender_key


@dataclass(frozen=True)
class Finding:
    """One problem `check` found, with the file line of the offending node."""

    file: str
    line: int  # 1-based; 0 when the problem is the file itself
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """What `check` found: errors stop start-up, warnings do not."""

    errors: list[Finding]
    warnings: list[Finding]

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return not self.errors


# --- durations and segments ------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> timedelta:
    """Parse "48h", "10m", "30s", "2d" or a combination such as "1h30m"; ValueError otherwise."""
    value = text.strip().lower() if isinstance(text, str) else ""
    found = _DURATION.fullmatch(value)
    if not value or found is None:
        raise ValueError(f"bad duration {text!r}: use a number with d, h, m or s, like 48h, 10m or 1h30m")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in found.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


# GSM 03.38: the basic table costs one septet, the extension table two (escape + char).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
GSM7_SINGLE, _GSM7_MULTI = 160, 153  # septets; a concatenated part loses 7 to its header
UCS2_SINGLE, _UCS2_MULTI = 70, 67  # UTF-16 code units


def segments(text: str) -> tuple[str, int]:
    """The encoding ("GSM-7" or "UCS-2") and number of SMS segments `text` takes."""
    septets = 0
    for ch in text:
        if ch in _GSM7_BASIC:
            septets += 1
        elif ch in _GSM7_EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return "UCS-2", 1 if units <= UCS2_SINGLE else math.ceil(units / _UCS2_MULTI)
    return "GSM-7", 1 if septets <= GSM7_SINGLE else math.ceil(septets / _GSM7_MULTI)


# --- the immutable rules ---------------------------------------------------------------

class Rules:
    """Every brand, program and sender of one keywords.yaml; built once, never changed."""

    def __init__(
        self, path: str, brands: Mapping[str, Brand], entries: Mapping[tuple[str, str], list[KeywordEntry]],
        *, sha256: str = "", senders: Mapping[str, SenderConfig] | None = None,
        retired: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.path = path
        # What the operator took out on purpose while it still had subscribers (`retired:`).
        self.retired: Mapping[str, frozenset[str]] = MappingProxyType(dict(retired or {}))
        self.sha256 = sha256  # of the file these rules were loaded from
        self.brands: Mapping[str, Brand] = MappingProxyType(dict(brands))
        # (brand, program) -> its keywords with their kind and language (the console's keywords page).
        self.entries: Mapping[tuple[str, str], list[KeywordEntry]] = MappingProxyType(dict(entries))
        if senders is None:  # every sender with its kind's defaults
            senders = {s: SenderConfig.of(s) for b in self.brands.values() for p in b.programs.values()
                       for s in p.senders}
        # Every configured sender by id, as first written; looked up by sender_key, like for_sender.
        self.sender_configs: Mapping[str, SenderConfig] = MappingProxyType(dict(senders))
        self._config_by_key = {sender_key(c.id): c for c in self.sender_configs.values()}
        # Every message rendered once: placeholders only name config values.
        self._rendered: dict[tuple[str, str | None, str], dict[str, str]] = {}
        for brand in self.brands.values():
            for name, by_lang in brand.messages.items():
                self._rendered[(brand.key, None, name)] = {
                    lang: _render(text, brand, None) for lang, text in by_lang.items()
                }
            for program in brand.programs.values():
                for name, by_lang in program.messages.items():
                    self._rendered[(brand.key, program.key, name)] = {
                        lang: _render(text, brand, program) for lang, text in by_lang.items()
                    }
        # One SenderRules per distinct set of programs, shared by the senders hosting it.
        groups: dict[str, list[Program]] = {}
        for brand in self.brands.values():
            for program in brand.programs.values():
                for sender in program.senders:
                    groups.setdefault(sender_key(sender), []).append(program)
        built: dict[tuple[tuple[str, str], ...], SenderRules] = {}

        def sender_rules(programs: list[Program]) -> SenderRules:
            ids = tuple((p.brand, p.key) for p in programs)
            if ids not in built:
                ordered = [e for kind in Kind for pid in ids for e in entries[pid] if e.kind is kind]
                built[ids] = SenderRules(self.brands[programs[0].brand], tuple(programs), ordered)
            return built[ids]

        self._by_sender: dict[str, SenderRules] = {key: sender_rules(progs) for key, progs in groups.items()}
        # A number that is also in one of its brand's Messaging Services reaches the union.
        self._pairs: dict[tuple[str, str], SenderRules] = {}
        for number, number_rules in self._by_sender.items():
            if number.startswith("MG"):
                continue
            for sid, sid_rules in self._by_sender.items():
                if sid.startswith("MG") and sid_rules.brand is number_rules.brand:
                    union = list(number_rules.programs)
                    union += [p for p in sid_rules.programs if p not in union]
                    order = list(number_rules.brand.programs)
                    union.sort(key=lambda p: order.index(p.key))
                    self._pairs[(number, sid)] = sender_rules(union)

    def for_sender(self, to: str | None, messaging_service_sid: str | None = None) -> SenderRules | None:
        """The programs reached through number `to` or the Messaging Service (their union); None if none."""
        by_number = self._by_sender.get(to) if to else None
        sid = sender_key(messaging_service_sid) if messaging_service_sid else None
        by_sid = self._by_sender.get(sid) if sid else None
        if by_number is not None and by_sid is not None and sid is not None and to is not None:
            # Numbers of another brand's service: the service Twilio routed through wins.
            return self._pairs.get((to, sid), by_sid)
        return by_number if by_number is not None else by_sid

    def sender_config(self, sender_id: str) -> SenderConfig | None:
        """The configuration of one sender (an MG SID in any case), None when no program lists it."""
        return self._config_by_key.get(sender_key(sender_id))

    def brand(self, key: str) -> Brand:
        """The brand with this key; KeyError if unknown."""
        return self.brands[key]

    def program(self, brand: str, key: str) -> Program:
        """One program of one brand; KeyError if unknown."""
        return self.brands[brand].programs[key]

    def render(self, brand: str, program: str | None, message: str, language: str | None) -> str | None:
        """A message with placeholders filled, in `language` if it has it; None when not configured."""
        b = self.brands[brand]
        default_language = b.programs[program].language if program is not None else b.language
        rendered = self._rendered.get((brand, program, message))
        if rendered is None and program is None and len(b.programs) == 1:
            # Brand-level text is only required on shared senders; a one-program brand
            # answers for itself with its program's message.
            only = next(iter(b.programs.values()))
            rendered = self._rendered.get((brand, only.key, message))
            default_language = only.language
        if not rendered:
            return None
        for lang in (language, language.split("-")[0] if language else None, default_language):
            if lang and lang in rendered:
                return rendered[lang]
        return next(iter(rendered.values()))

    def sender_of(self, brand: str, program: str, to: str | None, messaging_service_sid: str | None) -> str:
        """The configured sender of the program that served this text: the MG SID if through it, else the number.

        With neither (an API opt-in), the program's first configured sender.
        """
        p = self.brands[brand].programs[program]
        if messaging_service_sid:
            sid = sender_key(messaging_service_sid)
            for sender in p.senders:
                if sender_key(sender) == sid:
                    return sender
        if to and to in p.senders:
            return to
        return p.senders[0]


def _render(template: str, brand: Brand, program: Program | None) -> str:
    return template.format(
        brand=brand.name,
        program=program.name if program is not None else brand.name,
        help_contact=brand.help_contact,
    )
