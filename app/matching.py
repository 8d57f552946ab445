"""Matching inbound texts against one sender's keywords (pure); the normaliser is app.normalize.

`app.keywords` loads keywords.yaml and builds one `SenderRules` per receiving number or
Messaging Service; everything here runs on the webhook hot path, so the tables are built
once at load and `SenderRules.match` is a normalise, one regex scan and a few dict lookups
for a keyword; any other text goes to the opt-out detector (app.optout).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from app.normalize import _WORD, normalize, split_words
from app.optout import Outcome, detect_normalized, symbol_verdict
from app.optout.detector import only_politeness

if TYPE_CHECKING:
    from app.brands import Brand, Program


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

# The floor every sender answers to, whatever keywords.yaml says: exact stop words on every
# number. Each group names the list it comes from; a word that normalises like one already
# listed (OPT-OUT = OPT OUT, ARRÊT = ARRET) is named in a comment, not twice.
BUILTIN_STOP: tuple[str, ...] = (
    # Twilio's default opt-out keywords, the CTIA handbook and the FCC's 2024 revocation rule
    # (47 CFR 64.1200(a)(10)): https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",  # also OPT-OUT (AWS)
    # Telnyx's defaults add the two-word form:
    # https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out
    "STOP ALL",
    # AWS End User Messaging SMS required opt-out keywords add REMOVE, TD and ARRET (Canada):
    # https://docs.aws.amazon.com/sms-voice/latest/userguide/keywords-required.html
    "REMOVE",
    "TD",
    "ARRET",  # also ARRÊT
    # Nordic and German carriers' STOPP (Norway, Sweden, Germany).
    "STOPP",
    # Spanish-language programs (US Hispanic, Latin America, Spain): BAJA, ALTO, PARAR.
    "BAJA",
    "ALTO",
    "PARAR",
    # Brazil's SAIR (operators' and MEF Brasil's opt-out word).
    "SAIR",
    # China: MIIT rules for marketing SMS, "回复TD退订" (reply TD to unsubscribe).
    "退订",
    # Japan: 特定電子メール法 refusals, conventionally 配信停止.
    "配信停止",
    # Korea: 정보통신망법 art. 50 free refusal, 수신거부.
    "수신거부",
)
BUILTIN_HELP: tuple[str, ...] = ("HELP", "INFO")
BUILTIN_START: tuple[str, ...] = ("START", "UNSTOP")
BUILTIN_CONFIRM: tuple[str, ...] = ("YES", "Y")

def keyword_words(keyword: str) -> tuple[str, ...]:
    """The word sequence a keyword matches, normalised exactly as inbound texts are."""
    return split_words(normalize(keyword))


def _stop_keyword_in(
    words: tuple[str, ...], stop_words: dict[tuple[str, ...], str], lengths: tuple[int, ...]
) -> tuple[str, ...] | None:
    """The first stop keyword (longest first) found among a text's words, else None."""
    n = len(words)
    for length in lengths:
        for i in range(n - length + 1):
            if words[i : i + length] in stop_words:
                return words[i : i + length]
    return None


# A brand's own stop keyword (keywords.yaml) with only politeness around it is a stop too
# ("BASTA ya", "ENOUGH please"): the detector's lexicons cannot know every brand's words.
def _keyword_with_fillers(
    words: tuple[str, ...], stop_words: dict[tuple[str, ...], str], lengths: tuple[int, ...]
) -> tuple[str, ...] | None:
    """A stop keyword that begins or ends the text, everything else politeness ("arret svp"), else None."""
    n = len(words)
    for length in lengths:
        if length < n:
            if words[:length] in stop_words and only_politeness(words[length:]):
                return words[:length]
            if words[-length:] in stop_words and only_politeness(words[:-length]):
                return words[-length:]
    return None


def is_opt_out_intent(text: str, stop_keywords: Iterable[str] = BUILTIN_STOP) -> bool:
    """Whether a text revokes consent: a stop keyword (alone or with politeness around it), or a detected opt-out.

    The detector (app.optout) reads paraphrases, typos, spaced letters, wrong-number and
    never-signed-up replies in sixteen languages, and refuses negated uses and other senses
    ("don't stop the deals", "bus stop", "cancel my order"); see app/optout/detector.py.
    """
    normalized = normalize(text)
    words = split_words(normalized)
    stops = {w: k for k in stop_keywords if (w := keyword_words(k))}
    lengths = tuple(sorted({len(w) for w in stops}, reverse=True))
    if words in stops or _keyword_with_fillers(words, stops, lengths) is not None:
        return True
    return detect_normalized(normalized).outcome is Outcome.OPT_OUT


@dataclass(frozen=True)
class Match:
    """How one inbound text reads on one sender."""

    kind: Kind | None  # None = unmatched
    keyword: str | None  # the configured keyword as written ("OPT OUT"); for detected stops the stop word or phrase
    language: str | None  # language of the keyword list that matched; None for language-less lists
    program: str | None  # program key this match is scoped to; None = the whole sender
    normalized: str  # the normalised text
    by_intent: bool = False  # a stop found by the opt-out detector, not an exact keyword
    flagged: bool = False  # close to an opt-out but not honoured (negated, vetoed, ambiguous): a person should look
    why: str | None = None  # the rule and words that decided, human-readable: "phrase(fr): 'ne plus recevoir'"


def _match(
    kind: Kind | None,
    keyword: str | None,
    language: str | None,
    program: str | None,
    normalized: str,
    by_intent: bool = False,
    flagged: bool = False,
    why: str | None = None,
) -> Match:
    # A frozen dataclass's __init__ costs ~2 µs (object.__setattr__ per field); on the
    # webhook hot path we fill the instance dict directly. Same object, same equality.
    m = object.__new__(Match)
    m.__dict__.update(
        kind=kind, keyword=keyword, language=language, program=program, normalized=normalized, by_intent=by_intent,
        flagged=flagged, why=why,
    )  # fmt: skip
    return m


# kind, keyword, language, program, by_intent, flagged, why
_Resolved = tuple[Kind | None, str | None, str | None, str | None, bool, bool, str | None]
_UNMATCHED: _Resolved = (None, None, None, None, False, False, None)


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
                # YES from the language-less default list and YES under `en:`, ARRET from the
                # floor and ARRÊT under `fr:`: the reply should still know the person wrote
                # French, and the record shows the brand's own spelling.
                exact[entry.words] = entry._replace(program=current.program)
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
        words = tuple(_WORD.findall(normalized))
        found = self._match_words(normalized, words, text)
        if not words:  # "🛑", "✋": a stop sign alone is flagged for a person, not honoured
            symbol = symbol_verdict(text)
            if symbol.rule is not None:
                found = _match(None, None, None, None, normalized, flagged=True, why=symbol.why)
        if not opt_out_type:
            return found
        # Twilio Advanced Opt-Out has already acted on its own keyword lists; the state we
        # keep must agree with what the carrier and Twilio now believe.
        kind = opt_out_type.strip().upper()
        why = f"provider: OptOutType {kind}"
        if kind == "STOP" and found.kind is not _STOP:
            return _match(_STOP, "STOP", None, None, normalized, why=why)
        if kind == "HELP" and found.kind is not _HELP:
            return _match(_HELP, "HELP", None, None, normalized, why=why)
        if kind == "START" and found.kind is not _CONFIRM and found.kind is not _JOIN and found.kind is not _START:
            return _match(_START, "START", None, None, normalized, why=why)
        return found

    def _match_words(self, normalized: str, words: tuple[str, ...], text: str | None = None) -> Match:
        resolved = self._resolved.get(words)
        if resolved is None:
            resolved = self._resolve(words, normalized, text)
        return _match(
            resolved[0], resolved[1], resolved[2], resolved[3], normalized, resolved[4], resolved[5], resolved[6]
        )

    def _resolve(self, words: tuple[str, ...], normalized: str | None = None, text: str | None = None) -> _Resolved:
        """kind, keyword, language, program, by_intent, flagged, why for a text's words (and its punctuation)."""
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
        flagged, why = False, None
        if best is None or best[1]:
            stops, lengths = self._stop_prefixes, self._stop_lengths
            own = _keyword_with_fillers(words, stops, lengths)
            if own is not None:
                hit = exact[own][0]
                return (_STOP, hit.keyword, hit.language, None, True, False, f"keyword: '{hit.keyword}' + politeness")
            # the text as sent, when known: its accents ("Dừng") and a closing "?" the normaliser drops
            verdict = detect_normalized(normalized if normalized is not None else " ".join(words), text)
            if verdict.outcome is Outcome.OPT_OUT:
                # Report the sender's own stop keyword when the text holds one ("please stop" -> STOP).
                found = _stop_keyword_in(words, stops, lengths)
                if found is not None:
                    hit = exact[found][0]
                    return (_STOP, hit.keyword, hit.language, None, True, False, verdict.why)
                return (_STOP, (verdict.words or "").upper(), None, None, True, False, verdict.why)
            flagged, why = verdict.outcome is Outcome.FLAGGED, verdict.why
        if best is None:
            return (None, None, None, None, False, flagged, why)
        entry = best[0]
        if why is None and not best[1]:
            why = f"keyword: '{entry.keyword}'"
        return (entry.kind, entry.keyword, entry.language, program, False, flagged, why)
