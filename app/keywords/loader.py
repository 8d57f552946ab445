"""Read keywords.yaml and validate it into frozen `Rules` (`load_rules`); every problem names its line.

The loader walks the composed YAML node tree (app.keywords.nodes reads each value), fills
the raw records (app.keywords.raw), runs the rules across brands (app.keywords.conflicts)
and freezes the result (`Loader.build`). `check` (app.keywords.checks) adds the warnings.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import zoneinfo
from collections.abc import Mapping
from datetime import date
from types import MappingProxyType

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from app.brands import Brand, Program
from app.errors import ConfigError, InvalidPhone
from app.keywords.conflicts import cross_check
from app.keywords.nodes import TAG_FLOAT, TAG_INT, NodeReader, line_of
from app.keywords.raw import (
    BRAND_FIELDS,
    BRAND_MESSAGES,
    DEFAULT_KEYWORD_FIELDS,
    DEFAULTS_FIELDS,
    EVENTS_FIELDS,
    PROGRAM_FIELDS,
    PROGRAM_KEYWORD_FIELDS,
    PROGRAM_MESSAGES,
    RETIRED_FIELDS,
    ROOT_FIELDS,
    SENDER_FIELDS,
    Kw,
    Msg,
    RawBrand,
    RawProgram,
    RawSender,
)
from app.keywords.schema import Finding, Rules
from app.matching import BUILTIN_CONFIRM, BUILTIN_HELP, BUILTIN_START, BUILTIN_STOP, KeywordEntry, Kind, keyword_words
from app.phone import to_e164
from app.rules import config as consent_rules
from app.senders import MAX_RATE, MG_SID, SERVICE_PROVIDER, SHORT_CODE_DIGITS, SenderConfig, sender_key
from app.settings import PROVIDER_NAMES

_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")

# Numbers as YAML 1.1 writes them in decimal (`100`, `2.5`, `1_000`); hex, octal,
# sexagesimal, .inf and .nan are no rate.
_INT = re.compile(r"[-+]?[0-9][0-9_]*")
_FLOAT = re.compile(r"[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?")


def _number(node: Node) -> float | None:
    """The value of an int or float scalar written in decimal; None for anything else (a quoted "5" too)."""
    if not isinstance(node, ScalarNode):
        return None
    text = node.value.replace("_", "")
    if node.tag == TAG_INT and _INT.fullmatch(node.value):
        return float(int(text))
    if node.tag == TAG_FLOAT and _FLOAT.fullmatch(node.value) and any(ch.isdigit() for ch in text):
        return float(text)
    return None


class Loader(NodeReader):
    """Walks the composed YAML node tree, collecting findings with their lines."""

    def __init__(self, file: str) -> None:
        super().__init__(file)
        self.sha256 = ""  # of the file's bytes, once read
        self.brands: dict[str, RawBrand] = {}
        self.today: date | None = None
        self.retired: dict[str, frozenset[str]] = {name: frozenset() for name in RETIRED_FIELDS}
        self.defaults = RawProgram(brand="", key="", line=1)
        self.defaults.keywords = {
            Kind.STOP: [Kw(k, keyword_words(k), None, None) for k in BUILTIN_STOP],
            Kind.HELP: [Kw(k, keyword_words(k), None, None) for k in BUILTIN_HELP],
            Kind.START: [Kw(k, keyword_words(k), None, None) for k in BUILTIN_START],
            Kind.CONFIRM: [Kw(k, keyword_words(k), None, None) for k in BUILTIN_CONFIRM],
        }

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
        top = self.mapping(root, "the file", 1, ROOT_FIELDS, ("version", "brands"))
        if top is None:
            return
        if "version" in top:
            node = top["version"][1]
            if not (isinstance(node, ScalarNode) and node.tag == TAG_INT and node.value == "1"):
                self.error(
                    line_of(node), f"unsupported version '{getattr(node, 'value', '')}'; this optline reads version: 1"
                )
        if "defaults" in top:
            self.load_defaults(*top["defaults"])
        if "retired" in top:
            self.load_retired(*top["retired"])
        if "brands" in top:
            key_node, node = top["brands"]
            brands = self.mapping(node, "brands", line_of(key_node), None)
            if brands is not None and not brands:
                self.error(line_of(key_node), "brands: at least one brand is required")
            for key, (bkey, bnode) in (brands or {}).items():
                self.load_brand(key, bkey, bnode)
        cross_check(self, self.brands)

    def load_retired(self, key_node: Node, node: Node) -> None:
        """`retired:` names brands, programs (`brand/program`) and senders taken out on purpose while they still
        have subscribers (app.retire refuses a file that drops them silently)."""
        fields = self.mapping(node, "retired", line_of(key_node), RETIRED_FIELDS)
        for name, (name_node, value) in (fields or {}).items():
            if not isinstance(value, SequenceNode) or not all(isinstance(item, ScalarNode) for item in value.value):
                self.error(line_of(name_node), f"retired.{name} must be a list of names")
                continue
            self.retired[name] = frozenset(str(item.value) for item in value.value)

    def load_defaults(self, key_node: Node, node: Node) -> None:
        d = self.defaults
        fields = self.mapping(node, "defaults", line_of(key_node), DEFAULTS_FIELDS)
        if fields is None:
            return
        self.settings(d, fields, "defaults")
        if "keywords" in fields:
            kw_fields = self.mapping(
                fields["keywords"][1], "defaults.keywords", line_of(fields["keywords"][0]), DEFAULT_KEYWORD_FIELDS
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

    def settings(self, target: RawProgram, fields: dict[str, tuple[Node, Node]], where: str) -> None:
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
            self.error(line_of(key_node), f"{where}: a brand key is lower-case letters, digits, _ or -")
        brand = RawBrand(key=key, line=line_of(key_node))
        fields = self.mapping(node, where, line_of(key_node), BRAND_FIELDS, ("name", "help_contact", "programs"))
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
                self.error(line_of(fields["timezone"][1]), f"{where}.timezone: '{zone}' is not an IANA time zone "
                                                         "(like America/New_York)")
            elif zone is not None:
                brand.timezone = zone
        if "allowed_countries" in fields:
            kn, vn = fields["allowed_countries"]
            if not isinstance(vn, SequenceNode):
                self.error(
                    line_of(vn),
                    f"{where}.allowed_countries must be a list of country codes (leave it out to allow every country)",
                )
            elif not vn.value:
                self.error(
                    line_of(kn),
                    f"{where}.allowed_countries is empty, so no number could be prompted; "
                    "leave it out to allow every country",
                )
            else:
                codes = [self.region(item, f"{where}.allowed_countries") for item in vn.value]
                brand.allowed_countries = frozenset(c for c in codes if c)
        if "default_program" in fields:
            brand.default_program = self.text(fields["default_program"][1], f"{where}.default_program")
            brand.default_program_line = line_of(fields["default_program"][1])
        if "messages" in fields:
            kn, vn = fields["messages"]
            brand.messages_line = line_of(kn)
            for name, (_, mnode) in (self.mapping(vn, f"{where}.messages", line_of(kn), BRAND_MESSAGES) or {}).items():
                parsed = self.message(mnode, f"{where}.messages.{name}")
                if parsed:
                    brand.messages[name] = parsed
        if "events" in fields:
            kn, vn = fields["events"]
            events = self.mapping(vn, f"{where}.events", line_of(kn), EVENTS_FIELDS, EVENTS_FIELDS) or {}
            if "url" in events:
                url = self.text(events["url"][1], f"{where}.events.url")
                if url is not None and not _URL.fullmatch(url):
                    self.error(line_of(events["url"][1]), f"{where}.events.url: '{url}' is not an http(s) URL")
                brand.events_url = url
            if "secret_env" in events:
                env = self.text(events["secret_env"][1], f"{where}.events.secret_env")
                if env is not None and not _ENV_NAME.fullmatch(env):
                    self.error(
                        line_of(events["secret_env"][1]),
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
            programs = self.mapping(vn, f"{where}.programs", line_of(kn), None)
            if programs is not None and not programs:
                self.error(line_of(kn), f"{where}: at least one program is required")
            for pkey, (pkn, pvn) in (programs or {}).items():
                self.load_program(brand, pkey, pkn, pvn)
        if brand.default_program is not None and brand.default_program not in brand.programs:
            self.error(brand.default_program_line, f"{where}.default_program: '{brand.default_program}' is not one of "
                       f"the brand's programs ({', '.join(brand.programs) or 'none'})")

    def load_program(self, brand: RawBrand, key: str, key_node: Node, node: Node) -> None:
        where = f"program '{brand.key}/{key}'"
        if not _KEY.fullmatch(key):
            self.error(line_of(key_node), f"{where}: a program key is lower-case letters, digits, _ or -")
        d = self.defaults
        program = RawProgram(
            brand=brand.key,
            key=key,
            line=line_of(key_node),
            double_opt_in=d.double_opt_in,
            doi_expires_after=d.doi_expires_after,
            prompt_cooldown=d.prompt_cooldown,
            language=brand.language,
            keywords={kind: list(kws) for kind, kws in d.keywords.items()},
        )
        program.keywords[Kind.JOIN] = []
        fields = self.mapping(node, where, line_of(key_node), PROGRAM_FIELDS, ("name", "senders", "keywords"))
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
                    line_of(vn),
                    f"{where}.senders must be a non-empty list of E.164 numbers, short codes or MG… Messaging Service SIDs",
                )
            else:
                for item in vn.value:
                    self.sender(program, item, where)
        if "keywords" in fields:
            kn, vn = fields["keywords"]
            kws = self.mapping(vn, f"{where}.keywords", line_of(kn), PROGRAM_KEYWORD_FIELDS, ("join",))
            for name, (_, kvn) in (kws or {}).items():
                parsed = self.keywords(kvn, f"{where}.keywords.{name}")
                if parsed is None:
                    continue
                if name == "join" and not parsed:
                    self.error(line_of(kvn), f"{where}.keywords.join needs at least one keyword")
                program.keywords[Kind(name)] += parsed  # lists extend the defaults, never replace them
        if "messages" in fields:
            kn, vn = fields["messages"]
            program.messages_line = line_of(kn)
            for name, (_, mnode) in (self.mapping(vn, f"{where}.messages", line_of(kn), PROGRAM_MESSAGES) or {}).items():
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

    def failed_message(self, program: RawProgram, name: str) -> bool:
        # A message written but refused already has its error; don't also call it missing.
        prefix = f"program '{program.brand}/{program.key}'.messages.{name}"
        return any(f.message.startswith(prefix) for f in self.errors)

    def sender(self, program: RawProgram, node: Node, where: str) -> None:
        """One item of `senders`: an id, or a map {id, provider, rate}."""
        line = line_of(node)
        if isinstance(node, MappingNode):
            fields = self.mapping(node, f"{where} sender", line, SENDER_FIELDS, ("id",))
            if fields is None or "id" not in fields:
                return
            value = self.sender_id(fields["id"][1], where)
            if value is None:
                return
            sender = RawSender(value, line)
            if "provider" in fields and not self.sender_provider(sender, fields["provider"][1], where):
                return
            if "rate" in fields and not self.sender_rate(sender, fields["rate"][1], where):
                return
        elif isinstance(node, ScalarNode):
            value = self.sender_id(node, where)
            if value is None:
                return
            sender = RawSender(value, line)
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
        line = line_of(node)
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

    def sender_provider(self, sender: RawSender, node: Node, where: str) -> bool:
        label = f"{where} sender {sender.id}.provider"
        value = self.text(node, label)
        if value is None:
            return False
        name = value.lower()
        if name not in PROVIDER_NAMES:
            hint = difflib.get_close_matches(name, PROVIDER_NAMES, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            self.error(line_of(node), f"{label}: unknown provider '{value}'{suggestion}; "
                                    f"expected one of {', '.join(PROVIDER_NAMES)}")
            return False
        if MG_SID.fullmatch(sender.id) and name != SERVICE_PROVIDER:
            self.error(line_of(node), f"{label}: a Messaging Service (MG…) is Twilio's; its provider can only be "
                                    f"{SERVICE_PROVIDER}, not {name}")
            return False
        sender.provider, sender.provider_line = name, line_of(node)
        return True

    def sender_rate(self, sender: RawSender, node: Node, where: str) -> bool:
        rate = _number(node)
        if rate is None or not 0 < rate <= MAX_RATE:
            shown = f"'{node.value}' is not a rate" if isinstance(node, ScalarNode) else "must be a number"
            self.error(line_of(node), f"{where} sender {sender.id}.rate: {shown}; write the most messages a second "
                                    f"sent from it, a number above 0 and at most {MAX_RATE:g}")
            return False
        sender.rate = rate
        return True

    # -- rules across brands and programs

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


def _written(keywords: list[Kw]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(kw.written for kw in keywords))


def _frozen_messages(messages: dict[str, dict[str | None, Msg]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType(
        {
            name: MappingProxyType({str(lang): m.text for lang, m in by_lang.items()})
            for name, by_lang in messages.items()
        }
    )


def read(path: str | os.PathLike[str]) -> tuple[str, Loader]:
    file = os.fspath(path)
    loader = Loader(file)
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


def sorted_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(dict.fromkeys(findings), key=lambda f: f.line)


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Load keywords.yaml; ConfigError("file:line: problem") names the first error."""
    file, loader = read(path)
    if loader.errors:
        raise ConfigError(str(sorted_findings(loader.errors)[0]))
    return loader.build(file)
