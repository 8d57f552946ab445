"""Read one inbound text as an opt-out, a flagged near-opt-out, or neither (pure, deterministic).

The rules, in the order a verdict's `rule` names them:

- `phrase`: a pattern of a language's lexicon ("remove me", "no more {msg}", "dejen de {send}");
- `keyword`: a clause made only of opt-out keywords and their companions ("Stop merci",
  "STOP SMS", "Nope. Remove.", "..., stop"); `typo`: the same with a misspelt keyword ("stpo");
- `strong`: a word that is an opt-out wherever it stands ("unsubscribe", "désabonner");
- `short`: a loose word ("stop") in a text of at most five words ("make it stop"); `first`: one
  that opens the text ("Stop svp je reçois trop de messages");
- `substring`/`alone`: the same for scripts without spaces between words (zh, ja, ko, ar, hi).

A reading that would be an opt-out but is negated ("don't stop the deals", "N'arrêtez pas"),
vetoed (a re-subscribe request, "keep the texts", another channel named: "unsubscribe from the
emails") or a loose word in a long text that no rule explains is **flagged**: it changes
nothing, and a person looks. Words in another sense ("bus stop", "end of the day", "cancel my
order") are masked before any rule runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import accumulate
from dataclasses import dataclass
from enum import StrEnum

from app.normalize import normalize
from app.optout.lexicon import Lexicon, fold_substring, load, split_elision


class Outcome(StrEnum):
    """What a text asks for, as far as consent goes."""

    OPT_OUT = "opt_out"  # honour it: the person revoked consent
    FLAGGED = "flagged"  # close to an opt-out but not honoured (negated, vetoed, ambiguous): a person should look
    NONE = "none"  # nothing to do with opting out


@dataclass(frozen=True)
class Verdict:
    """The detector's reading of one text, and why."""

    outcome: Outcome
    rule: str | None = None  # phrase|keyword|typo|strong|short|first|substring|alone; negated|veto|ambiguous
    words: str | None = None  # the words that fired, normalised
    language: str | None = None  # language of the lexicon entry that fired

    @property
    def why(self) -> str | None:
        """Short and human-readable: "phrase(fr): 'ne plus recevoir'"; None when no rule fired."""
        if self.rule is None:
            return None
        return f"{self.rule}({self.language}): '{self.words}'"


NOTHING = Verdict(Outcome.NONE)
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


class _Word:
    """What the lexicon knows about one processed word (cached per word)."""

    __slots__ = ("strength", "language", "companion", "negator", "msg", "typo_of", "patterns")

    def __init__(self, lexicon: Lexicon, typos: dict[str, str], anchors: dict[str, list[int]],
                 prefixes: dict[str, list[int]], prefix_lengths: tuple[int, ...], word: str) -> None:
        kw = lexicon.keywords.get(word)
        if kw is None:
            for length in range(len(word), 3, -1):
                kw = lexicon.keyword_prefixes.get(word[:length])
                if kw is not None:
                    break
        self.strength, self.language = kw if kw else (None, None)
        sets = lexicon.sets
        self.negator = word in sets["neg"]
        self.msg = word in sets["msg"]
        self.companion = kw is not None or any(word in sets[n] for n in ("fill", "msg", "me", "det"))
        self.typo_of = None if kw or self.companion else typos.get(word)
        ids = list(anchors.get(word, ()))
        for length in prefix_lengths:
            if length <= len(word):
                ids.extend(prefixes.get(word[:length], ()))
        self.patterns = tuple(sorted(set(ids)))


def _typo_variants(word: str) -> set[str]:
    """Misspellings one slip away: swapped neighbours, a doubled letter; longer words also lose, gain or change one."""
    out: set[str] = set()
    n = len(word)
    for i in range(n - 1):
        out.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
    for i in range(n):
        out.add(word[:i] + word[i] + word[i:])
    if n >= 6:
        out.update(word[:i] + word[i + 1 :] for i in range(n))
    if n >= 8:
        letters = "abcdefghijklmnopqrstuvwxyz"
        out.update(word[:i] + c + word[i + 1 :] for i in range(n) for c in letters)
        out.update(word[:i] + c + word[i:] for i in range(n + 1) for c in letters)
    out.discard(word)
    return out


class Detector:
    """The compiled lexicons and the rules that read a text with them."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon
        known = set(lexicon.keywords).union(*lexicon.sets.values())
        self.typos: dict[str, str] = {}
        for word, (strength, _) in lexicon.keywords.items():
            if strength != "weak" and len(word) >= 4 and word.isalpha():
                for variant in _typo_variants(word):
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
        self._words: dict[str, _Word] = {}
        self._tokens: dict[str, tuple[str, ...]] = {}
        subs = lexicon.substrings

        def alternation(section: str) -> re.Pattern[str] | None:
            entries = sorted(subs[section], key=len, reverse=True)
            return re.compile("|".join(map(re.escape, entries))) if entries else None

        self._sub_senses = alternation("senses")
        self._sub_keep = alternation("keep")
        self._sub_optout = alternation("optout")
        self._sub_fill = alternation("fill")
        self._sub_alone = subs["alone"]
        self._fill_text = re.compile("|".join(map(re.escape, sorted(lexicon.fill_text, key=len, reverse=True))))

    # -- words

    def word(self, word: str) -> _Word:
        """The cached lexicon facts about one processed word."""
        found = self._words.get(word)
        if found is None:
            if len(self._words) >= _CACHE_LIMIT:
                self._words.clear()
            found = _Word(self.lexicon, self.typos, self.anchors, self.prefixes, self.prefix_lengths, word)
            self._words[word] = found
        return found

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
                out.append(_RUN.sub(r"\1", part))
            found = tuple(out)
            self._tokens[raw] = found
        return found

    def clauses(self, normalized: str) -> list[list[str]]:
        """The text's clauses, each a list of processed words; "opt out" is one word."""
        if "#" in normalized:  # "wrong #": a number sign that numbers nothing is the word "number"
            normalized = _HASH.sub(" number ", normalized)
        if _SPACED.search(normalized):
            normalized = _SPACED.sub(lambda m: _SPACERS.sub("", m.group()), normalized)
        out: list[list[str]] = []
        words: list[str] = []
        for word, _ in _PIECE.findall(normalized):
            if not word:  # a clause ends here
                if words:
                    out.append(words)
                    words = []
                continue
            for token in self.tokens(word):
                if token == "out" and words and words[-1] == "opt":
                    words[-1] = "optout"
                else:
                    words.append(token)
        if words:
            out.append(words)
        return out

    # -- reading a text

    def detect(self, normalized: str) -> Verdict:
        """The verdict for a text already passed through app.matching.normalize."""
        if not normalized:
            return NOTHING
        other_script = not normalized.isascii() and _SUBSTRING_SCRIPT.search(normalized) is not None
        # "SAIR 谢谢": politeness in another script takes no part in the word rules.
        clauses = self.clauses(self._fill_text.sub(" ", normalized) if other_script else normalized)
        verdict = self._tokens_verdict(clauses) if clauses else NOTHING
        if verdict.outcome is not Outcome.OPT_OUT and other_script:
            by_substring = self._substring_verdict(normalized)
            if by_substring.outcome is Outcome.OPT_OUT or verdict.outcome is Outcome.NONE:
                return by_substring
        return verdict

    def _tokens_verdict(self, clauses: list[list[str]]) -> Verdict:
        words_of = self.word
        flat: list[str] = []  # the words, with "|" between clauses
        triggers: dict[int, list[int]] = {}  # pattern -> positions of its anchor words
        interesting = False
        for clause in clauses:
            if flat:
                flat.append("|")
            for word in clause:
                info = words_of(word)
                for index in info.patterns:
                    triggers.setdefault(index, []).append(len(flat))
                if info.strength is not None or info.typo_of is not None:
                    interesting = True
                flat.append(word)
        if not triggers and not interesting:
            return NOTHING
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
        negated: Verdict | None = None
        candidate: Verdict | None = None
        for index in by_section.get("phrases", ()):
            pattern = patterns[index]
            for _, found in self._matches(index, triggers[index], flat, masked, masked_offsets):
                words = found.group().strip()
                if self._negated_before(masked, found.start()) or any(
                    self.word(w).negator and w not in pattern.literals for w in words.split()
                ):
                    before = masked[: found.start()].rsplit("|", 1)[-1].split()[-_NEGATION_WINDOW:]
                    shown = " ".join([*before, words])
                    negated = negated or Verdict(Outcome.FLAGGED, "negated", shown, pattern.language)
                    continue
                candidate = Verdict(Outcome.OPT_OUT, "phrase", words, pattern.language)
                break
            if candidate:
                break
        if candidate is None and interesting:  # the clause rules need a keyword or a misspelt one
            candidate, clause_negated = self._clause_rules(masked)
            negated = negated or clause_negated
        if candidate is not None:
            return veto if veto is not None else candidate
        if negated is not None:
            return negated
        if veto is not None:
            return veto
        loose = self._loose_word(masked) if interesting else None
        if loose is not None:
            return Verdict(Outcome.FLAGGED, "ambiguous", loose[0], loose[1])
        return NOTHING

    def _matches(
        self, index: int, positions: list[int], flat: list[str], text: str, offsets: list[int]
    ) -> Iterator[tuple[int, re.Match[str]]]:
        """A pattern's matches, tried only at the word starts from which a match could reach an anchor word."""
        pattern = self.lexicon.patterns[index]
        tried: set[int] = set()
        for position in positions:
            for start in range(max(0, position - pattern.before), position + 1):
                if start in tried or flat[start] == "|":
                    continue
                tried.add(start)
                found = pattern.regex.match(text, offsets[start])
                if found is not None:
                    yield start, found

    def _negated_before(self, masked: str, start: int) -> bool:
        before = masked[:start].rsplit("|", 1)[-1].split()
        return any(self.word(w).negator for w in before[-_NEGATION_WINDOW:])

    def _sms_follows(self, masked: str, end: int) -> bool:
        after = masked[end:].split("|", 1)[0].split()
        return any(self.word(w).msg for w in after[:_SCOPE_LOOKAHEAD])

    def _clause_rules(self, masked: str) -> tuple[Verdict | None, Verdict | None]:
        """keyword / typo / strong / short readings of the masked text, and the first negated one."""
        clauses = [c.split() for c in masked.split("|")]
        total = sum(len(c) for c in clauses)
        negated: Verdict | None = None
        strong: Verdict | None = None
        short: Verdict | None = None
        for number, clause in enumerate(clauses):
            first = number == 0
            infos = [self.word(w) for w in clause]
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
            if whole and keyword is not None:
                return Verdict(Outcome.OPT_OUT, "keyword", " ".join(clause), keyword[1]), None
            if whole and typo is not None and len(clause) <= _TYPO_CLAUSE_WORDS:
                return Verdict(Outcome.OPT_OUT, "typo", " ".join(clause), typo[1]), None
            for i, (word, info) in enumerate(zip(clause, infos, strict=True)):
                if info.strength is None or info.strength == "weak":
                    continue
                is_negated = any(self.word(w).negator for w in clause[max(0, i - _NEGATION_WINDOW) : i])
                if is_negated:
                    shown = " ".join(clause[max(0, i - 2) : i + 1])
                    negated = negated or Verdict(Outcome.FLAGGED, "negated", shown, info.language)
                elif info.strength == "strong":
                    strong = strong or Verdict(Outcome.OPT_OUT, "strong", word, info.language)
                elif total <= _SHORT_TEXT_WORDS and not self._has_other_object(clause, i):
                    shown = " ".join(w for w in clause if w != "_")
                    short = short or Verdict(Outcome.OPT_OUT, "short", shown, info.language)
                elif first and i == 0 and not self._has_other_object(clause, i):
                    # "Stop svp je reçois trop de messages": the text opens with it
                    short = short or Verdict(Outcome.OPT_OUT, "first", word, info.language)
        return strong or short, negated

    def _has_other_object(self, clause: list[str], i: int) -> bool:
        """Whether the clause names an object that is not the texts ("stop the delivery", "mijn bestelling stoppen")."""
        det = self.lexicon.sets["det"]
        words = [w for w in clause if w not in self.lexicon.sets["fill"]]
        return any(a in det and not self.word(b).companion for a, b in zip(words, words[1:], strict=False))

    def _loose_word(self, masked: str) -> tuple[str, str | None] | None:
        for word in masked.split():
            info = self.word(word)
            if info.strength in ("loose", "strong"):
                return word, info.language
        return None

    def _substring_verdict(self, normalized: str) -> Verdict:
        text = fold_substring(normalized)
        subs = self.lexicon.substrings
        if self._sub_senses is not None:
            text = self._sub_senses.sub("_", text)
        veto = None
        if self._sub_keep is not None:
            found = self._sub_keep.search(text)
            if found:
                veto = Verdict(Outcome.FLAGGED, "veto", found.group(), subs["keep"][found.group()])
        if self._sub_optout is not None:
            found = self._sub_optout.search(text)
            if found:
                return veto or Verdict(Outcome.OPT_OUT, "substring", found.group(), subs["optout"][found.group()])
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
    return [0, *accumulate(len(word) + 1 for word in words[:-1])]


_DETECTOR = Detector(load())


def detect(text: str) -> Verdict:
    """Whether one inbound text opts out, is flagged for a person to look at, or neither."""
    return _DETECTOR.detect(normalize(text))


def detect_normalized(normalized: str) -> Verdict:
    """detect() for a text already passed through app.matching.normalize (the hot path)."""
    return _DETECTOR.detect(normalized)


def only_politeness(words: tuple[str, ...]) -> bool:
    """Whether every word is politeness or filler ("svp", "please", "thanks", "ya") in some language."""
    fill = _DETECTOR.lexicon.sets["fill"]
    return all(w in fill for w in words)
