"""The opt-out lexicons (one YAML data file a language, beside this module) compiled into lookup tables.

A lexicon file has these sections, every one optional (see lexicons/en.yaml for a commented example):

- `sets`: named word lists shared by every language's patterns (`msg`: nouns for the texts
  themselves, `send`: verbs of sending, `me`: object pronouns, `fill`: politeness and filler
  words, `det`: determiners, `neg`: negators, `cond`: conditionals such as "if" that make what
  follows hypothetical (not after `grace`: "I'd appreciate it if you stopped"), `obj`: things other than the texts an order word may apply to: an order,
  a delivery, a purchase; `wow`: delight, which makes a bare "Stop!" an exclamation: "Stop! That price is amazing";
  `chan`: channels other than text messages, "email", "newsletter"; an `obj` entry "~box" is a
  compound ending);
- `keywords`: `strong` (an opt-out wherever it stands, unless negated: "unsubscribe"),
  `loose` ("stop": an opt-out alone, in a short text or with an object; flagged elsewhere),
  `weak` ("cancel", "end": an opt-out only as a clause of its own);
- `phrases`: token patterns that are opt-outs ("remove me", "no more {msg}");
- `keep`: patterns that veto an opt-out reading (re-subscribe requests, "keep the texts");
- `scope`: patterns naming a channel other than SMS ("unsubscribe from the emails");
- `senses`: patterns where a keyword has another sense ("bus stop", "end of the day");
- `hedge`: patterns of second thoughts and hypotheticals ("never mind", "was going to"): an
  opt-out reading in a text that holds one is flagged, not honoured;
- `flag`: patterns that are not opt-outs but close enough for a person to look ("not Dave",
  "is this a real company?"): a text matching one that no rule honours is flagged;
- `exact`: whole texts honoured as typed, before accents are folded (Vietnamese "Dừng" is
  "stop", but "dung" is also "đúng", right, and "dùng", use);
- `net`: words (`x~` a prefix) that carry opt-out vocabulary: a text holding one that no rule
  honours is flagged for a person (the wide net);
- `substrings`: for scripts written without spaces between words (zh, ja) or with clitics
  (ko, ar, hi): `optout`, `alone`, `keep`, `senses`, `fill`, `hedge` and `net` substrings;
  `pairs` ("短信|消息 ~ 不要|别": one of the first, then one of the second within a few
  characters) are opt-outs like `optout`; `negafter` negates an opt-out it follows closely
  ("配信停止はしないで", "수신 거부하지 말아"); an opt-out beside an `obj` (an order, a paid
  plan) or a `chan` (e-mail) substring and no `msg` substring is flagged, not honoured.

Pattern syntax: items separated by spaces; `a|b` alternatives, `x~` a prefix (any
inflection), `*` any one word, a trailing `?` makes an item optional, `{name}` any word of a set, `..` skips up
to two words and `...` up to four. Everything is normalised exactly like inbound texts.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any
from collections.abc import Iterable

import yaml

from app.normalize import normalize

LANGUAGES: tuple[str, ...] = (
    "en", "fr", "es", "de", "pt", "it", "nl", "zh", "ja", "ko", "ar", "hi", "vi", "tl", "ru", "ht",
)  # fmt: skip
SET_NAMES = ("msg", "send", "me", "fill", "det", "neg", "cond", "obj", "grace", "wow", "chan")
PATTERN_SECTIONS = ("phrases", "keep", "scope", "senses", "hedge", "flag")
SUBSTRING_SECTIONS = (
    "optout", "alone", "keep", "senses", "fill", "hedge", "net", "pairs", "negafter", "obj", "chan", "msg",
)  # fmt: skip

# French and Italian elide a short word into the next ("m'envoyer", "dall'elenco"); English
# contracts a short ending onto a word ("don't", "I'm"). A word splits at its apostrophe only
# in the first case: the part after the apostrophe is longer than two letters.
WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*'?")
_ELISION = re.compile(r"^([^\W\d_]{1,5}')([^\W_]{3,}.*)$")

_CYRILLIC = re.compile(r"[\u0400-\u052f]")

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Arabic letters that the same word is written with either way.
ARABIC_FOLD = str.maketrans({"ى": "ي", "ة": "ه", "ـ": None})


def split_elision(word: str) -> tuple[str, ...]:
    """("m'", "envoyer") for "m'envoyer"; ("don't",) stays one word."""
    found = _ELISION.match(word)
    return (found.group(1), found.group(2)) if found else (word,)


_NOT_ALNUM = re.compile(r"[\W_]+")
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


def exact_key(text: str) -> str:
    """A whole short text as typed, before the normaliser folds its accents ("Dừng", not "dung"):
    composed, casefolded, spaces collapsed, punctuation at its ends dropped."""
    return " ".join(_EDGE.sub("", unicodedata.normalize("NFC", text).casefold()).split())


def fold_substring(text: str) -> str:
    """A normalised text as the substring lexicons see it: no spaces or punctuation, Arabic folded."""
    if "\u0649" in text or "\u0629" in text or "\u0640" in text:  # translate() costs a lookup a character
        text = text.translate(ARABIC_FOLD)
    return _NOT_ALNUM.sub("", text)  # \w is isalnum() and "_" in str patterns


@dataclass(frozen=True)
class Pattern:
    """One compiled token pattern of one language's section."""

    section: str  # phrases | keep | scope | senses
    language: str
    source: str  # as written in the lexicon
    expression: str  # the regex, compiled on first use (most patterns never meet a text in a short-lived process)
    literals: frozenset[str]  # every word the pattern names (a negator named by it does not negate it)
    anchors: tuple[str, ...]  # words, any of which must be present for the pattern to match
    prefix_anchors: tuple[str, ...]  # word prefixes, likewise
    before: int  # at most this many words stand in a match before its anchor word
    reach: int = 64  # at most this many words (and "|") a match reads from its start, lookahead included

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled pattern."""
        return re.compile(self.expression)

    @cached_property
    def searcher(self) -> re.Pattern[str]:
        """The pattern found only where a word starts (after a space, or at the start of the text)."""
        return re.compile(r"(?<![^ ])(?:" + self.expression + ")")


@dataclass
class Lexicon:
    """Every language's lexicon merged into the tables the detector looks words up in."""

    sets: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in SET_NAMES})
    keywords: dict[str, tuple[str, str]] = field(default_factory=dict)  # word -> (strength, language)
    keyword_prefixes: dict[str, tuple[str, str]] = field(default_factory=dict)  # stem -> (strength, language)
    patterns: list[Pattern] = field(default_factory=list)
    substrings: dict[str, dict[str, str]] = field(default_factory=lambda: {s: {} for s in SUBSTRING_SECTIONS})
    sources: dict[str, list[str]] = field(default_factory=dict)
    fill_text: set[str] = field(default_factory=set)  # substring politeness as it stands in a normalised text
    net: dict[str, str] = field(default_factory=dict)  # opt-out vocabulary word -> language (the wide net)
    net_prefixes: dict[str, str] = field(default_factory=dict)  # stem -> language
    cond_languages: dict[str, set[str]] = field(default_factory=dict)  # "se" -> {pt, it}: "if" only there
    obj_suffixes: tuple[str, ...] = ()  # "~box" in `obj`: a compound ending so ("kaffeebox", "jahresabo")
    exact: dict[str, str] = field(default_factory=dict)  # a whole text as typed (casefolded) -> language


def _words(entry: str) -> list[str]:
    """A lexicon entry's words, normalised and split like an inbound text's ("opt out" is one word)."""
    return list(_entry_words(entry))


@lru_cache(maxsize=None)
def _entry_words(entry: str) -> tuple[str, ...]:
    """_words, computed once per distinct entry (patterns name the same words many times)."""
    out: list[str] = []
    # A trailing word keeps its apostrophe ("n'", "m'"): normalising the entry alone would trim it.
    # A Cyrillic entry gets a Cyrillic companion ("ж") so that it is normalised as in Russian
    # prose: alone, "не" is all Latin look-alikes and would be folded to "he".
    tail = " ж" if _CYRILLIC.search(entry) else " x"
    for raw in WORD.findall(normalize(entry.replace("\u2019", "'") + tail))[:-1]:
        for word in split_elision(raw):
            if word == "out" and out and out[-1] == "opt":
                out[-1] = "optout"
            else:
                out.append(word)
    return tuple(out)


def trie_regex(words: Iterable[str]) -> str:
    """An alternation of literal words as a trie ("stop", "stopping", "sms" -> "s(?:top(?:ping)?|ms)"):
    the regex engine tries a plain alternation's branches one by one, a trie reads each letter once.
    It matches what the longest-first alternation matches, and prefers the longest too."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        body = "(?:" + "|".join(branches) + ")"
        return body + "?" if "" in node else body

    return build(root)


def _item_regex(item: str, sets: dict[str, set[str]]) -> tuple[str, list[str], list[str], int]:
    """One pattern item's regex (no trailing space), the words and prefixes it needs, and how common they are."""
    parts: list[str] = []
    anchors: list[str] = []
    prefixes: list[str] = []
    common = 0
    for alt in item.split("|"):
        if alt.startswith("{") and alt.endswith("}"):
            members = sorted(sets[alt[1:-1]], key=len, reverse=True)
            anchors.extend(members)
            parts.append(trie_regex(members))
            common += 1000 if alt in ("{fill}", "{det}", "{me}") else 100
            continue
        tilde = alt.endswith("~")
        words = _words(alt.rstrip("~").replace("_", " ")) or [alt.rstrip("~")]
        parts.append(" ".join(re.escape(w) for w in words) + (r"[^\s|]*" if tilde else ""))
        if tilde and len(words) == 1:
            prefixes.append(words[0])
            common += 3 if len(words[0]) < 5 else 1
        else:
            anchors.append(words[0])
            common += 50 if any(words[0] in members for members in sets.values()) else 1
    return "(?:" + "|".join(parts) + ")", anchors, prefixes, common


def compile_pattern(section: str, language: str, source: str, sets: dict[str, set[str]]) -> Pattern:
    """A pattern's regex over the detector's words (joined by spaces, clauses by ' | '), tried at word starts.

    Its anchors are the words of its rarest required item: a text without one of them cannot
    match, so the detector tries the pattern only on texts that hold one.
    """
    regex = ""
    best: tuple[int, list[str], list[str], int] | None = None
    width = 0  # the most words the items so far can take
    for item in source.replace("\u2019", "'").split():
        if item == "..":
            regex += r"(?:[^\s|]+ ){0,2}"
            width += 2
            continue
        if item == "...":
            regex += r"(?:[^\s|]+ ){0,4}"
            width += 4
            continue
        if item == "$":  # the end of a clause, politeness aside ("no me interesa, gracias")
            fill = trie_regex(sets["fill"])
            regex += rf"(?:(?:{fill}) ){{0,3}}(?=\||$)"
            continue
        if item == "*":  # any one word
            regex += r"[^\s|]+ "
            width += 1
            continue
        if item == "^":  # the start of a clause
            regex += r"(?:^|(?<=\| ))"
            continue
        optional = item.endswith("?") and len(item) > 1
        body = item[:-1] if optional else item
        part, anchors, prefixes, common = _item_regex(body, sets)
        if not optional and (best is None or common < best[0]):
            best = (common, anchors, prefixes, width)
        regex += f"(?:{part} )?" if optional else f"{part} "
        width += max(len(_words(alt.replace("_", " "))) or 1 for alt in body.split("|"))
    if best is None or not (best[1] or best[2]):
        raise ValueError(f"{language}: pattern {source!r} has no word that must be present")
    literals = frozenset(w for alt in re.split(r"[\s|]+", source) for w in _words(alt.replace("_", " ")))
    # "$" looks past up to three politeness words to the clause's end
    reach = width + (4 if " $" in f" {source}" else 0) + 1
    return Pattern(section, language, source, regex, literals, tuple(best[1]), tuple(best[2]), best[3], reach)


def _load_file(language: str) -> dict[str, Any]:
    text = resources.files("app.optout").joinpath("lexicons", f"{language}.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_YAML_LOADER) or {}
    data["_sources"] = [line[1:].strip() for line in text.splitlines() if line.startswith("# source")]
    return data


def load() -> Lexicon:
    """Every language's lexicon file, merged and compiled (called once, at import)."""
    files = {language: _load_file(language) for language in LANGUAGES}
    lexicon = Lexicon()
    for language, data in files.items():
        lexicon.sources[language] = data["_sources"]
        for name, words in (data.get("sets") or {}).items():
            if name not in SET_NAMES:
                raise ValueError(f"{language}: unknown set {name!r}")
            for entry in words:
                if name == "obj" and str(entry).startswith("~"):
                    lexicon.obj_suffixes = (*lexicon.obj_suffixes, *_words(str(entry)[1:]))
                    continue
                lexicon.sets[name].update(_words(str(entry)))
                if name == "cond":
                    for word in _words(str(entry)):
                        lexicon.cond_languages.setdefault(word, set()).add(language)
    for language, data in files.items():
        for entry in data.get("exact") or ():
            lexicon.exact.setdefault(exact_key(str(entry)), language)
        for strength in ("strong", "loose", "weak"):
            for entry in (data.get("keywords") or {}).get(strength) or ():
                table = lexicon.keyword_prefixes if str(entry).endswith("~") else lexicon.keywords
                for word in _words(str(entry).rstrip("~")):
                    table.setdefault(word, (strength, language))
        for entry in data.get("net") or ():
            table = lexicon.net_prefixes if str(entry).endswith("~") else lexicon.net
            for word in _words(str(entry).rstrip("~")):
                table.setdefault(word, language)
        for section in PATTERN_SECTIONS:
            for source in data.get(section) or ():
                lexicon.patterns.append(compile_pattern(section, language, str(source), lexicon.sets))
        for section, entries in (data.get("substrings") or {}).items():
            if section not in SUBSTRING_SECTIONS:
                raise ValueError(f"{language}: unknown substring section {section!r}")
            for entry in entries:
                if section == "pairs":  # "短信|信息 ~ 不要|别": the first, then the second within a few characters
                    first, _, second = str(entry).partition("~")
                    key = "~".join(
                        "|".join(fold_substring(normalize(alt)) for alt in side.split("|")) for side in (first, second)
                    )
                    lexicon.substrings[section].setdefault(key, language)
                    continue
                folded = fold_substring(normalize(str(entry)))
                if folded:
                    lexicon.substrings[section].setdefault(folded, language)
                    if section == "fill":  # "SAIR 谢谢": politeness in any script is politeness
                        lexicon.fill_text.add(normalize(str(entry)))
    return lexicon
