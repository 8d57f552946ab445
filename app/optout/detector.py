"""Read one inbound text as an opt-out, a flagged near-opt-out, or neither (pure, deterministic).

The rules, in the order a verdict's `rule` names them:

- `phrase`: a pattern of a language's lexicon ("remove me", "no more {msg}", "dejen de {send}");
- `keyword`: a clause made only of opt-out keywords and their companions ("Stop merci",
  "STOP SMS", "Nope. Remove.", "..., stop"); `typo`: the same with a misspelt keyword ("stpo");
- `strong`: a word that is an opt-out wherever it stands ("unsubscribe", "désabonner");
- `short`: a loose word ("stop") in a text of at most five words ("make it stop"); `first`: one
  that opens the text ("Stop svp je reçois trop de messages");
- `substring`/`alone`: the same for scripts without spaces between words (zh, ja, ko, ar, hi).

A reading that would be an opt-out in a text of second thoughts or hypotheticals ("Stop. Actually
never mind", "if prices go up again I'll unsubscribe") is flagged `hedged`. A text that no rule
honours but that holds opt-out vocabulary of any language (the wide `net` of each lexicon: "cancel",
"consent", "spam", "dnc") is flagged `net`, and one made only of a stop sign or a raised hand
(🛑, ✋) is flagged `symbol`: a person decides within the FCC's ten business days.

Look-alikes (Cyrillic/Greek homoglyphs, enclosed and regional-indicator letters) are folded by
app.normalize; here symbols standing for letters ("$top", "st0p", "@rrêt"), words split in two
("un subscribe", "ab melden") and misspellings up to two edits of a long keyword ("unsuscrbie")
are read as the word they spell.

Cost is bounded: only the first `MAX_CHARS` characters are read (the whole text is still stored),
and `Detector.steps` counts the work of the last call (words visited, pattern attempts, typo
comparisons, characters scanned by substring searches) so tests can bound it without a clock.

A reading that would be an opt-out but is negated ("don't stop the deals", "N'arrêtez pas"),
vetoed (a re-subscribe request, "keep the texts", another channel named: "unsubscribe from the
emails") or a loose word in a long text that no rule explains is **flagged**: it changes
nothing, and a person looks. Words in another sense ("bus stop", "end of the day", "cancel my
order") are masked before any rule runs.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate, compress, filterfalse
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter

from app.normalize import normalize
from app.optout.lexicon import Lexicon, exact_key, fold_substring, load, split_elision, trie_regex
from app.optout.words import WordFacts, edits_within, typo_variants


class Outcome(StrEnum):
    """What a text asks for, as far as consent goes."""

    OPT_OUT = "opt_out"  # honour it: the person revoked consent
    FLAGGED = "flagged"  # close to an opt-out but not honoured (negated, vetoed, ambiguous): a person should look
    NONE = "none"  # nothing to do with opting out


@dataclass(frozen=True)
class Verdict:
    """The detector's reading of one text, and why."""

    outcome: Outcome
    rule: str | None = None  # phrase|keyword|typo|strong|short|first|substring|alone; negated|veto|ambiguous|hedged|net|symbol
    words: str | None = None  # the words that fired, normalised
    language: str | None = None  # language of the lexicon entry that fired

    @property
    def why(self) -> str | None:
        """Short and human-readable: "phrase(fr): 'ne plus recevoir'"; None when no rule fired."""
        if self.rule is None:
            return None
        if self.language is None:  # a symbol belongs to no language
            return f"{self.rule}: '{self.words}'"
        return f"{self.rule}({self.language}): '{self.words}'"


NOTHING = Verdict(Outcome.NONE)
MAX_CHARS = 1_600  # the longest concatenated SMS (10 x 160 GSM-7 characters); the rest is not read
# A text made only of a stop sign, a no-entry sign or a raised hand: flagged, not honoured.
_STOP_SYMBOLS = frozenset("\U0001f6d1\u270b\u26d4\U0001f6ab\U0001f645\U0001f91a\U0001f590")
_SYMBOL_NOISE = re.compile(r"[\s\ufe0f\u200d\U0001f3fb-\U0001f3ff\u2640\u2642!.]+")
# Symbols standing for letters inside a word: "$top", "unsub$cribe", "@rrêt".
_LETTER_SYMBOL = re.compile(r"[^\W_]*(?:[$@][^\W_]*)+|[^\W_]+(?:[!|*][^\W_]+)+")
_HYPHENATED = re.compile(r"([^\W\d_]+)\s*[-_\u2013\u2014]\s*([^\W\d_]+)")
# "st*p", "unsubscr*be": a star hides a vowel
_SYMBOL_LETTERS = (str.maketrans("$@!|*", "saiio"), str.maketrans("$@!|*", "soili"), str.maketrans("*", "a"))
_MAX_ANCHORS = 4
_REPEAT_MIN_WORDS = 40  # a text this long may repeat itself: failed pattern windows are remembered
_LOOK_CHARS = 120  # how far around a match the negation and channel checks look
_CONDITION_REACH = 12  # "if" this many words or fewer before an opt-out reading makes it hypothetical
_TYPO2_MIN = 7  # a word this long may be two edits from a keyword of about its length
_SHORT_TEXT_WORDS = 5
_NEGATION_WINDOW = 3  # a negator this many words before an opt-out reading negates it
_TYPO_CLAUSE_WORDS = 4
_SCOPE_LOOKAHEAD = 3  # "unsubscribe from emails and texts": SMS named right after the other channel

# Letters typed one by one ("S T O P", "s.t.o.p", "S-T-0-P"): three or more single letters
# or digits separated by spaces, dots, dashes or stars are one word.
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?:[\s.\-_*\u00b7\u2022]+[^\W_](?![^\W_])){2,}")
_SPACERS = re.compile(r"[\s.\-_*\u00b7\u2022]+")
# Clauses end at punctuation, emoji and dashes between words; apostrophes and inner hyphens stay.
_PIECE = re.compile(r"([^\W_]+(?:['\u2019][^\W_]+)*'?)|([^\w\s'\u2019-]+|\s[-\u2013\u2014]+\s?|[\u2013\u2014])")
_LATIN_RUN = re.compile(r"[a-z]+")
_HASH = re.compile(r"#(?!\d)")
_RUN = re.compile(r"(.)\1{2,}")  # STOOOOP, Stoppppp: three or more of a letter are one
_LEET = str.maketrans("013457", "oieast")  # S T 0 P, st0p
# Scripts whose words the substring lexicons read: CJK, kana, Hangul, Arabic, Devanagari.
_SUBSTRING_SCRIPT = re.compile(
    r"[\u0600-\u06ff\u0900-\u097f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u1100-\u11ff\uff66-\uff9f]"
)
_CACHE_LIMIT = 50_000
_FIRST_MARK = re.compile(r"[,.;:!?\u3001\u3002\uff0c\uff01\uff1f\u060c]")
_EXACT_CHARS = 24  # a text this short may be a keyword as typed (the lexicons' `exact`)
# One-letter spellings of Romance function words in texting ("dejen d mandar", "q no me escriban").
_ABBREVIATIONS = {"d": "de", "q": "que"}
# Languages that put the negator after the verb ("Haal me niet van de lijst af", "Nehmt mich nicht raus").
_NEGATOR_AFTER = frozenset({"nl", "de"})
_AGAIN = frozenset({"meer", "mehr", "wieder", "weer", "langer", "laenger"})
_PAIR_GAP = 8  # characters between the two halves of a substring pair ("短信…别发")
_NEGAFTER_REACH = 4  # characters between an opt-out substring and a negation after it ("配信停止はしないで")
_FUZZY_MIN = 5  # a word this long one edit from opt-out vocabulary is flagged ("otpout", "отпешите")
_RESPELL_MIN = 7  # a word this long one edit from a lexicon word reads as it ("escrivirme", "sacenme")
# Spellings by sound: "kiero" (quiero), "vaja" (baja), "escrivirme" (escribirme), "spammin" (spamming).
_SOUND_SWAPS = (("k", "qu"), ("v", "b"), ("b", "v"), ("z", "s"), ("s", "z"), ("c", "qu"), ("y", "ll"), ("i", "e"), ("e", "i"))


class Detector:
    """The compiled lexicons and the rules that read a text with them."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon
        known = set(lexicon.keywords).union(*lexicon.sets.values())
        self.typos: dict[str, str] = {}
        for word, (strength, _) in lexicon.keywords.items():
            if (strength != "weak" or len(word) >= 6) and len(word) >= 4 and word.isalpha():
                for variant in typo_variants(word):
                    if strength == "weak" and sorted(variant) != sorted(word):
                        continue  # a long weak word ("remove") only with letters swapped ("remvoe")
                    if variant not in known:
                        self.typos.setdefault(variant, word)
        self.anchors: dict[str, list[int]] = {}
        self.prefixes: dict[str, list[int]] = {}
        for index, pattern in enumerate(lexicon.patterns):
            for word in pattern.anchors:
                self.anchors.setdefault(word, []).append(index)
            for stem in pattern.prefix_anchors:
                self.prefixes.setdefault(stem, []).append(index)
        self.prefix_lengths = tuple(sorted({len(s) for s in self.prefixes}))
        # Long strong keywords and stems by first letter, for misspellings two edits away ("unsuscrbie").
        self.long_keywords: dict[str, list[tuple[str, bool, frozenset[str]]]] = {}
        for word, (strength, _) in lexicon.keywords.items():
            if strength == "strong" and len(word) >= _TYPO2_MIN and word.isalpha():
                self.long_keywords.setdefault(word[0], []).append((word, False, frozenset(word)))
        for stem, (strength, _) in lexicon.keyword_prefixes.items():
            if strength == "strong" and len(stem) >= 6 and stem.isalpha():
                self.long_keywords.setdefault(stem[0], []).append((stem, True, frozenset(stem)))
        # a loose keyword with one letter changed, read as it before a verb of sending ("stoo texting me")
        self.near_loose: dict[str, str] = {}
        for word, (strength, _) in lexicon.keywords.items():
            if strength == "loose" and 4 <= len(word) <= 5 and word.isalpha() and word.isascii():
                for i in range(len(word)):
                    for letter in "abcdefghijklmnopqrstuvwxyz":
                        variant = word[:i] + letter + word[i + 1 :]
                        if variant not in known and variant not in lexicon.net:
                            self.near_loose.setdefault(variant, word)
        self.steps = 0  # the work of the last detect() call (see the module docstring)
        self._failed: dict[int, set[str]] = {}  # per call: pattern -> word windows it did not match
        # The first piece of a split keyword is the start of one ("un" subscribe, "ab" melden).
        self.heads = {w[:n] for w in (*lexicon.keywords, *lexicon.keyword_prefixes) for n in range(1, len(w))}
        self._words: dict[str, WordFacts] = _WordCache(self._new_word)
        self.word = self._words.__getitem__  # type: ignore[method-assign]
        self._tokens: dict[str, tuple[str, ...]] = {}
        subs = lexicon.substrings

        def alternation(section: str) -> re.Pattern[str] | None:
            return re.compile(trie_regex(subs[section])) if subs[section] else None

        self._sub_senses = alternation("senses")
        self._sub_keep = alternation("keep")
        self._sub_optout = alternation("optout")
        self._sub_fill = alternation("fill")
        self._sub_alone = subs["alone"]
        self._sub_hedge = alternation("hedge")
        self._sub_net = alternation("net")
        self._sub_obj = alternation("obj")
        self._sub_chan = alternation("chan")
        self._sub_msg = alternation("msg")
        pairs = [
            (f"p{number}", key, language) for number, (key, language) in enumerate(subs["pairs"].items())
        ]
        self._pair_language = {name: language for name, _, language in pairs}
        self._sub_pairs = (
            re.compile("|".join(
                f"(?P<{name}>(?:{key.split('~')[0]}).{{0,{_PAIR_GAP}}}?(?:{key.split('~')[1]}))" for name, key, _ in pairs
            ))
            if pairs else None
        )  # fmt: skip
        self._sub_negafter = alternation("negafter")
        self._fuzzy: dict[str, str] | None = None  # built on first use (see _fuzzy_net)
        self._respell: dict[str, str] | None = None
        # strong stems of five letters or more by their first two letters (their misspellings keep those)
        self._strong_stems: dict[str, list[str]] = {}
        for stem, (strength, _) in lexicon.keyword_prefixes.items():
            if strength == "strong" and len(stem) >= _FUZZY_MIN and stem.isalpha():
                self._strong_stems.setdefault(stem[:2], []).append(stem)
        self._fill_text = re.compile(trie_regex(lexicon.fill_text))

    # -- words

    def word(self, word: str) -> WordFacts:
        """The cached lexicon facts about one processed word (a known word is a dict lookup in C:
        __init__ binds `self.word` to the cache's __getitem__, whose __missing__ calls _new_word)."""
        return self._words[word]

    def _new_word(self, word: str) -> WordFacts:
        found = self._words.get(word)
        if found is None:
            if len(self._words) >= _CACHE_LIMIT:
                self._words.clear()
            found = WordFacts(self.lexicon, self.typos, self.anchors, self.prefixes, self.prefix_lengths, word)
            if found.strength is None and found.typo_of is None and not found.companion and len(word) >= _TYPO2_MIN:
                found.typo_of = self._far_typo(word)
                if found.typo_of is not None and found.net is None:
                    found.net = self.word(found.typo_of).language
            if (
                found.net is None
                and found.strength is None
                and found.typo_of is None
                and not found.companion
                and len(word) >= _FUZZY_MIN
                and word.isalpha()
            ):
                found.net = self._fuzzy_net(word)
            self._words[word] = found
        return found

    def _fuzzy_tables(self) -> tuple[dict[str, str], dict[str, str]]:
        """Opt-out vocabulary and lexicon words, each with its one-letter deletions (a symmetric-delete index)."""
        if self._fuzzy is None or self._respell is None:
            lexicon = self.lexicon
            fuzzy: dict[str, str] = {}
            vocabulary = {**lexicon.net, **{w: lang for w, (strength, lang) in lexicon.keywords.items() if strength != "weak"}}
            for stem, language in lexicon.net_prefixes.items():
                vocabulary.setdefault(stem, language)
            for word, language in vocabulary.items():
                if len(word) >= _FUZZY_MIN and word.isalpha():
                    fuzzy.setdefault(word, language)
                    for i in range(len(word)):
                        fuzzy.setdefault(word[:i] + word[i + 1 :], language)
            respell: dict[str, str] = {}
            known: set[str] = set()
            for pattern in lexicon.patterns:
                if pattern.section == "phrases":
                    known.update(pattern.literals)
            known.update(lexicon.sets["send"], lexicon.sets["msg"], lexicon.keywords)
            for word in sorted(known):
                if len(word) >= _RESPELL_MIN - 1 and word.isalpha():
                    respell.setdefault(word, word)
                    for i in range(len(word)):
                        respell.setdefault(word[:i] + word[i + 1 :], word)
            self._fuzzy, self._respell = fuzzy, respell
        return self._fuzzy, self._respell

    def _fuzzy_net(self, word: str) -> str | None:
        """The language of the opt-out word (or stem) `word` is one edit from, else None ("cancle", "отпешите")."""
        fuzzy, _ = self._fuzzy_tables()
        self.steps += 2 * len(word)
        if word in fuzzy:
            return fuzzy[word]
        for i in range(len(word)):
            language = fuzzy.get(word[:i] + word[i + 1 :])
            if language is not None:
                return language
        # a stem with an ending: "desuscribirme" one edit from "desuscrib~"
        for length in (6, 7, 8):
            if len(word) > length + 1 and (word[:length] in fuzzy or word[: length + 1] in fuzzy):
                return fuzzy.get(word[:length]) or fuzzy.get(word[: length + 1])
        return None

    def _respelt(self, word: str) -> str:
        """An unknown word as the lexicon word it misspells by sound or by one slip, else itself."""
        if len(word) < 4 or not word.isalpha():
            return word
        info = self.word(word)
        if info.strength or info.typo_of or info.companion or info.patterns or info.negator or info.obj:
            return word
        self.steps += 4 * len(word)
        candidates = [word + "g"] if word.endswith("in") and len(word) >= 5 else []  # "spammin", "textin"
        for old, new in _SOUND_SWAPS:
            if old in word:
                candidates.append(word.replace(old, new, 1))
                candidates.append(word.replace(old, new))
        for candidate in candidates:
            facts = self.word(candidate)
            if facts.strength or facts.patterns or facts.companion:
                return candidate
        # a strong stem with one letter changed or two swapped, ending kept: "отпешите" reads "отпишите"
        for stem in self._strong_stems.get(word[:2], ()):
            head = word[: len(stem)]
            if len(word) < len(stem) or head == stem:
                continue
            changed = [i for i, (a, b) in enumerate(zip(head, stem, strict=True)) if a != b]
            swapped = len(changed) == 2 and changed[1] == changed[0] + 1 and sorted(head) == sorted(stem)
            if len(changed) == 1 or swapped:
                return stem + word[len(stem) :]
        if len(word) >= _RESPELL_MIN:
            _, respell = self._fuzzy_tables()
            found = respell.get(word)
            if found is None:
                for i in range(len(word)):
                    found = respell.get(word[:i] + word[i + 1 :])
                    if found is not None:
                        break
            if found is not None and abs(len(found) - len(word)) <= 1:
                return found
        return word

    def _far_typo(self, word: str) -> str | None:
        """The long keyword (or stem) `word` misspells by at most two edits, else None ("usnubscribe")."""
        counter = [0]
        try:
            if not word.isalpha() or word in self.lexicon.net:
                return None
            for keyword, is_stem, letters in self.long_keywords.get(word[0], ()):
                counter[0] += 1
                # two edits bring in at most two letters the keyword lacks (a cheap filter, in C)
                if len(letters.union(word[: len(keyword) + 1] if is_stem else word)) > len(letters) + 2:
                    continue
                if is_stem:
                    n = len(keyword)
                    limit = 1 if n < 9 else 2
                    if n < 7 and sorted(word[:n]) != sorted(keyword):  # short stems: letters swapped only
                        continue
                    if len(word) >= n - 1 and any(
                        edits_within(word[:length], keyword, limit, counter) for length in (n - 1, n, n + 1)
                    ):
                        return keyword
                elif edits_within(word, keyword, 2, counter):
                    return keyword
            return None
        finally:
            self.steps += counter[0]

    def tokens(self, raw: str) -> tuple[str, ...]:
        """One word of the text as the lexicons spell it: elisions split, leet and elongation undone."""
        found = self._tokens.get(raw)
        if found is None:
            if len(self._tokens) >= _CACHE_LIMIT:
                self._tokens.clear()
            out = []
            for part in split_elision(raw.replace("\u2019", "'")):
                if not part.isalpha() and not part.isdigit() and any(c.isdigit() for c in part):
                    part = part.translate(_LEET)
                part = _ABBREVIATIONS.get(part, part)
                out.append(self._respelt(_RUN.sub(r"\1", part)))
            found = tuple(out)
            self._tokens[raw] = found
        return found

    def clauses(self, normalized: str) -> list[list[str]]:
        """The text's clauses, each a list of processed words; "opt out" is one word."""
        if "#" in normalized:  # "wrong #": a number sign that numbers nothing is the word "number"
            normalized = _HASH.sub(" number ", normalized)
        if "$" in normalized or "@" in normalized or "!" in normalized or "|" in normalized or "*" in normalized:
            normalized = _LETTER_SYMBOL.sub(self._symbol_word, normalized)
        if "-" in normalized or "_" in normalized:
            normalized = _HYPHENATED.sub(self._unhyphenated, normalized)
        if _SPACED.search(normalized):
            normalized = _SPACED.sub(lambda m: _SPACERS.sub("", m.group()), normalized)
        out: list[list[str]] = []
        words: list[str] = []
        pieces = _PIECE.findall(normalized)
        self.steps += len(pieces)
        cached = self._tokens.get
        for word, _ in pieces:
            if not word:  # a clause ends here
                if words:
                    out.append(self._joined(words))
                    words = []
                continue
            for token in cached(word) or self.tokens(word):
                if token == "out" and words and words[-1] == "opt":
                    words[-1] = "optout"
                else:
                    words.append(token)
        if words:
            out.append(self._joined(words))
        return out

    def _unhyphenated(self, found: re.Match[str]) -> str:
        """"opt - out", "un-subscribe": a keyword cut by a dash is one word."""
        joined = found.group(1) + found.group(2)
        return joined if self.word(joined).strength in ("strong", "loose") else found.group()

    def _symbol_word(self, found: re.Match[str]) -> str:
        """"unsub$cribe", "@rrêt", "st@p": $ reads s, @ reads a or o (whichever spells a word the lexicons know)."""
        word = found.group()
        if not any(ch.isalpha() for ch in word):
            return word
        readings = [word.translate(table) for table in _SYMBOL_LETTERS]
        for reading in readings:
            info = self.word(reading.translate(_LEET) if any(c.isdigit() for c in reading) else reading)
            if info.strength is not None or info.typo_of is not None or info.companion:
                return reading
        # "stop!please", "yes|no": punctuation between words stays punctuation
        return readings[0] if "$" in word or "@" in word else word

    def _joined(self, words: list[str]) -> list[str]:
        """A clause with a keyword split in two or three ("un subscribe", "ab melden", "unsub scribe") made whole."""
        if len(words) < 2:
            return words
        self.steps += len(words)
        out: list[str] = []
        i = 0
        # a pasted text repeats itself: the same three words decide the same way (per call); a
        # word that starts no keyword and misspells none stands as it is
        decided: dict[tuple[str, ...], tuple[int, str]] = {}
        heads, near = self.heads, self.near_loose
        plain = {w for w in set(words) if w not in heads and w not in near and self.word(w).typo_of is None}
        if plain.issuperset(words):
            return words
        while i < len(words):
            if words[i] in plain:
                out.append(words[i])
                i += 1
                continue
            key = tuple(words[i : i + 3])
            known = decided.get(key)
            if known is not None:
                out.append(known[1])
                i += known[0]
                continue
            taken = 1
            if words[i] in self.heads and self.word(words[i]).strength not in ("strong", "loose"):
                for span in (3, 2):
                    parts = words[i : i + span]
                    # the pieces of a split word are not words of their own ("cancelar mi" stays two)
                    if i + span <= len(words) and not any(self.word(p).strength for p in parts):
                        info = self.word("".join(parts))
                        far = (
                            info.typo_of is not None
                            and self.word(info.typo_of).strength == "strong"
                            and not self.word(parts[-1]).companion
                        )
                        weak = info.strength == "weak" and min(map(len, parts)) > 1 and len("".join(parts)) >= 4
                        if info.strength in ("strong", "loose") or far or weak:  # "des suscribir", "ba ja"
                            taken = span
                            break
            word = "".join(words[i : i + taken])
            if taken == 1 and word in self.near_loose and i + 1 < len(words) and self.word(words[i + 1]).send:
                word = self.near_loose[word]  # "stoo texting me"
            info = self.word(word)
            if info.typo_of is not None and info.strength is None and len(words) > 1 and (
                len(word) >= 8 or sorted(word) == sorted(info.typo_of)
            ):
                word = info.typo_of  # "stpo texting me" reads as "stop texting me"
            decided[key] = (taken, word)
            out.append(word)
            i += taken
        return out

    # -- reading a text

    def detect(self, normalized: str, question: bool = False) -> Verdict:
        """The verdict for a text already passed through app.matching.normalize (its first MAX_CHARS read);
        `question`: the text as sent holds a question mark (the normaliser drops a closing one)."""
        self.steps = 0
        if not normalized:
            return NOTHING
        self._failed = {}
        self._folded: str | None = None  # the text as the substring lexicons read it, once a call
        normalized = normalized[:MAX_CHARS]
        self.steps += len(normalized)  # the normalising and pre-passes each read the text once
        question = question or "?" in normalized
        other_script = not normalized.isascii() and _SUBSTRING_SCRIPT.search(normalized) is not None
        # "SAIR 谢谢": politeness in another script takes no part in the word rules.
        clauses = self.clauses(self._fill_text.sub(" ", normalized) if other_script else normalized)
        # "Stop, is this price right?": a comma after the first words, and a question
        mark = _FIRST_MARK.search(normalized) if question else None
        verdict = self._tokens_verdict(clauses, mark is not None and mark.group() == ",") if clauses else NOTHING
        if verdict.outcome is Outcome.NONE and clauses:
            verdict = self._intent_net(clauses, question)
        if verdict.outcome is not Outcome.OPT_OUT and other_script:
            by_substring = self._substring_verdict(normalized)
            if by_substring.outcome is Outcome.OPT_OUT or verdict.outcome is Outcome.NONE:
                verdict = by_substring
        if verdict.outcome is Outcome.NONE and other_script and self._sub_net is not None:
            self.steps += len(normalized)
            found = self._sub_net.search(self._folded or fold_substring(normalized))
            if found:
                return Verdict(Outcome.FLAGGED, "net", found.group(), self.lexicon.substrings["net"][found.group()])
        return verdict

    def _tokens_verdict(self, clauses: list[list[str]], aside: bool = False) -> Verdict:
        words_of = self.word
        flat: list[str] = []  # the words, with "|" between clauses
        triggers: dict[int, list[int]] = {}  # pattern -> positions of its anchor words
        interesting = False
        net: Verdict | None = None
        conditions: list[int] = []  # where "if" and its kin stand
        for clause in clauses:
            if flat:
                flat.append("|")
            flat.extend(clause)
        self.steps += len(flat)
        # Each distinct word is looked up once (a pasted text repeats its words).
        distinct = {word: words_of(word) for word in set(flat)}
        distinct.pop("|", None)
        anchoring = {word for word, info in distinct.items() if info.patterns}
        cond_words = {word for word, info in distinct.items() if info.cond}
        net_words = {word for word, info in distinct.items() if info.net is not None}
        interesting = any(info.strength is not None or info.typo_of is not None for info in distinct.values())
        if anchoring or cond_words:
            # a pattern is tried at its first _MAX_ANCHORS anchors only (see _matches): a word met
            # that often already gave every pattern it anchors that many
            places: dict[str, list[int]] = {}
            for at, word in enumerate(flat):
                if word in anchoring:
                    found = places.setdefault(word, [])
                    if len(found) < _MAX_ANCHORS:
                        found.append(at)
                if word in cond_words:
                    conditions.append(at)
            for word, found in places.items():
                indexes = distinct[word].patterns
                self.steps += len(indexes) * len(found)
                for index in indexes:
                    triggers.setdefault(index, []).extend(found)
            if len(places) > 1:
                for found in triggers.values():
                    found.sort()
        if net_words:
            first = next(word for word in flat if word in net_words)
            net = Verdict(Outcome.FLAGGED, "net", first, distinct[first].net)
        if not triggers and not interesting:
            return self._net(" ".join(flat)) if net is not None else NOTHING
        patterns = self.lexicon.patterns
        by_section: dict[str, list[int]] = {}
        for index in sorted(triggers):
            by_section.setdefault(patterns[index].section, []).append(index)
        joined = " ".join(flat) + " "
        offsets = _offsets(flat)
        # Other senses first: their words take no further part ("bus stop", "cancel my order").
        masked, masked_offsets = joined, offsets
        senses = by_section.get("senses")
        if senses:
            hidden = list(flat)
            for index in senses:
                for start, found in self._matches(index, triggers[index], flat, joined, offsets):
                    hidden[start : start + len(found.group().split())] = ["_"] * len(found.group().split())
            if hidden != flat:
                masked, masked_offsets = " ".join(hidden) + " ", _offsets(hidden)
        veto: Verdict | None = None
        for index in by_section.get("keep", ()):
            for _, found in self._matches(index, triggers[index], flat, joined, offsets):
                veto = Verdict(Outcome.FLAGGED, "veto", found.group().strip(), patterns[index].language)
                break
            if veto:
                break
        if veto is None:
            for index in by_section.get("scope", ()):
                for _, found in self._matches(index, triggers[index], flat, masked, masked_offsets):
                    if not self._sms_follows(masked, found.end()):
                        veto = Verdict(Outcome.FLAGGED, "veto", found.group().strip(), patterns[index].language)
                        break
                if veto:
                    break
        hedge: Verdict | None = None
        for index in by_section.get("hedge", ()):
            for _, found in self._matches(index, triggers[index], flat, joined, offsets):
                hedge = Verdict(Outcome.FLAGGED, "hedged", found.group().strip(), patterns[index].language)
                break
            if hedge:
                break
        negated: Verdict | None = None
        candidate: Verdict | None = None
        position = 0  # where the candidate's words start in flat
        for index in by_section.get("phrases", ()):
            pattern = patterns[index]
            for position, found in self._matches(index, triggers[index], flat, masked, masked_offsets):
                words = found.group().strip()
                if (
                    self._negated_before(masked, found.start())
                    or (pattern.language in _NEGATOR_AFTER and self._negated_after(masked, found.end()))
                    or any(self.word(w).negator and w not in pattern.literals for w in words.split())
                    or self._double_negative(words.split())
                ):
                    before = masked[max(0, found.start() - _LOOK_CHARS) : found.start()].rsplit("|", 1)[-1].split()
                    before = before[-_NEGATION_WINDOW:]
                    shown = " ".join([*before, words])
                    negated = negated or Verdict(Outcome.FLAGGED, "negated", shown, pattern.language)
                    continue
                if self._about_other_object(masked, found.start(), found.end()):
                    continue  # "Vous pouvez stopper ma commande ?": an order, not the texts
                candidate = Verdict(Outcome.OPT_OUT, "phrase", words, pattern.language)
                break
            if candidate:
                break
        if candidate is None and interesting:  # the clause rules need a keyword or a misspelt one
            candidate, position, clause_negated = self._clause_rules(masked)
            negated = negated or clause_negated
        if candidate is not None:
            if veto is not None:
                return veto
            if hedge is not None:
                return hedge
            if candidate.rule in ("keyword", "first", "short") and self.lexicon.sets["wow"].intersection(flat):
                # "Stop! That price is amazing": a bare stop beside delight is an exclamation
                return Verdict(Outcome.FLAGGED, "hedged", candidate.words, candidate.language)
            if self._other_channel(flat, position):
                # "take me off the email list, keep the texts": another channel, not these texts
                return Verdict(Outcome.FLAGGED, "veto", candidate.words, candidate.language)
            if (
                aside
                and candidate.rule in ("keyword", "first", "short")
                and self._interjection(flat, position, by_section, triggers, masked, masked_offsets)
            ):
                # "Stop, is this price right?": a bare loose word before a question about something else
                return Verdict(Outcome.FLAGGED, "ambiguous", candidate.words, candidate.language)
            # "if prices go up again I'll unsubscribe": a condition two or more words before it
            grace = self.lexicon.sets["grace"]
            for where in conditions:
                if (
                    3 <= position - where <= _CONDITION_REACH
                    and flat[where + 1] != "|"  # "Sí, denme de baja": a yes, not an if
                    # "Se pa mwen, move moun": "se" is "if" in Portuguese and Italian only (English
                    # keywords are used in every language: "Kung magtetext pa kayo, mag-unsubscribe ako")
                    and (candidate.language == "en" or candidate.language in self.lexicon.cond_languages.get(flat[where], ()))
                    and not grace.intersection(flat[max(0, where - 3) : where])
                ):
                    shown = " ".join(w for w in flat[where : position + 1] if w != "|")
                    return Verdict(Outcome.FLAGGED, "hedged", shown, candidate.language)
            return candidate
        if negated is not None:
            return negated
        if veto is not None:
            return veto
        if hedge is not None:
            return hedge
        loose = self._loose_word(masked) if interesting else None
        if loose is not None:
            return Verdict(Outcome.FLAGGED, "ambiguous", loose[0], loose[1])
        for index in by_section.get("flag", ()):
            for _, found in self._matches(index, triggers[index], flat, masked, masked_offsets):
                return Verdict(Outcome.FLAGGED, "net", found.group().strip(), patterns[index].language)
        return self._net(masked) if net is not None else NOTHING

    def _other_channel(self, flat: list[str], position: int) -> bool:
        """Whether the opt-out at `position` is about another channel: its clause names one (e-mail,
        newsletter) and no text message, or names neither while another clause names a channel.
        A message noun right after a channel word is part of it ("email messages", "email-рассылки")."""
        words = self.word
        if not any(words(w).chan for w in flat if w != "|"):
            return False
        start = position
        while start > 0 and flat[start - 1] != "|":
            start -= 1
        end = position
        while end < len(flat) and flat[end] != "|":
            end += 1
        clause = flat[start:end]
        self.steps += len(flat)
        chan_here = any(words(w).chan for w in clause)
        texts_here = any(
            words(w).msg and not words(w).chan and not (i > 0 and words(clause[i - 1]).chan)
            for i, w in enumerate(clause)
        )
        if chan_here:
            return not texts_here
        if texts_here or any(words(w).send for w in clause):
            return False
        # "unsubscribe me from everything, emails and texts": the texts are named in another clause
        return not any(
            words(w).msg and not words(w).chan and not (i > 0 and words(flat[i - 1]).chan)
            for i, w in enumerate(flat)
            if w != "|"
        )

    def _interjection(
        self, flat: list[str], position: int, by_section: dict[str, list[int]], triggers: dict[int, list[int]],
        masked: str, masked_offsets: list[int],
    ) -> bool:
        """Whether a loose keyword stands beside a question that names neither the texts nor any
        opt-out vocabulary ("Stopp, stimmt der Preis so?", "wait stop, does the coupon work online?")."""
        word = flat[position] if position < len(flat) else ""
        # the keyword opens the text ("what is this? stop" is not an aside)
        if self.word(word).strength not in ("loose", "weak") or "|" in flat[:position]:
            return False
        if "|" not in flat:
            return False
        # the question: the clauses after the keyword's own ("ruko ruko, ye coupon online chalega?")
        rest = [w for w in flat[flat.index("|") + 1 :] if w not in ("|", "_")]
        self.steps += len(rest)
        content = [w for w in rest if not self.word(w).fill]
        if len(content) < 2:
            return False
        for w in content:
            info = self.word(w)
            if info.msg or info.send or info.strength or info.typo_of or info.negator or info.me:
                return False
            if info.net and len(w) > 2:  # "so" (Vietnamese "số") is not vocabulary in a German question
                return False
        for index in by_section.get("flag", ()):  # "Stop. Who is this?"
            for _ in self._matches(index, triggers[index], flat, masked, masked_offsets):
                return False
        return True

    def _intent_net(self, clauses: list[list[str]], question: bool) -> Verdict:
        """The widest net: the texts themselves (or sending them) named with a negation or in a
        question ("why do I get these messages?", "no quiero mas mensajes de ustedes"), unless the
        clause is about an order or a delivery."""
        for clause in clauses:
            infos = [self.word(w) for w in clause]
            self.steps += len(infos)
            if any(i.obj for i in infos):
                continue
            named = next((w for w, i in zip(clause, infos, strict=True) if i.msg), None)
            # "kill the texts please", "im good on the promos"; a noun alone ("PROMO", "ALERTS") is a keyword
            if named is not None and (question or any(i.negator for i in infos) or sum(map(len, clauses)) > 1):
                return Verdict(Outcome.FLAGGED, "net", named, None)
        return NOTHING

    def _net(self, masked: str) -> Verdict:
        """The wide net: opt-out vocabulary in a clause that is not about an order, a delivery or a
        purchase ("cancel my order" is not) and not in another sense ("bus stop" is masked)."""
        for clause in masked.split("|"):
            infos = [(w, self.word(w)) for w in clause.split()]
            if any(i.obj for _, i in infos) and not any(i.msg for _, i in infos):
                continue
            for word, info in infos:
                if info.net is not None:
                    return Verdict(Outcome.FLAGGED, "net", word, info.net)
        return NOTHING

    def _matches(
        self, index: int, positions: list[int], flat: list[str], text: str, offsets: list[int]
    ) -> Iterator[tuple[int, re.Match[str]]]:
        """A pattern's matches, tried only at the word starts from which a match could reach an anchor word."""
        pattern = self.lexicon.patterns[index]
        searcher = pattern.searcher
        given: set[int] = set()  # the starts already yielded (two anchors may reach one start)
        # Pasted texts repeat: an anchor whose words around it (as far as a match can reach) were
        # already searched without any match cannot match now either, and is skipped.
        failed = self._failed.setdefault(index, set()) if len(flat) > _REPEAT_MIN_WORDS else None
        count = len(offsets)
        # A pattern is tried at its first _MAX_ANCHORS anchor words only: "stop don't" pasted a
        # hundred times costs what four times do (the loose-word rule still reads the rest).
        before = pattern.before
        spans: list[list[int]] = []  # [first start, last start]: anchors close together share one search
        for position in positions[:_MAX_ANCHORS]:
            low = position - before if position > before else 0
            if spans and low <= spans[-1][1] + 1:
                spans[-1][1] = position
            else:
                spans.append([low, position])
        for low, position in spans:
            end = position + pattern.reach
            key = None
            if failed is not None:
                # from the word before the first start ("^" reads it) to the furthest a match reaches
                key = text[offsets[low - 1] if low else 0 : offsets[end] if end < count else len(text)]
                key = key if low else "\0" + key
                if key in failed:
                    continue
            # One search (in C) over the word starts from `low` to the anchor; the search ends two
            # words past the furthest a match can reach, so "$" (a clause's end) cannot fire early.
            last, stop = offsets[position], offsets[end + 2] if end + 2 < count else len(text)
            at = offsets[low]
            clean = True
            while True:
                self.steps += 1
                found = searcher.search(text, at, stop)
                if found is None or found.start() > last:
                    break
                clean = False
                start = bisect_left(offsets, found.start())
                if start not in given:
                    given.add(start)
                    yield start, found
                at = found.start() + 1
            if key is not None and clean:
                failed.add(key)

    def _double_negative(self, words: list[str]) -> bool:
        """A negator before a stop word inside one match: "не прекращайте присылать", "huwag itigil ang promo"."""
        seen = False
        for word in words:
            info = self.word(word)
            if seen and info.strength in ("strong", "loose"):
                return True
            seen = seen or info.negator
        return False

    def _negated_before(self, masked: str, start: int) -> bool:
        # only the last few words are read (a bounded slice: the cost must not grow with the text)
        window = masked[max(0, start - _LOOK_CHARS) : start].rsplit("|", 1)[-1].split()[-4 * _NEGATION_WINDOW :]
        self.steps += len(window)
        before = [w for w in window if not self.word(w).fill]
        return any(self.word(w).negator for w in before[-_NEGATION_WINDOW:])

    def _negated_after(self, masked: str, end: int) -> bool:
        """A negator right after a phrase, in the languages that put it there ("haal me niet van de lijst")."""
        after = masked[end : end + _LOOK_CHARS].split("|", 1)[0].split()[:3]
        self.steps += len(after)
        # "schreibt mir nie wieder", "stuur me niet meer": "no more" is the opt-out itself
        return any(
            self.word(w).negator and (i + 1 == len(after) or after[i + 1] not in _AGAIN)
            for i, w in enumerate(after[:2])
        )

    def _sms_follows(self, masked: str, end: int) -> bool:
        after = masked[end : end + _LOOK_CHARS].split("|", 1)[0].split()
        return any(self.word(w).msg for w in after[:_SCOPE_LOOKAHEAD])

    def _clause_rules(self, masked: str) -> tuple[Verdict | None, int, Verdict | None]:
        """keyword / typo / strong / short readings of the masked text, where in flat, and the first negated one."""
        clauses = [c.split() for c in masked.split("|")]
        total = sum(len(c) for c in clauses)
        negated: Verdict | None = None
        strong: tuple[Verdict, int] | None = None
        short: tuple[Verdict, int] | None = None
        about_other: bool | None = None  # whether the text names an order or a purchase and no text message
        negations: dict[tuple[str, ...], bool] = {}
        base = -1
        for number, clause in enumerate(clauses):
            base += 1  # the "|" before this clause
            here = base
            base += len(clause)
            first = number == 0
            infos = list(map(self.word, clause))
            keyword: tuple[str, str] | None = None
            typo: tuple[str, str] | None = None
            whole = True
            for word, info in zip(clause, infos, strict=True):
                if info.strength is not None:
                    keyword = keyword or (word, info.language or "")
                elif info.typo_of is not None:
                    typo = typo or (word, self.word(info.typo_of).language or "")
                elif not info.companion:
                    whole = False
                    break  # the clause is not made of keywords and companions: its keyword is not needed
            if whole and (keyword is not None or (typo is not None and len(clause) <= _TYPO_CLAUSE_WORDS)):
                # "Non voglio disiscrivermi": a negator before the keyword negates the clause
                fired = keyword or typo
                at = next(i for i, w in enumerate(clause) if w == fired[0])  # type: ignore[index]
                if any(info.negator for info in infos[:at]):
                    negated = negated or Verdict(Outcome.FLAGGED, "negated", " ".join(clause), fired[1])  # type: ignore[index]
                    continue
                if about_other is None:
                    about_other = self._names_other_object([w for c in clauses for w in c])
                if about_other:  # "Отмените, пожалуйста, мой заказ": an order named in the next clause
                    negated = negated or Verdict(Outcome.FLAGGED, "ambiguous", " ".join(clause), fired[1])  # type: ignore[index]
                    continue
                rule = "keyword" if keyword is not None else "typo"
                return Verdict(Outcome.OPT_OUT, rule, " ".join(clause), fired[1]), here + at, None  # type: ignore[index]
            other_object: bool | None = None  # whether this clause names an order or a purchase and no text
            for i in compress(range(len(infos)), map(_STRENGTH, infos)):
                word, info = clause[i], infos[i]
                if info.strength == "weak":
                    continue
                if strong is not None:
                    break  # nothing later in this clause changes the verdict: a strong reading stands
                before = tuple(clause[max(0, i - 2 * _NEGATION_WINDOW) : i])
                is_negated = negations.get(before)
                if is_negated is None:  # the same words before it, the same answer (per call)
                    window = [w for w in before if not self.word(w).fill]
                    is_negated = negations[before] = any(self.word(w).negator for w in window[-_NEGATION_WINDOW:])
                if info.strength == "strong" and not is_negated and other_object is None:
                    other_object = any(x.obj for x in infos) and not any(x.msg for x in infos)
                if is_negated:
                    shown = " ".join(clause[max(0, i - 2) : i + 1])
                    negated = negated or Verdict(Outcome.FLAGGED, "negated", shown, info.language)
                elif info.strength == "strong" and other_object:
                    # "Is the opt-out for the extended warranty still available?": a purchase option
                    negated = negated or Verdict(Outcome.FLAGGED, "ambiguous", word, info.language)
                elif info.strength == "strong":
                    strong = strong or (Verdict(Outcome.OPT_OUT, "strong", word, info.language), here + i)
                elif total <= _SHORT_TEXT_WORDS and not self._has_other_object(clause, i):
                    shown = " ".join(w for w in clause if w != "_")
                    short = short or (Verdict(Outcome.OPT_OUT, "short", shown, info.language), here + i)
                elif first and i == 0 and not self._has_other_object(clause, i):
                    # "Stop svp je reçois trop de messages": the text opens with it
                    short = short or (Verdict(Outcome.OPT_OUT, "first", word, info.language), here + i)
        found = strong or short
        return (found[0], found[1], negated) if found else (None, 0, negated)

    def _about_other_object(self, masked: str, start: int, end: int) -> bool:
        """Whether the clause around a phrase names an order, a delivery or a purchase and no text."""
        clause = masked[max(0, start - _LOOK_CHARS) : start].rsplit("|", 1)[-1].split()
        clause += masked[start : end + _LOOK_CHARS].split("|", 1)[0].split()
        infos = [self.word(w) for w in clause]
        self.steps += len(infos)
        return any(i.obj for i in infos) and not any(i.msg for i in infos)

    def _names_other_object(self, clause: list[str]) -> bool:
        """Whether a clause names an order, a delivery or a purchase and no text."""
        infos = [self.word(w) for w in clause]
        return any(info.obj for info in infos) and not any(info.msg for info in infos)

    def _has_other_object(self, clause: list[str], i: int) -> bool:
        """Whether the clause names an object that is not the texts ("stop the delivery", "mijn bestelling stoppen")."""
        det, fill = self.lexicon.sets["det"], self.lexicon.sets["fill"]
        # "STOP order 7781", "stoppen Sie die Lieferung": an order, a delivery, a purchase named and no
        # text; or a determiner before a word that is not a companion ("stop the car"). Distinct
        # words and pairs only: a pasted text repeats them.
        words = list(filterfalse(fill.__contains__, clause))
        infos = [self.word(w) for w in set(words)]
        if any(info.obj for info in infos) and not any(info.msg for info in infos):
            return True
        return any(a in det and not self.word(b).companion for a, b in set(zip(words, words[1:])))

    def _loose_word(self, masked: str) -> tuple[str, str | None] | None:
        for word in masked.split():
            info = self.word(word)
            if info.strength in ("loose", "strong"):
                return word, info.language
        return None

    def _substring_verdict(self, normalized: str) -> Verdict:
        text = self._folded = fold_substring(normalized)
        self.steps += 13 * len(text)  # each alternation below scans the text once (the pairs twice)
        subs = self.lexicon.substrings
        if self._sub_senses is not None:
            # an opt-out that holds a whole other-sense phrase and more wins over it ("कैसे बंद होंगे"
            # holds "बंद होगा"); otherwise the other sense hides its words
            spans = [(m.start(), m.end()) for m in self._sub_senses.finditer(text)]
            if spans and self._sub_optout is not None:
                for found in self._sub_optout.finditer(text):
                    a, b = found.start(), found.end()
                    if all(e <= a or s >= b or (a <= s and e <= b and b - a > e - s) for s, e in spans):
                        if any(a <= s and e <= b for s, e in spans):
                            return Verdict(Outcome.OPT_OUT, "substring", found.group(), subs["optout"][found.group()])
            text = self._sub_senses.sub("_", text)
        veto = None
        if self._sub_keep is not None:
            found = self._sub_keep.search(text)
            if found:
                veto = Verdict(Outcome.FLAGGED, "veto", found.group(), subs["keep"][found.group()])
        found = self._sub_optout.search(text) if self._sub_optout is not None else None
        language = subs["optout"][found.group()] if found else None
        if found is None and self._sub_pairs is not None:
            found = self._sub_pairs.search(text)
            language = self._pair_language[found.lastgroup] if found and found.lastgroup else None
        if found is not None and self._sub_negafter is not None:
            negation = self._sub_negafter.search(text, found.end(), found.end() + _NEGAFTER_REACH + 8)
            if negation is not None and negation.start() - found.end() <= _NEGAFTER_REACH:
                return Verdict(Outcome.FLAGGED, "negated", found.group() + negation.group(), language)
        if found:
            hedge = self._sub_hedge.search(text) if self._sub_hedge is not None else None
            if veto is None and hedge is not None:  # "如果再涨价我就退订": hypothetical
                return Verdict(Outcome.FLAGGED, "hedged", hedge.group(), subs["hedge"][hedge.group()])
            # "只退订邮件": another channel; "怎么取消每月的咖啡订阅": a paid plan, an order, not the texts
            other = self._sub_chan.search(text) if self._sub_chan is not None else None
            if other is None and self._sub_obj is not None:
                other = self._sub_obj.search(text)
                if other is not None and self._sub_msg is not None and self._sub_msg.search(text):
                    other = None
            if veto is None and other is not None:
                return Verdict(Outcome.FLAGGED, "ambiguous", found.group() + " " + other.group(), language)
            return veto or Verdict(Outcome.OPT_OUT, "substring", found.group(), language)
        # "停止 thanks": politeness in a Latin-script language around a word of another script
        fill = self.lexicon.sets["fill"]
        bare = fold_substring(_LATIN_RUN.sub(lambda m: "" if m.group() in fill else m.group(), normalized))
        if self._sub_senses is not None:
            bare = self._sub_senses.sub("", bare)
        bare = self._sub_fill.sub("", bare) if self._sub_fill is not None else bare
        language = self._sub_alone.get(bare)
        if language is not None:
            return veto or Verdict(Outcome.OPT_OUT, "alone", bare, language)
        return veto or NOTHING


def _offsets(words: list[str]) -> list[int]:
    """Where each word starts in " ".join(words)."""
    return [0, *accumulate(map(_PLUS_ONE, map(len, words[:-1])))]


_PLUS_ONE = (1).__add__
_STRENGTH = attrgetter("strength")


class _WordCache(dict[str, WordFacts]):
    """Word facts by word; a missing word is computed (and stored) by the detector's _new_word."""

    __slots__ = ("compute",)

    def __init__(self, compute: Callable[[str], WordFacts]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, word: str) -> WordFacts:
        return self.compute(word)


_DETECTOR = Detector(load())


def detect(text: str) -> Verdict:
    """Whether one inbound text opts out, is flagged for a person to look at, or neither (its first MAX_CHARS read)."""
    text = text[:MAX_CHARS]
    normalized = normalize(text)
    if not normalized or not any(ch.isalnum() for ch in normalized):
        _DETECTOR.steps = len(text)
        return symbol_verdict(text)
    return detect_normalized(normalized, text)


def symbol_verdict(text: str) -> Verdict:
    """For a text without words: flagged when it is only stop signs or raised hands ("🛑", "✋✋"), else nothing."""
    bare = _SYMBOL_NOISE.sub("", text[:MAX_CHARS])
    if bare and all(ch in _STOP_SYMBOLS for ch in bare):
        return Verdict(Outcome.FLAGGED, "symbol", bare[:8], None)
    return NOTHING


def last_steps() -> int:
    """The work the last detection did (words, pattern attempts, typo cells, characters scanned): the cost bound's measure."""
    return _DETECTOR.steps


def detect_normalized(normalized: str, text: str | None = None) -> Verdict:
    """detect() for a text already passed through app.matching.normalize (the hot path); `text`, the
    text as sent when known, also gives its accents ("Dừng" is a keyword, "dung" is not) and its
    closing question mark, which the normaliser drops."""
    if text is not None:
        text = text[:MAX_CHARS]
        if len(text) <= _EXACT_CHARS and not text.isascii():
            key = exact_key(text)
            language = _DETECTOR.lexicon.exact.get(key)
            if language is not None:  # "Dừng": a keyword whose accents the normaliser would fold away
                _DETECTOR.steps = len(text)
                return Verdict(Outcome.OPT_OUT, "keyword", key, language)
    return _DETECTOR.detect(normalized, text is not None and "?" in text)


def only_politeness(words: tuple[str, ...]) -> bool:
    """Whether every word is politeness or filler ("svp", "please", "thanks", "ya") in some language."""
    fill = _DETECTOR.lexicon.sets["fill"]
    return all(w in fill for w in words)
