"""Load and validate keywords.yaml into frozen rules; `check` reports errors and warnings (pure).

Normalising and matching live in `app.matching`; the names other modules need are
re-exported here so they import from one place.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import string
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from datetime import time as dt_time
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import phonenumbers
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from app.brands import Brand, Program
from app.errors import ConfigError, InvalidPhone
from app.rules import config as consent_rules
from app.matching import (
    BUILTIN_CONFIRM,
    BUILTIN_HELP,
    BUILTIN_START,
    BUILTIN_STOP,
    KeywordEntry,
    Kind,
    Match,
    SenderRules,
    is_opt_out_intent,
    keyword_words,
    normalize,
    split_words,
)
from app.phone import to_e164
from app.senders import MAX_RATE, MG_SID, SERVICE_PROVIDER, SHORT_CODE_DIGITS, SenderConfig, sender_key
from app.settings import PROVIDER_NAMES

__all__ = [
    "Brand",
    "CheckReport",
    "Finding",
    "Kind",
    "Match",
    "Program",
    "Rules",
    "SenderConfig",
    "SenderRules",
    "check",
    "is_opt_out_intent",
    "load_rules",
    "normalize",
    "parse_duration",
    "segments",
    "split_words",
]



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
_GSM7_SINGLE, _GSM7_MULTI = 160, 153  # septets; a concatenated part loses 7 to its header
_UCS2_SINGLE, _UCS2_MULTI = 70, 67  # UTF-16 code units


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
            return "UCS-2", 1 if units <= _UCS2_SINGLE else math.ceil(units / _UCS2_MULTI)
    return "GSM-7", 1 if septets <= _GSM7_SINGLE else math.ceil(septets / _GSM7_MULTI)


# --- the immutable rules ---------------------------------------------------------------

_PLACEHOLDERS = ("brand", "program", "help_contact")


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


# --- loading ---------------------------------------------------------------------------

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
_TAG_MERGE = "tag:yaml.org,2002:merge"
_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")

_ROOT_FIELDS = ("version", "defaults", "brands", "retired")
_RETIRED_FIELDS = ("brands", "programs", "senders")
_DEFAULTS_FIELDS = ("double_opt_in", "doi_expires_after", "prompt_cooldown", "keywords")
_DEFAULT_KEYWORD_FIELDS = ("stop", "help", "start", "confirm")
_BRAND_FIELDS = (
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
_BRAND_MESSAGES = ("stop", "help")
_EVENTS_FIELDS = ("url", "secret_env")
_PROGRAM_FIELDS = (
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
_SENDER_FIELDS = ("id", "provider", "rate")
_PROGRAM_KEYWORD_FIELDS = ("join", "confirm", "stop", "help", "start")
_PROGRAM_MESSAGES = ("welcome", "stop", "help", "doi_prompt", "already_subscribed", "doi_expired")

_BUILTIN_FLOOR = {Kind.STOP: BUILTIN_STOP, Kind.HELP: BUILTIN_HELP, Kind.START: BUILTIN_START}

# CTIA: a DOI prompt must disclose charges. The English wording, its Canadian French one, or the
# Spanish ones US carriers' bilingual programs use ("Pueden aplicarse tarifas de mensajes y datos",
# "Se pueden aplicar tarifas de msj y datos", "Tarifas de mensajes y datos pueden aplicar").
_RATES_DISCLOSURE = re.compile(
    r"\b(?:msg\s*&\s*data|msg and data|message and data|messages and data) rates may apply\b"
    r"|\bdes frais de messagerie(?: texte)? et de donnees peuvent s['\u2019]appliquer\b"
    r"|\b(?:pueden aplicarse|se pueden aplicar|podrian aplicarse|aplican) (?:las )?(?:tarifas|cargos) (?:de|por) "
    r"(?:mensajes|mensajeria|msj|msjs|sms)\s*(?:y|&)\s*datos\b"
    r"|\b(?:tarifas|cargos) (?:de|por) (?:mensajes|mensajeria|msj|msjs|sms)\s*(?:y|&)\s*datos "
    r"(?:pueden aplicar(?:se)?|podrian aplicar(?:se)?|aplican)\b"
)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


# Numbers as YAML 1.1 writes them in decimal (`100`, `2.5`, `1_000`); hex, octal,
# sexagesimal, .inf and .nan are no rate.
_INT = re.compile(r"[-+]?[0-9][0-9_]*")
_FLOAT = re.compile(r"[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?")


def _number(node: Node) -> float | None:
    """The value of an int or float scalar written in decimal; None for anything else (a quoted "5" too)."""
    if not isinstance(node, ScalarNode):
        return None
    text = node.value.replace("_", "")
    if node.tag == _TAG_INT and _INT.fullmatch(node.value):
        return float(int(text))
    if node.tag == _TAG_FLOAT and _FLOAT.fullmatch(node.value) and any(ch.isdigit() for ch in text):
        return float(text)
    return None


@dataclass
class _Kw:
    written: str
    words: tuple[str, ...]
    language: str | None
    line: int | None  # None: the built-in floor
    own: bool = False  # written in this program (not inherited)


@dataclass
class _Msg:
    text: str
    line: int


@dataclass
class _RawSender:
    id: str  # as written
    line: int  # of the list item
    provider: str | None = None  # None: the deployment's default provider
    provider_line: int = 0
    rate: float | None = None  # None: the default rate of its kind

    def config(self) -> SenderConfig:
        return SenderConfig.of(self.id, self.provider, self.rate)


@dataclass
class _RawProgram:
    brand: str
    key: str
    line: int
    name: str = ""
    senders: list[_RawSender] = field(default_factory=list)
    double_opt_in: bool = True
    doi_expires_after: timedelta = timedelta(hours=48)
    prompt_cooldown: timedelta = timedelta(minutes=10)
    language: str = "en"
    keywords: dict[Kind, list[_Kw]] = field(default_factory=dict)
    messages: dict[str, dict[str | None, _Msg]] = field(default_factory=dict)
    messages_line: int = 0
    max_per_day: int | None = None
    marketing: bool = False


@dataclass
class _RawBrand:
    key: str
    line: int
    name: str = ""
    help_contact: str = ""
    language: str = "en"
    default_region: str | None = "US"
    allowed_countries: frozenset[str] | None = None
    messages: dict[str, dict[str | None, _Msg]] = field(default_factory=dict)
    messages_line: int = 0
    events_url: str | None = None
    events_secret_env: str | None = None
    programs: dict[str, _RawProgram] = field(default_factory=dict)
    default_program: str | None = None
    default_program_line: int = 0
    opt_out_scope: str = "brand"
    opt_out_scope_line: int = 0
    quiet_hours: tuple[dt_time, dt_time] | None = None
    timezone: str = "UTC"


class _Loader:
    """Walks the composed YAML node tree, collecting findings with their lines."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.sha256 = ""  # of the file's bytes, once read
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
        self.brands: dict[str, _RawBrand] = {}
        self.today: date | None = None
        self.retired: dict[str, frozenset[str]] = {name: frozenset() for name in _RETIRED_FIELDS}
        self.defaults = _RawProgram(brand="", key="", line=1)
        self.defaults.keywords = {
            Kind.STOP: [_Kw(k, keyword_words(k), None, None) for k in BUILTIN_STOP],
            Kind.HELP: [_Kw(k, keyword_words(k), None, None) for k in BUILTIN_HELP],
            Kind.START: [_Kw(k, keyword_words(k), None, None) for k in BUILTIN_START],
            Kind.CONFIRM: [_Kw(k, keyword_words(k), None, None) for k in BUILTIN_CONFIRM],
        }

    def error(self, line: int, message: str) -> None:
        self.errors.append(Finding(self.file, line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(Finding(self.file, line, message))

    # -- node helpers

    def mapping(
        self, node: Node, where: str, owner_line: int, allowed: Iterable[str] | None, required: Iterable[str] = ()
    ) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.error(_line(node), f"{where} must be a mapping")
            return None
        allowed_set = tuple(allowed) if allowed is not None else None
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG_MERGE:
                self.error(_line(key_node), f"{where}: YAML merge keys (<<) are not supported")
                continue
            if not isinstance(key_node, ScalarNode) or not key_node.value:
                self.error(_line(key_node), f"{where}: keys must be plain names")
                continue
            key = key_node.value
            if key in out:
                self.error(_line(key_node), f"{where}: duplicate key '{key}' (first at line {_line(out[key][0])})")
                continue
            if allowed_set is not None and key not in allowed_set:
                hint = difflib.get_close_matches(key, allowed_set, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else f"; expected one of {', '.join(allowed_set)}"
                self.error(_line(key_node), f"{where}: unknown field '{key}'{suggestion}")
                continue
            out[key] = (key_node, value_node)
        for name in required:
            if name not in out:
                self.error(owner_line, f"{where}: missing required field '{name}'")
        return out

    def text(self, node: Node, where: str) -> str | None:
        # The raw scalar, whatever YAML 1.1 would resolve it to: YES, NO (Norway) and
        # +15005550006 are strings here, not a bool or an int.
        if not isinstance(node, ScalarNode):
            self.error(_line(node), f"{where} must be a string")
            return None
        if node.tag == _TAG_NULL or not node.value.strip():
            self.error(_line(node), f"{where} must not be empty")
            return None
        return str(node.value).strip()

    def boolean(self, node: Node, where: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG_BOOL:
            return node.value.lower() in ("true", "yes", "on")
        self.error(_line(node), f"{where} must be true or false")
        return None

    def duration(self, node: Node, where: str, *, positive: bool) -> timedelta | None:
        value = self.text(node, where)
        if value is None:
            return None
        try:
            parsed = parse_duration(value)
        except ValueError:
            self.error(
                _line(node), f"{where}: bad duration '{value}'; use a number with d, h, m or s, like 48h, 10m or 1h30m"
            )
            return None
        if positive and not parsed:
            self.error(_line(node), f"{where} must be longer than zero")
            return None
        return parsed

    def language(self, node: Node, where: str) -> str | None:
        value = self.text(node, where)
        if value is not None and not _LANGUAGE.fullmatch(value):
            self.error(_line(node), f"{where}: '{value}' is not a language code like en, fr or pt-BR")
            return None
        return value

    def region(self, node: Node, where: str) -> str | None:
        value = self.text(node, where)
        if value is None:
            return None
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            self.error(_line(node), f"{where}: '{value}' is not an ISO 3166 country code")
            return None
        return value.upper()

    def keywords(self, node: Node, where: str) -> list[_Kw] | None:
        """A keyword list, or a map of language -> list."""
        groups: list[tuple[str | None, Node]] = []
        if isinstance(node, SequenceNode):
            groups.append((None, node))
        elif isinstance(node, MappingNode):
            entries = self.mapping(node, where, _line(node), None)
            if entries is None:
                return None
            for code, (key_node, value_node) in entries.items():
                if self.language(key_node, f"{where} language") is not None:
                    groups.append((code, value_node))
        else:
            self.error(_line(node), f"{where} must be a list of keywords or a map of language to list")
            return None
        out: list[_Kw] = []
        for lang, seq in groups:
            if not isinstance(seq, SequenceNode):
                self.error(_line(seq), f"{where}.{lang} must be a list of keywords")
                continue
            for item in seq.value:
                value = self.text(item, f"{where} keyword")
                if value is None:
                    continue
                words = keyword_words(value)
                if not words:
                    self.error(_line(item), f"{where}: keyword '{value}' has no letters or digits")
                    continue
                out.append(_Kw(value, words, lang, _line(item), own=True))
        return out

    def message(self, node: Node, where: str) -> dict[str | None, _Msg] | None:
        """A message string, or a map of language -> string; None key = the owner's language."""
        pairs: list[tuple[str | None, Node]] = []
        if isinstance(node, MappingNode):
            entries = self.mapping(node, where, _line(node), None)
            if entries is None:
                return None
            for code, (key_node, value_node) in entries.items():
                if self.language(key_node, f"{where} language") is not None:
                    pairs.append((code, value_node))
            if not pairs and not entries:
                self.error(_line(node), f"{where} has no text")
        else:
            pairs.append((None, node))
        out: dict[str | None, _Msg] = {}
        for lang, value_node in pairs:
            label = f"{where}.{lang}" if lang else where
            value = self.text(value_node, label)
            if value is not None and self.placeholders(value, _line(value_node), label):
                out[lang] = _Msg(value, _line(value_node))
        return out

    def placeholders(self, text: str, line: int, where: str) -> bool:
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
        except ValueError:
            self.error(line, f"{where}: unbalanced brace; write {{{{ or }}}} for a literal brace")
            return False
        ok = True
        for name, spec, conversion in fields:
            if name not in _PLACEHOLDERS or spec or conversion:
                shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                self.error(
                    line, f"{where}: unknown placeholder {shown}; use {{brand}}, {{program}} or {{help_contact}}"
                )
                ok = False
        return ok

    # -- the document

    def load(self, text: str) -> None:
        try:
            root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else 1
            problem = " ".join(str(exc.problem or exc.context or "unreadable YAML").split())
            if exc.problem and exc.context:
                # "while parsing a flow sequence" names where the unclosed thing began.
                where = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
                problem += f" ({' '.join(exc.context.split())}{where})"
            self.error(line, f"YAML syntax error: {problem}")
            return
        except yaml.YAMLError as exc:
            self.error(1, f"YAML error: {' '.join(str(exc).split())}")
            return
        if root is None:
            self.error(1, "the file is empty; it needs version: 1 and brands")
            return
        top = self.mapping(root, "the file", 1, _ROOT_FIELDS, ("version", "brands"))
        if top is None:
            return
        if "version" in top:
            node = top["version"][1]
            if not (isinstance(node, ScalarNode) and node.tag == _TAG_INT and node.value == "1"):
                self.error(
                    _line(node), f"unsupported version '{getattr(node, 'value', '')}'; this optline reads version: 1"
                )
        if "defaults" in top:
            self.load_defaults(*top["defaults"])
        if "retired" in top:
            self.load_retired(*top["retired"])
        if "brands" in top:
            key_node, node = top["brands"]
            brands = self.mapping(node, "brands", _line(key_node), None)
            if brands is not None and not brands:
                self.error(_line(key_node), "brands: at least one brand is required")
            for key, (bkey, bnode) in (brands or {}).items():
                self.load_brand(key, bkey, bnode)
        self.cross_check()

    def load_retired(self, key_node: Node, node: Node) -> None:
        """`retired:` names brands, programs (`brand/program`) and senders taken out on purpose while they still
        have subscribers (app.retire refuses a file that drops them silently)."""
        fields = self.mapping(node, "retired", _line(key_node), _RETIRED_FIELDS)
        for name, (name_node, value) in (fields or {}).items():
            if not isinstance(value, SequenceNode) or not all(isinstance(item, ScalarNode) for item in value.value):
                self.error(_line(name_node), f"retired.{name} must be a list of names")
                continue
            self.retired[name] = frozenset(str(item.value) for item in value.value)

    def load_defaults(self, key_node: Node, node: Node) -> None:
        d = self.defaults
        fields = self.mapping(node, "defaults", _line(key_node), _DEFAULTS_FIELDS)
        if fields is None:
            return
        self.settings(d, fields, "defaults")
        if "keywords" in fields:
            kw_fields = self.mapping(
                fields["keywords"][1], "defaults.keywords", _line(fields["keywords"][0]), _DEFAULT_KEYWORD_FIELDS
            )
            for name, (_, value) in (kw_fields or {}).items():
                parsed = self.keywords(value, f"defaults.keywords.{name}")
                if parsed is None:
                    continue
                for kw in parsed:
                    kw.own = False
                kind = Kind(name)
                if kind is Kind.CONFIRM:
                    d.keywords[kind] = parsed  # a default, so the file's list replaces YES, Y
                else:
                    d.keywords[kind] = d.keywords[kind] + parsed  # the floor stays: a file only adds

    def settings(self, target: _RawProgram, fields: dict[str, tuple[Node, Node]], where: str) -> None:
        if "double_opt_in" in fields:
            value = self.boolean(fields["double_opt_in"][1], f"{where}.double_opt_in")
            if value is not None:
                target.double_opt_in = value
        if "doi_expires_after" in fields:
            expiry = self.duration(fields["doi_expires_after"][1], f"{where}.doi_expires_after", positive=True)
            if expiry is not None:
                target.doi_expires_after = expiry
        if "prompt_cooldown" in fields:
            cooldown = self.duration(fields["prompt_cooldown"][1], f"{where}.prompt_cooldown", positive=False)
            if cooldown is not None:
                target.prompt_cooldown = cooldown

    def load_brand(self, key: str, key_node: Node, node: Node) -> None:
        where = f"brand '{key}'"
        if not _KEY.fullmatch(key):
            self.error(_line(key_node), f"{where}: a brand key is lower-case letters, digits, _ or -")
        brand = _RawBrand(key=key, line=_line(key_node))
        fields = self.mapping(node, where, _line(key_node), _BRAND_FIELDS, ("name", "help_contact", "programs"))
        if fields is None:
            return
        self.brands[key] = brand
        for name in ("name", "help_contact"):
            if name in fields:
                setattr(brand, name, self.text(fields[name][1], f"{where}.{name}") or "")
        if "language" in fields:
            brand.language = self.language(fields["language"][1], f"{where}.language") or brand.language
        if "default_region" in fields:
            brand.default_region = self.region(fields["default_region"][1], f"{where}.default_region")
        if "timezone" in fields:
            zone = self.text(fields["timezone"][1], f"{where}.timezone")
            if zone is not None and not _is_zone(zone):
                self.error(_line(fields["timezone"][1]), f"{where}.timezone: '{zone}' is not an IANA time zone "
                                                         "(like America/New_York)")
            elif zone is not None:
                brand.timezone = zone
        if "allowed_countries" in fields:
            kn, vn = fields["allowed_countries"]
            if not isinstance(vn, SequenceNode):
                self.error(
                    _line(vn),
                    f"{where}.allowed_countries must be a list of country codes (leave it out to allow every country)",
                )
            elif not vn.value:
                self.error(
                    _line(kn),
                    f"{where}.allowed_countries is empty, so no number could be prompted; "
                    "leave it out to allow every country",
                )
            else:
                codes = [self.region(item, f"{where}.allowed_countries") for item in vn.value]
                brand.allowed_countries = frozenset(c for c in codes if c)
        if "default_program" in fields:
            brand.default_program = self.text(fields["default_program"][1], f"{where}.default_program")
            brand.default_program_line = _line(fields["default_program"][1])
        if "messages" in fields:
            kn, vn = fields["messages"]
            brand.messages_line = _line(kn)
            for name, (_, mnode) in (self.mapping(vn, f"{where}.messages", _line(kn), _BRAND_MESSAGES) or {}).items():
                parsed = self.message(mnode, f"{where}.messages.{name}")
                if parsed:
                    brand.messages[name] = parsed
        if "events" in fields:
            kn, vn = fields["events"]
            events = self.mapping(vn, f"{where}.events", _line(kn), _EVENTS_FIELDS, _EVENTS_FIELDS) or {}
            if "url" in events:
                url = self.text(events["url"][1], f"{where}.events.url")
                if url is not None and not _URL.fullmatch(url):
                    self.error(_line(events["url"][1]), f"{where}.events.url: '{url}' is not an http(s) URL")
                brand.events_url = url
            if "secret_env" in events:
                env = self.text(events["secret_env"][1], f"{where}.events.secret_env")
                if env is not None and not _ENV_NAME.fullmatch(env):
                    self.error(
                        _line(events["secret_env"][1]),
                        f"{where}.events.secret_env: '{env}' is not an environment variable name",
                    )
                brand.events_secret_env = env
        consent_rules.load_brand_fields(self, brand, fields, where)
        # Plain-string messages take the brand's language, known only now.
        for by_lang in brand.messages.values():
            if None in by_lang:
                by_lang.setdefault(brand.language, by_lang.pop(None))
        if "programs" in fields:
            kn, vn = fields["programs"]
            programs = self.mapping(vn, f"{where}.programs", _line(kn), None)
            if programs is not None and not programs:
                self.error(_line(kn), f"{where}: at least one program is required")
            for pkey, (pkn, pvn) in (programs or {}).items():
                self.load_program(brand, pkey, pkn, pvn)
        if brand.default_program is not None and brand.default_program not in brand.programs:
            self.error(brand.default_program_line, f"{where}.default_program: '{brand.default_program}' is not one of "
                       f"the brand's programs ({', '.join(brand.programs) or 'none'})")

    def load_program(self, brand: _RawBrand, key: str, key_node: Node, node: Node) -> None:
        where = f"program '{brand.key}/{key}'"
        if not _KEY.fullmatch(key):
            self.error(_line(key_node), f"{where}: a program key is lower-case letters, digits, _ or -")
        d = self.defaults
        program = _RawProgram(
            brand=brand.key,
            key=key,
            line=_line(key_node),
            double_opt_in=d.double_opt_in,
            doi_expires_after=d.doi_expires_after,
            prompt_cooldown=d.prompt_cooldown,
            language=brand.language,
            keywords={kind: list(kws) for kind, kws in d.keywords.items()},
        )
        program.keywords[Kind.JOIN] = []
        fields = self.mapping(node, where, _line(key_node), _PROGRAM_FIELDS, ("name", "senders", "keywords"))
        if fields is None:
            return
        brand.programs[key] = program
        if "name" in fields:
            program.name = self.text(fields["name"][1], f"{where}.name") or ""
        if "language" in fields:
            program.language = self.language(fields["language"][1], f"{where}.language") or program.language
        self.settings(program, fields, where)
        consent_rules.load_program_fields(self, program, fields, where)
        if "senders" in fields:
            kn, vn = fields["senders"]
            if not isinstance(vn, SequenceNode) or not vn.value:
                self.error(
                    _line(vn),
                    f"{where}.senders must be a non-empty list of E.164 numbers, short codes or MG… Messaging Service SIDs",
                )
            else:
                for item in vn.value:
                    self.sender(program, item, where)
        if "keywords" in fields:
            kn, vn = fields["keywords"]
            kws = self.mapping(vn, f"{where}.keywords", _line(kn), _PROGRAM_KEYWORD_FIELDS, ("join",))
            for name, (_, kvn) in (kws or {}).items():
                parsed = self.keywords(kvn, f"{where}.keywords.{name}")
                if parsed is None:
                    continue
                if name == "join" and not parsed:
                    self.error(_line(kvn), f"{where}.keywords.join needs at least one keyword")
                program.keywords[Kind(name)] += parsed  # lists extend the defaults, never replace them
        if "messages" in fields:
            kn, vn = fields["messages"]
            program.messages_line = _line(kn)
            for name, (_, mnode) in (self.mapping(vn, f"{where}.messages", _line(kn), _PROGRAM_MESSAGES) or {}).items():
                message = self.message(mnode, f"{where}.messages.{name}")
                if message:
                    program.messages[name] = message
        for by_lang in program.messages.values():
            if None in by_lang:
                by_lang.setdefault(program.language, by_lang.pop(None))
        required = ["welcome", "stop", "help"] + (["doi_prompt"] if program.double_opt_in else [])
        for name in required:
            if name not in program.messages and not self.failed_message(program, name):
                reason = " (the program uses double opt-in)" if name == "doi_prompt" else ""
                self.error(program.messages_line or program.line, f"{where}: missing required message '{name}'{reason}")

    def failed_message(self, program: _RawProgram, name: str) -> bool:
        # A message written but refused already has its error; don't also call it missing.
        prefix = f"program '{program.brand}/{program.key}'.messages.{name}"
        return any(f.message.startswith(prefix) for f in self.errors)

    def sender(self, program: _RawProgram, node: Node, where: str) -> None:
        """One item of `senders`: an id, or a map {id, provider, rate}."""
        line = _line(node)
        if isinstance(node, MappingNode):
            fields = self.mapping(node, f"{where} sender", line, _SENDER_FIELDS, ("id",))
            if fields is None or "id" not in fields:
                return
            value = self.sender_id(fields["id"][1], where)
            if value is None:
                return
            sender = _RawSender(value, line)
            if "provider" in fields and not self.sender_provider(sender, fields["provider"][1], where):
                return
            if "rate" in fields and not self.sender_rate(sender, fields["rate"][1], where):
                return
        elif isinstance(node, ScalarNode):
            value = self.sender_id(node, where)
            if value is None:
                return
            sender = _RawSender(value, line)
        else:
            self.error(line, f"{where}: a sender is an id (a number, short code or MG… SID) or a map with id, "
                             "provider and rate")
            return
        if any(sender_key(s.id) == sender_key(value) for s in program.senders):
            self.error(line, f"{where}: sender {value} is listed twice")
            return
        program.senders.append(sender)

    def sender_id(self, node: Node, where: str) -> str | None:
        value = self.text(node, f"{where} sender")
        if value is None:
            return None
        line = _line(node)
        if value.startswith("MG"):
            if not MG_SID.fullmatch(value):
                self.error(line, f"{where}: '{value}' is not a Messaging Service SID (MG and 32 hex digits)")
                return None
        elif SHORT_CODE_DIGITS.fullmatch(value):
            pass  # a short code, as Twilio posts it in To: digits only, valid in the brand's region
        else:
            try:
                e164 = to_e164(value, None)
            except InvalidPhone:
                e164 = None
            if e164 != value:
                better = f" (write {e164})" if e164 else ""
                self.error(line, f"{where}: sender '{value}' is not a phone number in E.164 form{better}")
                return None
        return value

    def sender_provider(self, sender: _RawSender, node: Node, where: str) -> bool:
        label = f"{where} sender {sender.id}.provider"
        value = self.text(node, label)
        if value is None:
            return False
        name = value.lower()
        if name not in PROVIDER_NAMES:
            hint = difflib.get_close_matches(name, PROVIDER_NAMES, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            self.error(_line(node), f"{label}: unknown provider '{value}'{suggestion}; "
                                    f"expected one of {', '.join(PROVIDER_NAMES)}")
            return False
        if MG_SID.fullmatch(sender.id) and name != SERVICE_PROVIDER:
            self.error(_line(node), f"{label}: a Messaging Service (MG…) is Twilio's; its provider can only be "
                                    f"{SERVICE_PROVIDER}, not {name}")
            return False
        sender.provider, sender.provider_line = name, _line(node)
        return True

    def sender_rate(self, sender: _RawSender, node: Node, where: str) -> bool:
        rate = _number(node)
        if rate is None or not 0 < rate <= MAX_RATE:
            shown = f"'{node.value}' is not a rate" if isinstance(node, ScalarNode) else "must be a number"
            self.error(_line(node), f"{where} sender {sender.id}.rate: {shown}; write the most messages a second "
                                    f"sent from it, a number above 0 and at most {MAX_RATE:g}")
            return False
        sender.rate = rate
        return True

    # -- rules across brands and programs

    def cross_check(self) -> None:
        firsts: dict[str, tuple[_RawProgram, _RawSender]] = {}
        groups: dict[str, list[_RawProgram]] = {}
        for brand in self.brands.values():
            for program in brand.programs.values():
                for sender in program.senders:
                    skey = sender_key(sender.id)
                    first_program, first = firsts.setdefault(skey, (program, sender))
                    if first_program.brand != brand.key:
                        self.error(
                            sender.line,
                            f"sender {sender.id} is already used by brand '{first_program.brand}' (line {first.line}); "
                            "a sender belongs to one brand",
                        )
                        continue
                    self.same_sender(first_program, first, program, sender)
                    groups.setdefault(skey, []).append(program)
        reported: set[tuple[str, str]] = set()
        for skey, programs in groups.items():
            if len(programs) > 1:
                brand = self.brands[programs[0].brand]
                for name in _BRAND_MESSAGES:
                    if (brand.key, name) in reported:
                        continue
                    reported.add((brand.key, name))
                    if name not in brand.messages and not any(
                        f.message.startswith(f"brand '{brand.key}'.messages.{name}") for f in self.errors
                    ):
                        shared = ", ".join(p.key for p in programs)
                        self.error(
                            brand.messages_line or brand.line,
                            f"brand '{brand.key}': missing brand-level message '{name}', "
                            f"required because sender {skey} hosts programs {shared}",
                        )
            self.keyword_conflicts(skey, programs)

    def same_sender(self, first_program: _RawProgram, first: _RawSender, program: _RawProgram,
                    sender: _RawSender) -> None:
        """A sender listed by several programs is one sender: one provider sends from it, at one rate."""
        was, now = first.config(), sender.config()
        if sender is first or (was.provider, was.rate) == (now.provider, now.rate):
            return
        self.error(
            sender.line,
            f"program '{program.brand}/{program.key}': sender {sender.id} has {_how(now)} here but {_how(was)} "
            f"in program '{first_program.brand}/{first_program.key}' (line {first.line}); give it the same provider "
            "and rate wherever it is listed (or leave them out)",
        )

    def keyword_conflicts(self, sender: str, programs: list[_RawProgram]) -> None:
        """Keywords on one sender must each mean one thing."""
        fixed: dict[tuple[str, ...], tuple[Kind, _Kw]] = {}
        for kind in (Kind.STOP, Kind.HELP, Kind.START):
            for program in programs:
                for kw in program.keywords[kind]:
                    seen = fixed.setdefault(kw.words, (kind, kw))
                    if seen[0] is not kind:
                        line = kw.line if kw.line is not None else seen[1].line
                        self.error(
                            line or 1,
                            f"keyword '{kw.written}' is both a {seen[0]} and a {kind} keyword on sender {sender}",
                        )
        # A keyword the opt-out detector would read as a stop can never do its job.
        stops = [kw.written for kind, kw in fixed.values() if kind is Kind.STOP]
        for program in programs:
            for kind in (Kind.HELP, Kind.START, Kind.CONFIRM, Kind.JOIN):
                for kw in program.keywords[kind]:
                    if kw.line is not None and kw.words not in fixed and is_opt_out_intent(kw.written, stops):
                        self.error(
                            kw.line,
                            f"{kind} keyword '{kw.written}' would be read as an opt-out (stop) "
                            "by the opt-out detector",
                        )
        confirms: dict[tuple[str, ...], tuple[_RawProgram, _Kw]] = {}
        for program in programs:
            for kw in program.keywords[Kind.CONFIRM]:
                confirms.setdefault(kw.words, (program, kw))
                if kw.words in fixed:
                    other = fixed[kw.words][0]
                    self.error(
                        kw.line or program.line,
                        f"confirm keyword '{kw.written}' is also a {other} keyword on sender {sender}",
                    )
        joins: dict[tuple[str, ...], tuple[_RawProgram, _Kw]] = {}
        for program in programs:
            for kw in program.keywords[Kind.JOIN]:
                line = kw.line or program.line
                if kw.words in fixed:
                    self.error(
                        line,
                        f"join keyword '{kw.written}' of program '{program.key}' "
                        f"is also a {fixed[kw.words][0]} keyword",
                    )
                    continue
                if kw.words in confirms:
                    owner = confirms[kw.words][0]
                    self.error(
                        line,
                        f"join keyword '{kw.written}' of program '{program.key}' "
                        f"is also a confirm keyword of program '{owner.key}' on sender {sender}",
                    )
                    continue
                first = joins.setdefault(kw.words, (program, kw))
                if first[0] is not program:
                    self.error(
                        line,
                        f"join keyword '{kw.written}' is used by programs '{first[0].key}' (line {first[1].line}) "
                        f"and '{program.key}' on sender {sender}",
                    )

    # -- warnings (check only)

    def collect_warnings(self, providers: Sequence[str] | None) -> None:
        for brand in self.brands.values():
            for name, by_lang in brand.messages.items():
                for lang, msg in by_lang.items():
                    self.message_warnings(brand, None, name, lang, msg)
            for program in brand.programs.values():
                for name, by_lang in program.messages.items():
                    for lang, msg in by_lang.items():
                        self.message_warnings(brand, program, name, lang, msg)
                if providers is not None:
                    self.provider_warnings(brand, program, providers)
                mg_lines = [s.line for s in program.senders if s.id.startswith("MG")]
                yeses = [kw for kw in program.keywords[Kind.CONFIRM] if kw.words == ("yes",)]
                yes = next((kw for kw in yeses if kw.own), yeses[0] if yeses else None)
                if mg_lines and yes is not None:
                    self.warn(
                        yes.line if yes.own and yes.line else mg_lines[0],
                        f"program '{brand.key}/{program.key}': YES is a confirm keyword on a Messaging Service sender; "
                        "Twilio Advanced Opt-Out claims YES as an opt-in keyword by default "
                        "(turn it off there, or pick another confirm keyword)",
                    )
                if program.keywords[Kind.JOIN] and "already_subscribed" not in program.messages:
                    self.warn(
                        program.messages_line or program.line,
                        f"program '{brand.key}/{program.key}' has no 'already_subscribed' message: "
                        "a subscriber who texts a join keyword again gets no answer",
                    )
                self.language_warnings(brand, program)
            self.brand_language_warnings(brand)
            consent_rules.brand_warnings(self, brand)

    def provider_warnings(self, brand: _RawBrand, program: _RawProgram, providers: Sequence[str]) -> None:
        """A sender whose provider this deployment does not run could receive texts but never answer them."""
        for sender in program.senders:
            if sender.provider is not None and sender.provider not in providers:
                self.warn(
                    sender.provider_line,
                    f"program '{brand.key}/{program.key}' sender {sender.id}: provider {sender.provider} is not in "
                    f"OPTLINE_PROVIDERS ({','.join(providers)}) here: serve and worker refuse to start with it",
                )

    def language_warnings(self, brand: _RawBrand, program: _RawProgram) -> None:
        """Replies follow the matched keyword's language, else the program's: each must have text in it."""
        where = f"program '{brand.key}/{program.key}'"
        required = ["welcome", "stop", "help"] + (["doi_prompt"] if program.double_opt_in else [])
        for name in required:
            by_lang = program.messages.get(name)
            if by_lang and not _has_language(by_lang, program.language):
                self.warn(
                    _first_line(by_lang),
                    f"{where} message '{name}' has no {program.language} text, the program's language; "
                    f"its replies would be in {_languages(by_lang)}",
                )
        reported: set[tuple[str, str]] = set()
        joined = "doi_prompt" if program.double_opt_in else "welcome"
        for kind, names in _REPLIES_TO.items():
            names = tuple(joined if n == "joined" else n for n in names)
            for kw in program.keywords[kind]:
                if kw.language is None or kw.language == program.language:
                    continue
                for name in names:
                    by_lang = program.messages.get(name)
                    if not by_lang or _has_language(by_lang, kw.language) or (name, kw.language) in reported:
                        continue
                    reported.add((name, kw.language))
                    self.warn(
                        _first_line(by_lang),
                        f"{where} message '{name}' has no {kw.language} text, so a {kind} keyword in "
                        f"{kw.language} ('{kw.written}', line {kw.line}) is answered in {_languages(by_lang)}",
                    )

    def brand_language_warnings(self, brand: _RawBrand) -> None:
        """Brand-level replies are in the matched keyword's language, else the brand's."""
        for name, by_lang in brand.messages.items():
            if not _has_language(by_lang, brand.language):
                self.warn(
                    _first_line(by_lang),
                    f"brand '{brand.key}' message '{name}' has no {brand.language} text, the brand's language; "
                    f"its replies would be in {_languages(by_lang)}",
                )
                continue
            kind = Kind(name)  # brand-level messages are stop and help
            languages = {kw.language: kw for p in brand.programs.values() for kw in p.keywords[kind]
                         if kw.language is not None and not _has_language(by_lang, kw.language)}
            for language, kw in sorted(languages.items()):
                self.warn(
                    _first_line(by_lang),
                    f"brand '{brand.key}' message '{name}' has no {language} text, so a {kind} keyword in "
                    f"{language} ('{kw.written}', line {kw.line}) is answered in {_languages(by_lang)}",
                )

    def message_warnings(
        self, brand: _RawBrand, program: _RawProgram | None, name: str, lang: str | None, msg: _Msg
    ) -> None:
        owner = f"program '{brand.key}/{program.key}'" if program else f"brand '{brand.key}'"
        where = f"{owner} message '{name}' ({lang})"
        rendered = msg.text.format(
            brand=brand.name, program=program.name if program else brand.name, help_contact=brand.help_contact
        )
        encoding, count = segments(rendered)
        if count > 1:
            limit = _GSM7_SINGLE if encoding == "GSM-7" else _UCS2_SINGLE
            self.warn(
                msg.line,
                f"{where} is {count} {encoding} segments once rendered "
                f"({len(rendered)} characters; one segment is {limit})",
            )
        if (
            name == "help"
            and "{help_contact}" not in msg.text
            and brand.help_contact.casefold() not in msg.text.casefold()
        ):
            self.warn(msg.line, f"{where} does not give the help contact; include {{help_contact}}")
        if name == "doi_prompt" and program is not None:
            words = split_words(normalize(rendered))
            if not _mentions(words, program.keywords[Kind.STOP]) or not _mentions(words, program.keywords[Kind.HELP]):
                self.warn(
                    msg.line,
                    f"{where} should tell how to stop and get help (e.g. 'Reply HELP for help, STOP to cancel')",
                )
            if not _RATES_DISCLOSURE.search(normalize(rendered)):
                self.warn(msg.line, f"{where} should say 'Msg&data rates may apply'")
        programs = [program] if program is not None else list(brand.programs.values())
        kinds = _INSTRUCTED_KINDS.get(name, tuple(Kind))
        for forms in _instructed_words(rendered):
            wanted_words = {keyword_words(form) for form in forms}
            if not any(kw.words in wanted_words and kw.language in (None, lang)
                       for p in programs for kind in kinds for kw in p.keywords[kind]):
                word = forms[0]
                wanted = " or ".join(str(kind) for kind in kinds) if name in _INSTRUCTED_KINDS else "any"
                self.warn(
                    msg.line,
                    f"{where} tells people to send {word}, which is not a {wanted} keyword of "
                    f"{'this program' if program is not None else 'its programs'} in {lang}",
                )

    # -- building

    def build(self, path: str) -> Rules:
        brands: dict[str, Brand] = {}
        entries: dict[tuple[str, str], list[KeywordEntry]] = {}
        for raw in self.brands.values():
            programs: dict[str, Program] = {}
            for rp in raw.programs.values():
                programs[rp.key] = Program(
                    brand=raw.key,
                    key=rp.key,
                    name=rp.name,
                    senders=tuple(s.id for s in rp.senders),
                    double_opt_in=rp.double_opt_in,
                    doi_expires_after=rp.doi_expires_after,
                    prompt_cooldown=rp.prompt_cooldown,
                    language=rp.language,
                    join=_written(rp.keywords[Kind.JOIN]),
                    messages=_frozen_messages(rp.messages),
                    keywords=MappingProxyType({str(kind): _written(rp.keywords[kind]) for kind in Kind}),
                    max_per_day=rp.max_per_day,
                    marketing=rp.marketing,
                )
                entries[(raw.key, rp.key)] = [
                    KeywordEntry(kind, kw.words, kw.written, kw.language, rp.key if kind is Kind.JOIN else None)
                    for kind in Kind
                    for kw in rp.keywords[kind]
                ]
            brands[raw.key] = Brand(
                key=raw.key,
                name=raw.name,
                help_contact=raw.help_contact,
                language=raw.language,
                default_region=raw.default_region,
                allowed_countries=raw.allowed_countries,
                messages=_frozen_messages(raw.messages),
                events_url=raw.events_url,
                events_secret_env=raw.events_secret_env,
                programs=MappingProxyType(programs),
                default_program=raw.default_program,
                rules_sha256=self.sha256,
                opt_out_scope=raw.opt_out_scope,
                quiet_hours=raw.quiet_hours,
                timezone=raw.timezone,
            )
        senders: dict[str, SenderConfig] = {}
        for raw in self.brands.values():
            for rp in raw.programs.values():
                for sender in rp.senders:
                    senders.setdefault(sender_key(sender.id), sender.config())  # cross_check made them agree
        configs = {config.id: config for config in senders.values()}
        return Rules(path, brands, entries, sha256=self.sha256, senders=configs, retired=self.retired)


def _how(config: SenderConfig) -> str:
    provider = config.provider or "the default provider"
    return f"provider {provider}, rate {config.rate:g}/s"


def _mentions(words: tuple[str, ...], keywords: list[_Kw]) -> bool:
    for kw in keywords:
        size = len(kw.words)
        if any(words[i : i + size] == kw.words for i in range(len(words) - size + 1)):
            return True
    return False


# The replies a keyword of each kind can draw (the transition table, as far as languages go);
# "joined" is the prompt under double opt-in, else the welcome.
_REPLIES_TO: Mapping[Kind, tuple[str, ...]] = {
    Kind.JOIN: ("joined", "already_subscribed"),
    Kind.CONFIRM: ("welcome", "doi_expired"),
    Kind.STOP: ("stop",),
    Kind.HELP: ("help",),
    Kind.START: ("joined",),
}
# What a message may tell people to send: a prompt asks for the confirm keyword, an expiry
# notice for a join keyword; stop and help are always fair to name. Others: any keyword.
_INSTRUCTED_KINDS: Mapping[str, tuple[Kind, ...]] = {
    "doi_prompt": (Kind.CONFIRM, Kind.STOP, Kind.HELP),
    "doi_expired": (Kind.JOIN, Kind.STOP, Kind.HELP),
}
# "Reply YES", "text JOIN", "répondez OUI", "envoyez MENU", "responde SI", "antworte JA"...:
# the verb (any case) and the word in capitals right after it, the way SMS copy names a
# keyword; "reply to this message" or "text us" name none.
_INSTRUCTION = re.compile(
    r"(?i:\b(?:reply|text|txt|send|respond|r[ée]pond(?:ez|re|s)|envoy(?:ez|er)|envoie|tapez|[ée]crivez|textez"
    r"|responde|responda|env[ií]a|env[ií]e|escribe|antworte|antworten|sende|senden|rispondi|invia"
    r"|antwoord|stuur)(?:\s+(?:with|avec|con|mit|com|met))?)\s+"
    r"[\"'«“]?\s*(\w+)(?: (\w+))?"
)


def _instructed_words(text: str) -> list[tuple[str, ...]]:
    """The keywords a message tells people to send, as written in capitals: each as (word, two-word form?)."""
    out = []
    for found in _INSTRUCTION.finditer(text):
        first, second = found.group(1), found.group(2)
        if not first.isupper() or any(ch.isdigit() for ch in first):
            continue
        # "Reply OPT OUT" names a two-word keyword; "Reply YES NOW" names YES.
        out.append((first, f"{first} {second}") if second and second.isupper() else (first,))
    return out


def _has_language(by_lang: Mapping[str | None, _Msg], language: str) -> bool:
    # As Rules.render picks: the language itself, else its base (pt-BR -> pt).
    return language in by_lang or language.split("-")[0] in by_lang


def _first_line(by_lang: Mapping[str | None, _Msg]) -> int:
    return min(m.line for m in by_lang.values())


def _languages(by_lang: Mapping[str | None, _Msg]) -> str:
    return ", ".join(str(lang) for lang in by_lang)


def _written(keywords: list[_Kw]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(kw.written for kw in keywords))


def _frozen_messages(messages: dict[str, dict[str | None, _Msg]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType(
        {
            name: MappingProxyType({str(lang): m.text for lang, m in by_lang.items()})
            for name, by_lang in messages.items()
        }
    )


def _read(path: str | os.PathLike[str]) -> tuple[str, _Loader]:
    file = os.fspath(path)
    loader = _Loader(file)
    try:
        with open(file, "rb") as fh:
            data = fh.read()
        # Read once, hashed as stored: /readyz shows which file a process runs.
        loader.sha256 = hashlib.sha256(data).hexdigest()
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    except OSError as exc:
        loader.errors.append(Finding(file, 0, f"cannot read the keywords file: {exc.strerror or exc}"))
        return file, loader
    except UnicodeDecodeError:
        loader.errors.append(Finding(file, 0, "the keywords file is not UTF-8 text"))
        return file, loader
    loader.load(text)
    return file, loader


def _is_zone(name: str) -> bool:
    """True for an IANA time zone name the system's tz database knows."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(dict.fromkeys(findings), key=lambda f: f.line)


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Load keywords.yaml; ConfigError("file:line: problem") names the first error."""
    file, loader = _read(path)
    if loader.errors:
        raise ConfigError(str(_sorted(loader.errors)[0]))
    return loader.build(file)


def check(path: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
          today: date | None = None) -> CheckReport:
    """Every error and warning in a keywords file, each with its line.

    `providers`: the deployment's OPTLINE_PROVIDERS, to warn about a sender naming another
    provider; None (the file alone) skips that warning.
    """
    _, loader = _read(path)
    loader.today = today  # for date-bound warnings (opt_out_scope); None: today
    if not any(f.line == 0 for f in loader.errors):
        loader.collect_warnings(providers)
    return CheckReport(errors=_sorted(loader.errors), warnings=_sorted(loader.warnings))
