"""Reading typed values off keywords.yaml's YAML nodes, each problem a `Finding` with its line.

`NodeReader` is the base of the loader: a mapping with known fields, a string, a boolean, a
duration, a language, a country, a keyword list and a message, each by the same rules
wherever the file uses it. YAML 1.1's implicit types are not trusted (YES and NO are text).
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterable
from datetime import timedelta

import phonenumbers
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from app.keywords.raw import Kw, Msg
from app.keywords.schema import Finding, parse_duration
from app.matching import keyword_words

TAG_NULL = "tag:yaml.org,2002:null"
TAG_BOOL = "tag:yaml.org,2002:bool"
TAG_INT = "tag:yaml.org,2002:int"
TAG_FLOAT = "tag:yaml.org,2002:float"
TAG_MERGE = "tag:yaml.org,2002:merge"
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")

PLACEHOLDERS = ("brand", "program", "help_contact")


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


class NodeReader:
    """Reads the nodes of one file, collecting errors and warnings with their lines."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []

    def error(self, line: int, message: str) -> None:
        self.errors.append(Finding(self.file, line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(Finding(self.file, line, message))

    # -- node helpers

    def mapping(
        self, node: Node, where: str, owner_line: int, allowed: Iterable[str] | None, required: Iterable[str] = ()
    ) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.error(line_of(node), f"{where} must be a mapping")
            return None
        allowed_set = tuple(allowed) if allowed is not None else None
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == TAG_MERGE:
                self.error(line_of(key_node), f"{where}: YAML merge keys (<<) are not supported")
                continue
            if not isinstance(key_node, ScalarNode) or not key_node.value:
                self.error(line_of(key_node), f"{where}: keys must be plain names")
                continue
            key = key_node.value
            if key in out:
                self.error(line_of(key_node), f"{where}: duplicate key '{key}' (first at line {line_of(out[key][0])})")
                continue
            if allowed_set is not None and key not in allowed_set:
                hint = difflib.get_close_matches(key, allowed_set, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else f"; expected one of {', '.join(allowed_set)}"
                self.error(line_of(key_node), f"{where}: unknown field '{key}'{suggestion}")
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
            self.error(line_of(node), f"{where} must be a string")
            return None
        if node.tag == TAG_NULL or not node.value.strip():
            self.error(line_of(node), f"{where} must not be empty")
            return None
        return str(node.value).strip()

    def boolean(self, node: Node, where: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == TAG_BOOL:
            return node.value.lower() in ("true", "yes", "on")
        self.error(line_of(node), f"{where} must be true or false")
        return None

    def duration(self, node: Node, where: str, *, positive: bool) -> timedelta | None:
        value = self.text(node, where)
        if value is None:
            return None
        try:
            parsed = parse_duration(value)
        except ValueError:
            self.error(
                line_of(node), f"{where}: bad duration '{value}'; use a number with d, h, m or s, like 48h, 10m or 1h30m"
            )
            return None
        if positive and not parsed:
            self.error(line_of(node), f"{where} must be longer than zero")
            return None
        return parsed

    def language(self, node: Node, where: str) -> str | None:
        value = self.text(node, where)
        if value is not None and not _LANGUAGE.fullmatch(value):
            self.error(line_of(node), f"{where}: '{value}' is not a language code like en, fr or pt-BR")
            return None
        return value

    def region(self, node: Node, where: str) -> str | None:
        value = self.text(node, where)
        if value is None:
            return None
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            self.error(line_of(node), f"{where}: '{value}' is not an ISO 3166 country code")
            return None
        return value.upper()

    def keywords(self, node: Node, where: str) -> list[Kw] | None:
        """A keyword list, or a map of language -> list."""
        groups: list[tuple[str | None, Node]] = []
        if isinstance(node, SequenceNode):
            groups.append((None, node))
        elif isinstance(node, MappingNode):
            entries = self.mapping(node, where, line_of(node), None)
            if entries is None:
                return None
            for code, (key_node, value_node) in entries.items():
                if self.language(key_node, f"{where} language") is not None:
                    groups.append((code, value_node))
        else:
            self.error(line_of(node), f"{where} must be a list of keywords or a map of language to list")
            return None
        out: list[Kw] = []
        for lang, seq in groups:
            if not isinstance(seq, SequenceNode):
                self.error(line_of(seq), f"{where}.{lang} must be a list of keywords")
                continue
            for item in seq.value:
                value = self.text(item, f"{where} keyword")
                if value is None:
                    continue
                words = keyword_words(value)
                if not words:
                    self.error(line_of(item), f"{where}: keyword '{value}' has no letters or digits")
                    continue
                out.append(Kw(value, words, lang, line_of(item), own=True))
        return out

    def message(self, node: Node, where: str) -> dict[str | None, Msg] | None:
        """A message string, or a map of language -> string; None key = the owner's language."""
        pairs: list[tuple[str | None, Node]] = []
        if isinstance(node, MappingNode):
            entries = self.mapping(node, where, line_of(node), None)
            if entries is None:
                return None
            for code, (key_node, value_node) in entries.items():
                if self.language(key_node, f"{where} language") is not None:
                    pairs.append((code, value_node))
            if not pairs and not entries:
                self.error(line_of(node), f"{where} has no text")
        else:
            pairs.append((None, node))
        out: dict[str | None, Msg] = {}
        for lang, value_node in pairs:
            label = f"{where}.{lang}" if lang else where
            value = self.text(value_node, label)
            if value is not None and self.placeholders(value, line_of(value_node), label):
                out[lang] = Msg(value, line_of(value_node))
        return out

    def placeholders(self, text: str, line: int, where: str) -> bool:
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
        except ValueError:
            self.error(line, f"{where}: unbalanced brace; write {{{{ or }}}} for a literal brace")
            return False
        ok = True
        for name, spec, conversion in fields:
            if name not in PLACEHOLDERS or spec or conversion:
                shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                self.error(
                    line, f"{where}: unknown placeholder {shown}; use {{brand}}, {{program}} or {{help_contact}}"
                )
                ok = False
        return ok

    # -- the document
