"""Normalising inbound texts for matching (pure): the one place texts and keywords are made comparable."""

from __future__ import annotations

import re
import string
import threading
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
        value = None if drop else (0x64 if cp == 0x111 else cp)  # đ -> d
        self[cp] = value
        return value


_DROP = _DropTable()


class _Dropper:
    """_DROP applied by a regex of the characters it drops among those met so far (a translate()
    with a dict looks up every character; a text of 1,600 mixed-script characters took 0.1 ms).
    A character never met is judged once by _DROP and the regex rebuilt when it is dropped."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.dropped: set[str] = set()
        self.regex: re.Pattern[str] | None = None
        self.lock = threading.Lock()

    def __call__(self, s: str) -> str:
        if not self.known.issuperset(s):
            with self.lock:  # a character is known only once the regex drops it (if it is to be dropped)
                new = set(s).difference(self.known)
                dropped = self.dropped.union(ch for ch in new if _DROP[ord(ch)] is None)
                if dropped != self.dropped:
                    self.regex = re.compile("[" + "".join(re.escape(ch) for ch in sorted(dropped)) + "]+")
                    self.dropped = dropped
                self.known.update(new)
        regex = self.regex
        if regex is not None:
            s = regex.sub("", s)
        return s.replace("\u0111", "d") if "\u0111" in s else s  # đ -> d


_drop = _Dropper()

# ASCII fast path: most texts are plain ASCII, for which NFKC and accent stripping are no-ops.
_ASCII_EDGE = string.punctuation + string.whitespace + "".join(map(chr, range(32))) + "\x7f"

# A word is a run of letters/digits; an apostrophe inside a word keeps it one word, so
# "don't stop" counts two words, not three, for the short-text rule.
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

def _is_edge(ch: str) -> bool:
    # Punctuation, symbols (emoji are So/Sk), separators, controls/format/unassigned
    # (newer emoji than this Python's Unicode tables) and marks left at an edge.
    return unicodedata.category(ch)[0] in "PSZCM"


# Look-alikes for Latin letters that NFKC leaves alone: letters in squares and circles drawn as
# emoji (🅢🅣🅞🅟, 🆂🆃🅾🅿) and regional indicators (🇸🇹🇴🇵). Two regional indicators are a flag
# ("🇫🇷 oui" stays a flag), so only a run of three or more spells a word; an enclosed letter
# spells one beside another enclosed letter or a Latin letter ("🅿️" alone stays the parking sign).
_ENCLOSED_RUN = re.compile(r"[\U0001F150-\U0001F169\U0001F170-\U0001F189\ufe0f]{2,}|[\U0001F1E6-\U0001F1FF]{3,}")
_ENCLOSED_BASES = ((0x1F150, 0x1F169), (0x1F170, 0x1F189), (0x1F1E6, 0x1F1FF))


def _enclosed_letters(found: re.Match[str]) -> str:
    out = []
    for ch in found.group():
        cp = ord(ch)
        for lo, hi in _ENCLOSED_BASES:
            if lo <= cp <= hi:
                out.append(chr(ord("a") + cp - lo))
    return "".join(out) if len(out) >= 2 else found.group()


# Cyrillic, Greek and Armenian letters drawn like Latin ones (after casefolding), from Unicode's
# confusables table (https://www.unicode.org/Public/security/latest/confusables.txt): "SТОР"
# with a Cyrillic Т, О and Р reads "stop".
_CONFUSABLE = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "ү": "y", "α": "a", "β": "b", "ε": "e", "η": "h", "ι": "i", "κ": "k", "μ": "m",
    "ν": "n", "ο": "o", "ρ": "p", "τ": "t", "υ": "y", "χ": "x", "ζ": "z",
    "տ": "s", "օ": "o", "ս": "u", "հ": "h", "ց": "g", "ք": "p", "ո": "n",
}  # fmt: skip
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLE)
# Small capitals (phonetic letters no language of ours writes in prose), which NFKC leaves alone:
# "ꜱᴛᴏᴘ" reads "stop".
_SMALL_CAPITALS = str.maketrans({
    "\u1d00": "a", "\u0299": "b", "\u1d04": "c", "\u1d05": "d", "\u1d07": "e", "\ua730": "f", "\u0262": "g",
    "\u029c": "h", "\u026a": "i", "\u1d0a": "j", "\u1d0b": "k", "\u029f": "l", "\u1d0d": "m", "\u0274": "n",
    "\u1d0f": "o", "\u1d18": "p", "\u1d29": "p", "\u0280": "r", "\ua731": "s", "\u1d1b": "t", "\u1d1c": "u",
    "\u1d20": "v", "\u1d21": "w", "\u028f": "y", "\u1d22": "z",
})  # fmt: skip
_SMALL_CAPITAL = re.compile("[" + "".join(chr(cp) for cp in _SMALL_CAPITALS) + "]")
# Either of the above: a character class searched once (the two searches run only on a hit).
_RARE_LETTERS = re.compile("[\U0001F150-\U0001F1FF" + "".join(map(chr, _SMALL_CAPITALS)) + "]")
_CYRILLIC_GREEK = re.compile(r"[\u0370-\u03ff\u0400-\u052f\u0531-\u058f\u1c80-\u1c8f\u1f00-\u1fff]")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_CONFUSABLES = frozenset(_CONFUSABLE)
_RARE_IN_RUSSIAN = frozenset("ѕіїјԁһԛԝӏү")


def _fold_confusables(s: str) -> str:
    """Latin for Cyrillic/Greek look-alikes (before casefolding): in a word mixing them with Latin
    letters ("SТОР", "sтор"), and in a word of three or more capitals made only of look-alikes
    when no other Cyrillic or Greek letter stands in the text ("СТОР"). Russian or Greek prose
    keeps its letters ("не тот номер"): lower case, or a letter with no Latin twin nearby.
    Whitespace may come back collapsed to single spaces."""
    others = any(ch.lower() not in _CONFUSABLES for ch in _CYRILLIC_GREEK.findall(s))

    folded: dict[str, str] = {}  # a word repeated in one text is judged once (pasted texts repeat a lot)

    def fold(found: re.Match[str]) -> str:
        word = found.group()
        done = folded.get(word)
        if done is None:
            done = folded[word] = fold_word(word)
        return done

    def fold_word(word: str) -> str:
        foreign = _CYRILLIC_GREEK.findall(word)
        if not foreign or any(ch.lower() not in _CONFUSABLES for ch in foreign):
            return word
        if not all(ch.isascii() or ch.lower() in _CONFUSABLES for ch in word):
            return word
        rare = any(ch.lower() in _RARE_IN_RUSSIAN for ch in foreign)  # "ѕтор": a Macedonian ѕ in a Latin word
        if len(foreign) < len(word) or (not others and len(word) >= 3 and (word.isupper() or rare)):
            return word.lower().translate(_CONFUSABLE_TABLE)
        return word

    # Word by word, each distinct one judged once; spaces are collapsed (normalize collapses them anyway).
    tokens = s.split()
    changed: dict[str, str] = {}
    for token in set(tokens):
        if _CYRILLIC_GREEK.search(token):
            done = _LETTER_RUN.sub(fold, token)
            if done != token:
                changed[token] = done
    return " ".join(map(changed.get, tokens, tokens)) if changed else s


def normalize(text: str) -> str:
    """Normalise a text or keyword for matching: NFKC, no invisibles or accents, casefolded, trimmed,
    Latin look-alikes (Cyrillic/Greek homoglyphs, enclosed and regional-indicator letters) folded."""
    if text.isascii():
        s = " ".join(text.lower().split())
        out = s.strip(_ASCII_EDGE)
        if out and out[0].isalpha() and s[: s.find(out)].endswith("$"):
            out = "s" + out  # "$TOP": a dollar sign glued to a word stands for its S
        if out and s.endswith(" #") and out[-1].isalnum():
            out += " #"  # "wrong #": a number sign standing alone at the end is a word
        return out
    rare = _RARE_LETTERS.search(text)  # one pass: most texts hold no enclosed letter, no small capital
    if rare is not None and _ENCLOSED_RUN.search(text):
        text = _ENCLOSED_RUN.sub(_enclosed_letters, text)
    if rare is not None and _SMALL_CAPITAL.search(text):
        text = text.translate(_SMALL_CAPITALS)
    s = unicodedata.normalize("NFKC", text)
    folded = _CYRILLIC_GREEK.search(s) is not None
    if folded:  # look-alikes are judged without their accents ("Άu" is "au")
        s = _fold_confusables(_drop(unicodedata.normalize("NFD", s)))
    # Casefolding that does more than lowering can make a look-alike ("ᲂu"); lowering alone
    # cannot give the fold above anything new to do (it reads letters lowered already).
    again = not folded or s.casefold() != s.lower()
    # Accents go after casefolding, which can itself produce combining marks (İ -> i̇); the
    # Vietnamese "đ" has a stroke, not a mark, and is stripped too ("đừng" reads "dung").
    s = _drop(unicodedata.normalize("NFD", s.casefold()))
    s = " ".join(unicodedata.normalize("NFC", s).split())
    if again and _CYRILLIC_GREEK.search(s):  # a letter that became a look-alike only by casefolding ("ᲂu")
        s = _fold_confusables(s)
    start, end = 0, len(s)
    while start < end and _is_edge(s[start]):
        start += 1
    while end > start and _is_edge(s[end - 1]):
        end -= 1
    out = s[start:end]
    if 0 < start < end and s[start - 1] == "$" and s[start].isalpha():
        out = "s" + out
    if out and s.endswith(" #") and end == len(s) - 2 and out[-1].isalnum():
        out += " #"
    return out


def split_words(normalized: str) -> tuple[str, ...]:
    """The words of a normalised text: runs of letters and digits ("stop, please" -> stop, please)."""
    return tuple(_WORD.findall(normalized))
