"""Normalising inbound texts and matching them against one sender's keywords (pure).

`app.keywords` loads keywords.yaml and builds one `SenderRules` per receiving number or
Messaging Service; everything here runs on the webhook hot path, so the tables are built
once at load and `SenderRules.match` is a normalise, one regex scan and a few dict lookups.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from app.keywords import Brand, Program


class Kind(StrEnum):
    """What a matched keyword asks for, in precedence order."""

    STOP = "stop"  # opt out: every program on the sender, or one named by an argument
    HELP = "help"  # reply with the help message, no state change
    CONFIRM = "confirm"  # the YES of double opt-in
    JOIN = "join"  # subscribe to the keyword's program
    START = "start"  # resubscribe after a stop (carriers' UNSTOP)


# Lower rank wins when one text could be read two ways (stop > help > confirm > join > start).
RANK: dict[Kind, int] = {kind: rank for rank, kind in enumerate(Kind)}
# Enum member lookups and Enum.__hash__ run Python code; the hot path uses these instead.
_STOP, _HELP, _CONFIRM, _JOIN, _START = Kind.STOP, Kind.HELP, Kind.CONFIRM, Kind.JOIN, Kind.START

# The floor every sender answers to, whatever keywords.yaml says: carriers and the CTIA
# handbook expect these on every number, and the FCC's 2024 revocation rule names them.
BUILTIN_STOP: tuple[str, ...] = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
)
BUILTIN_HELP: tuple[str, ...] = ("HELP", "INFO")
BUILTIN_START: tuple[str, ...] = ("START", "UNSTOP")
BUILTIN_CONFIRM: tuple[str, ...] = ("YES", "Y")

# Characters a phone keyboard or a copy-paste can slip into "STOP" without the sender
# seeing them: zero-width spaces and joiners, bidi marks, soft hyphen, BOM, variation
# selectors and emoji tag characters.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x2069),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xE0000, 0xE007F),
    (0xE0100, 0xE01EF),
)
_INVISIBLE = frozenset(cp for lo, hi in _INVISIBLE_RANGES for cp in range(lo, hi + 1))


class _DropTable(dict[int, int | None]):
    """str.translate table dropping invisibles and combining marks (accents), filled lazily.

    A per-character unicodedata loop costs microseconds per text; translate() with a dict
    is C-speed once a character has been seen.
    """

    def __missing__(self, cp: int) -> int | None:
        drop = cp in _INVISIBLE or unicodedata.category(chr(cp)) in ("Mn", "Me")
        value = None if drop else cp
        self[cp] = value
        return value


_DROP = _DropTable()

# ASCII fast path: most texts are plain ASCII, for which NFKC and accent stripping are no-ops.
_ASCII_EDGE = string.punctuation + string.whitespace + "".join(map(chr, range(32))) + "\x7f"

# A word is a run of letters/digits; an apostrophe inside a word keeps it one word, so
# "don't stop" counts two words, not three, for the short-text rule.
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

# Opt-out intent (see is_opt_out_intent).
_SHORT_TEXT_WORDS = 6
_INTENT_WORDS = frozenset({"stop", "stopall", "unsubscribe", "optout", "revoke"})
_INTENT_PAIRS = frozenset({("opt", "out")})
# Unmistakable requests, honoured at any length; each maps to the stop word it reports.
_INTENT_PHRASES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = tuple(
    (tuple(phrase.split()), tuple(reported.split()))
    for phrase, reported in (
        ("stop texting", "stop"),
        ("stop txting", "stop"),
        ("stop sending", "stop"),
        ("stop messaging", "stop"),
        ("stop contacting", "stop"),
        ("stop spamming", "stop"),
        ("stop the texts", "stop"),
        ("stop these texts", "stop"),
        ("stop the messages", "stop"),
        ("stop these messages", "stop"),
        ("unsubscribe me", "unsubscribe"),
        ("opt me out", "opt out"),
        ("remove me from", "remove me"),
        ("take me off", "take me off"),
        ("do not text me", "do not text me"),
        ("don't text me", "don't text me"),
        ("dont text me", "dont text me"),
    )
)


def _is_edge(ch: str) -> bool:
    # Punctuation, symbols (emoji are So/Sk), separators, controls/format/unassigned
    # (newer emoji than this Python's Unicode tables) and marks left at an edge.
    return unicodedata.category(ch)[0] in "PSZCM"


def normalize(text: str) -> str:
    """Normalise a text or keyword for matching: NFKC, no invisibles or accents, casefolded, trimmed."""
    if text.isascii():
        return " ".join(text.lower().split()).strip(_ASCII_EDGE)
    # Accents go after casefolding, which can itself produce combining marks (İ -> i̇).
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold()).translate(_DROP)
    s = " ".join(unicodedata.normalize("NFC", s).split())
    start, end = 0, len(s)
    while start < end and _is_edge(s[start]):
        start += 1
    while end > start and _is_edge(s[end - 1]):
        end -= 1
    return s[start:end]


def split_words(normalized: str) -> tuple[str, ...]:
    """The words of a normalised text: runs of letters and digits ("stop, please" -> stop, please)."""
    return tuple(_WORD.findall(normalized))


def keyword_words(keyword: str) -> tuple[str, ...]:
    """The word sequence a keyword matches, normalised exactly as inbound texts are."""
    return split_words(normalize(keyword))


# Phrases indexed by their first word, so a scan is one set lookup per word.
_PHRASES_BY_FIRST: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {}
for _phrase, _reported in _INTENT_PHRASES:
    _PHRASES_BY_FIRST[_phrase[0]] = (*_PHRASES_BY_FIRST.get(_phrase[0], ()), (_phrase, _reported))
_SHORT_FIRSTS = _INTENT_WORDS | {first for first, _ in _INTENT_PAIRS}


def _intent_words(
    words: tuple[str, ...], stop_prefixes: dict[tuple[str, ...], str], lengths: tuple[int, ...]
) -> tuple[str, ...] | None:
    """The words of the stop keyword or intent word behind an opt-out reading of `words`, else None."""
    n = len(words)
    for length in lengths:  # longest first: "opt out now" is OPT OUT, not a shorter prefix
        if length <= n and words[:length] in stop_prefixes:
            return words[:length]
    if n <= _SHORT_TEXT_WORDS:
        for i, word in enumerate(words):
            if word in _SHORT_FIRSTS:
                if word in _INTENT_WORDS:
                    return (word,)
                if i + 1 < n and (word, words[i + 1]) in _INTENT_PAIRS:
                    return (word, words[i + 1])
    for i, word in enumerate(words):
        candidates = _PHRASES_BY_FIRST.get(word)
        if candidates is not None:
            for phrase, reported in candidates:
                if words[i : i + len(phrase)] == phrase:
                    return reported
    return None


def is_opt_out_intent(normalized: str, stop_keywords: Iterable[str] = BUILTIN_STOP) -> bool:
    """Whether a text revokes consent under the FCC rule, beyond an exact stop keyword.

    The FCC (2024 TCPA order) treats a reply of "stop", "quit", "end", "revoke", "opt out",
    "cancel" or "unsubscribe" as a revocation by reasonable means. optline reads a text as
    an opt-out when, after normalising:

    1. its words begin with the words of any stop keyword (exact keywords included):
       "Stop please", "STOP. Thank you", "stop texting me", "Opt out now", "End";
    2. or it has at most six words and one of them is "stop", "stopall", "unsubscribe",
       "optout" or "revoke", or it has "opt out" as two consecutive words: "please stop",
       "can you unsubscribe me", "Don't stop" (doubt is resolved towards honouring it);
    3. or, at any length, it contains an unmistakable request such as "stop texting",
       "stop sending", "unsubscribe me", "opt me out", "remove me from", "don't text me".

    Not opt-outs: long texts that merely contain such a word ("I can't stop drinking your
    coffee it is the best thing ever in my life"), and "end", "quit" or "cancel" anywhere
    but first ("what time does the sale end", "can I cancel my order"): they are everyday
    words, so only their leading position signals a revocation. "stopwatch" is not "stop".

    `normalized` should come from `normalize()`; raw text is normalised again (idempotent).
    """
    prefixes: dict[tuple[str, ...], str] = {}
    for keyword in stop_keywords:
        words = keyword_words(keyword)
        if words:
            prefixes.setdefault(words, keyword)
    lengths = tuple(sorted({len(w) for w in prefixes}, reverse=True))
    return _intent_words(split_words(normalize(normalized)), prefixes, lengths) is not None


@dataclass(frozen=True)
class Match:
    """How one inbound text reads on one sender."""

    kind: Kind | None  # None = unmatched
    keyword: str | None  # the configured keyword as written ("OPT OUT"); for intent stops the stop word found
    language: str | None  # language of the keyword list that matched; None for language-less lists
    program: str | None  # program key this match is scoped to; None = the whole sender
    normalized: str  # the normalised text
    by_intent: bool = False  # a stop found by the opt-out intent rule, not an exact keyword


def _match(
    kind: Kind | None,
    keyword: str | None,
    language: str | None,
    program: str | None,
    normalized: str,
    by_intent: bool = False,
) -> Match:
    # A frozen dataclass's __init__ costs ~2 µs (object.__setattr__ per field); on the
    # webhook hot path we fill the instance dict directly. Same object, same equality.
    m = object.__new__(Match)
    m.__dict__.update(
        kind=kind, keyword=keyword, language=language, program=program, normalized=normalized, by_intent=by_intent
    )
    return m


_Resolved = tuple[Kind | None, str | None, str | None, str | None, bool]
_UNMATCHED: _Resolved = (None, None, None, None, False)


class KeywordEntry(NamedTuple):
    """One keyword active on a sender, as fed to SenderRules."""

    kind: Kind
    words: tuple[str, ...]
    keyword: str  # as written
    language: str | None
    program: str | None  # set for join keywords (their program), None for sender-wide kinds


class SenderRules:
    """The programs one receiving number or Messaging Service hosts, and their keyword tables."""

    __slots__ = ("brand", "programs", "_exact", "_args", "_lengths", "_stop_prefixes", "_stop_lengths", "_resolved")

    def __init__(self, brand: Brand, programs: tuple[Program, ...], entries: Iterable[KeywordEntry]) -> None:
        self.brand = brand
        self.programs = programs
        exact: dict[tuple[str, ...], KeywordEntry] = {}
        args: dict[tuple[str, ...], str] = {}
        stop_prefixes: dict[tuple[str, ...], str] = {}
        for entry in entries:
            if entry.kind is Kind.JOIN and entry.program is not None:
                args.setdefault(entry.words, entry.program)
            if entry.kind is Kind.STOP:
                stop_prefixes.setdefault(entry.words, entry.keyword)
            current = exact.get(entry.words)
            if current is None or RANK[entry.kind] < RANK[current.kind]:
                exact[entry.words] = entry
            elif current.kind is entry.kind and current.language is None and entry.language is not None:
                # YES from the language-less default list and YES under `en:`: the reply
                # should still know the person wrote English.
                exact[entry.words] = current._replace(language=entry.language)
        self._args = args
        self._lengths = tuple(sorted({len(w) for w in exact}))
        self._stop_prefixes = stop_prefixes
        self._stop_lengths = tuple(sorted({len(w) for w in stop_prefixes}, reverse=True))
        # words -> (entry, rank): the rank travels with the entry so the hot path never
        # hashes an Enum (0 = stop, so `not rank` reads "is a stop").
        self._exact = {w: (e, RANK[e.kind]) for w, e in exact.items()}
        # Most texts are exactly a keyword: resolve those once, here, not per text.
        self._resolved = {w: self._resolve(w) for w in exact}
        for head in exact:
            for tail in args:
                self._resolved.setdefault(head + tail, self._resolve(head + tail))

    @property
    def program_keys(self) -> tuple[str, ...]:
        """Keys of the programs on this sender, in file order."""
        return tuple(p.key for p in self.programs)

    def match(self, text: str, opt_out_type: str | None = None) -> Match:
        """Read one inbound text: stop > help > confirm > join > start, then Twilio's OptOutType."""
        normalized = normalize(text)
        found = self._match_words(normalized, tuple(_WORD.findall(normalized)))
        if not opt_out_type:
            return found
        # Twilio Advanced Opt-Out has already acted on its own keyword lists; the state we
        # keep must agree with what the carrier and Twilio now believe.
        kind = opt_out_type.strip().upper()
        if kind == "STOP" and found.kind is not _STOP:
            return _match(_STOP, "STOP", None, None, normalized)
        if kind == "HELP" and found.kind is not _HELP:
            return _match(_HELP, "HELP", None, None, normalized)
        if kind == "START" and found.kind is not _CONFIRM and found.kind is not _JOIN and found.kind is not _START:
            return _match(_START, "START", None, None, normalized)
        return found

    def _match_words(self, normalized: str, words: tuple[str, ...]) -> Match:
        resolved = self._resolved.get(words)
        if resolved is None:
            resolved = self._resolve(words)
        return _match(resolved[0], resolved[1], resolved[2], resolved[3], normalized, resolved[4])

    def _resolve(self, words: tuple[str, ...]) -> _Resolved:
        """kind, keyword, language, program, by_intent for a text's words."""
        if not words:
            return _UNMATCHED
        exact = self._exact
        best = exact.get(words)
        program = best[0].program if best is not None else None
        if best is None or best[1]:
            # Keyword + argument naming a program by one of its join keywords: STOP DEALS.
            n = len(words)
            for length in self._lengths:
                if length >= n:
                    break
                head = exact.get(words[:length])
                if head is None:
                    continue
                target = self._args.get(words[length:])
                if target is not None and (best is None or head[1] < best[1]):
                    best, program = head, target
        if best is None or best[1]:
            found = _intent_words(words, self._stop_prefixes, self._stop_lengths)
            if found is not None:
                hit = exact.get(found)
                if hit is not None and not hit[1]:
                    return (_STOP, hit[0].keyword, hit[0].language, None, True)
                return (_STOP, " ".join(found).upper(), None, None, True)
        if best is None:
            return _UNMATCHED
        entry = best[0]
        return (entry.kind, entry.keyword, entry.language, program, False)
