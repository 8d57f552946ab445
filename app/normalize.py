"""Normalising inbound texts for matching (pure): the one place texts and keywords are made comparable."""

from __future__ import annotations

import re
import string
import unicodedata

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
