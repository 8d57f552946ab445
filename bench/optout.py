"""`python -m bench --only optout`: the opt-out detector on the labelled dev corpus, beside today's rule.

One JSON line per language (and per group of the languages with few lines): recall on the
texts labelled `optout`, caught (honoured or flagged for review) and the false-positive rate
on those labelled `keep`, as `SenderRules.match` reads them on the repo's keywords.yaml sender
+15005550006 (a text is an opt-out when it matches as a stop, caught when it is that or
flagged). Then the same per language group on our own phenomenon cases
(tests/data/optout_cases.tsv), for the cases in view while the rules were written (`train`)
and for those held out (`held`), each with the detector's cost in µs per text. Then the
per-text matching cost of the new matcher and of the baseline, a faithful copy of the rule
optline had before the detector (below), on the same texts and on plain keywords (the fast
path), and the detector's counted work and time on pathological texts (repetitions, nested
quotes, mixed scripts, 60 KB).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from app.keywords import Kind, SenderRules, load_rules
from app.matching import _STOP, BUILTIN_STOP, KeywordEntry, _Resolved, keyword_words
from app.optout import detect, last_steps

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "optout_dev.tsv"
CASES = REPO / "tests" / "data" / "optout_cases.tsv"
BLIND = REPO / "tests" / "data" / "optout_blind.tsv"
CASE_GROUPS = {
    "en": ("en",), "fr": ("fr",), "es": ("es",), "de+pt+it+nl": ("de", "pt", "it", "nl"),
    "zh+ja+ko+ar+hi": ("zh", "ja", "ko", "ar", "hi"), "vi+tl+ru+ht": ("vi", "tl", "ru", "ht"),
}  # fmt: skip
KEYWORDS = REPO / "keywords.yaml"
SENDER = "+15005550006"
GROUPS = {"de+pt+it+nl": ("de", "pt", "it", "nl"), "zh+ja+ko+ar+hi": ("zh", "ja", "ko", "ar", "hi")}
PLAIN_KEYWORDS = ("STOP", "YES", "JOIN", "stop.", "Yes!", "HELP", "deals", "START")

# --- the baseline: optline's opt-out rule before the detector, copied as it was -------------

OLD_BUILTIN_STOP: tuple[str, ...] = (
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT",
)  # fmt: skip
_SHORT_TEXT_WORDS = 6
_INTENT_WORDS = frozenset({"stop", "stopall", "unsubscribe", "optout", "revoke"})
_INTENT_PAIRS = frozenset({("opt", "out")})
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


class BaselineSenderRules(SenderRules):
    """SenderRules with the opt-out rule of before the detector (stop prefix, short text, phrases)."""

    __slots__ = ()

    def _resolve(self, words: tuple[str, ...], normalized: str | None = None, text: str | None = None) -> _Resolved:
        if not words:
            return (None, None, None, None, False, False, None)
        exact = self._exact
        best = exact.get(words)
        program = best[0].program if best is not None else None
        if best is None or best[1]:
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
                    return (_STOP, hit[0].keyword, hit[0].language, None, True, False, None)
                return (_STOP, " ".join(found).upper(), None, None, True, False, None)
        if best is None:
            return (None, None, None, None, False, False, None)
        entry = best[0]
        return (entry.kind, entry.keyword, entry.language, program, False, False, None)


def _own_stop_words(path: Path) -> set[str]:
    """The stop keywords keywords.yaml itself names (the baseline keeps them, and drops the newer floor)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    own: set[str] = set()
    for brand in (data.get("brands") or {}).values():
        for program in (brand.get("programs") or {}).values():
            stop = ((program.get("keywords") or {}).get("stop")) or []
            for words in stop.values() if isinstance(stop, dict) else [stop]:
                own.update(str(w) for w in words)
    return own


def senders() -> tuple[SenderRules, SenderRules]:
    """The new matcher and the baseline for the repo's keywords.yaml sender."""
    sender = load_rules(KEYWORDS).for_sender(SENDER)
    assert sender is not None
    newer = set(BUILTIN_STOP) - set(OLD_BUILTIN_STOP) - _own_stop_words(KEYWORDS)
    entries: list[KeywordEntry] = []
    for kind in Kind:
        for program in sender.programs:
            for written in program.keywords[str(kind)]:
                if kind is Kind.STOP and written in newer:
                    continue
                program_key = program.key if kind is Kind.JOIN else None
                entries.append(KeywordEntry(kind, keyword_words(written), written, None, program_key))
    return sender, BaselineSenderRules(sender.brand, sender.programs, entries)


def _figures(sender: SenderRules, rows: list[dict[str, str]]) -> dict[str, Any]:
    optouts = [r for r in rows if r["label"] == "optout"]
    keeps = [r for r in rows if r["label"] == "keep"]
    honoured = sum(1 for r in optouts if sender.match(r["text"]).kind is Kind.STOP)
    caught = sum(1 for r in optouts if (m := sender.match(r["text"])).kind is Kind.STOP or m.flagged)
    wrong = sum(1 for r in keeps if sender.match(r["text"]).kind is Kind.STOP)
    flagged = sum(1 for r in rows if sender.match(r["text"]).flagged)
    flagged_keeps = sum(1 for r in keeps if sender.match(r["text"]).flagged)
    return {
        "recall": round(honoured / len(optouts), 3) if optouts else None,
        "caught": round(caught / len(optouts), 3) if optouts else None,
        "false_positives": round(wrong / len(keeps), 3) if keeps else None,
        "flagged": flagged,
        # the queue a person reads: the share of other replies it holds
        "flagged_share_of_keep": round(flagged_keeps / len(keeps), 3) if keeps else None,
    }


def _detector_us(texts: list[str], rounds: int = 7) -> float:
    """The detector alone (normalising included), best of several rounds, CPU µs per text, warm caches."""
    for text in texts:
        detect(text)
    best = float("inf")
    repeat = max(1, 1000 // max(1, len(texts)))
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            for text in texts:
                detect(text)
        best = min(best, (time.process_time() - started) / (repeat * len(texts)))
    return round(best * 1e6, 1)


def _pathological() -> dict[str, str]:
    """Texts built to be expensive: the detector reads at most MAX_CHARS of them."""
    mixed = "SТОР 退订 не пишите dung gui tigil sispann if never mind don't stop unsbsucribe "
    return {
        "repeated_stop": "stop don't " * 150,
        "nested_quotes": "\"«(" * 500 + "stop" + ")»\"" * 500,
        "mixed_scripts": mixed * 25,
        "long_words": " ".join(f"unsub{i:05d}scribe" for i in range(110)),
        "60kb": ("please stop texting me, wrong number! " * 1600)[:60_000],
    }


def _per_text_us(sender: SenderRules, texts: Iterable[str], rounds: int = 15) -> float:
    """The best of several rounds over the texts, per text, in CPU time: on a shared machine the
    wall clock also counts the time other processes hold the CPU; the minimum is the cost."""
    texts = list(texts)
    match = sender.match
    for text in texts:  # warm the caches, as a running server has
        match(text)
    best = float("inf")
    repeat = max(1, 2000 // len(texts))
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            for text in texts:
                match(text)
        best = min(best, (time.process_time() - started) / (repeat * len(texts)))
    return round(best * 1e6, 2)


def run() -> None:
    """Print the corpus figures per language and group, then the per-text cost, one JSON line each."""
    with open(CORPUS, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    new, old = senders()
    languages = list(dict.fromkeys(r["lang"] for r in rows))
    scopes = [(lang, (lang,)) for lang in languages] + list(GROUPS.items()) + [("all", tuple(languages))]
    for name, members in scopes:
        subset = [r for r in rows if r["lang"] in members]
        figures = _figures(new, subset)
        baseline = _figures(old, subset)
        print(json.dumps({
            "figure": "optout", "language": name, "texts": len(subset),
            "optout": sum(r["label"] == "optout" for r in subset), "keep": sum(r["label"] == "keep" for r in subset),
            **figures, "baseline_recall": baseline["recall"], "baseline_false_positives": baseline["false_positives"],
        }), flush=True)  # fmt: skip
    with open(CASES, encoding="utf-8", newline="") as fh:
        cases = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    # held1-5 were judged once each before the rules of issue 21's second round; held6 was written
    # before that round, held7 and held8 during it, held9 before the third (their first runs are in
    # docs/optout.md)
    splits = {
        "train": ("train",), "held1-5": tuple(f"held{n}" for n in range(1, 6)), "held6": ("held6",),
        "held7": ("held7",), "held8": ("held8",), "held9": ("held9",),
    }  # fmt: skip
    for split, members in splits.items():
        chosen = [r for r in cases if r["split"] in members]
        for name, members in [*CASE_GROUPS.items(), ("all", tuple(lang for g in CASE_GROUPS.values() for lang in g))]:
            subset = [r for r in chosen if r["lang"] in members]
            print(json.dumps({
                "figure": "optout_cases", "split": split, "group": name, "texts": len(subset),
                "optout": sum(r["label"] == "optout" for r in subset), "keep": sum(r["label"] == "keep" for r in subset),
                **_figures(new, subset), "detector_us_per_text": _detector_us([r["text"] for r in subset]),
            }), flush=True)  # fmt: skip
    # A corpus written blind (by an author who never saw the rules, their cases or the dev corpus),
    # in the 16 languages, 2026-12-08: never used to write or correct a rule, only to measure.
    with open(BLIND, encoding="utf-8", newline="") as fh:
        blind = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    for name, members in [*CASE_GROUPS.items(), ("all", tuple(lang for g in CASE_GROUPS.values() for lang in g))]:
        subset = [r for r in blind if r["lang"] in members]
        print(json.dumps({
            "figure": "optout_blind", "group": name, "texts": len(subset),
            "optout": sum(r["label"] == "optout" for r in subset), "keep": sum(r["label"] == "keep" for r in subset),
            **_figures(new, subset),
        }), flush=True)  # fmt: skip
    for name, text in _pathological().items():
        verdict = detect(text)
        print(json.dumps({
            "figure": "optout_pathological", "text": name, "chars": len(text), "steps": last_steps(),
            "detector_us": _detector_us([text], rounds=3), "outcome": str(verdict.outcome),
        }), flush=True)  # fmt: skip
    for name, texts in (("dev_corpus", [r["text"] for r in rows]), ("plain_keywords", list(PLAIN_KEYWORDS))):
        now, before = _per_text_us(new, texts), _per_text_us(old, texts)
        print(json.dumps({
            "figure": "optout_match_cost", "texts": name, "count": len(texts), "per_text_us": now,
            "baseline_per_text_us": before, "ratio": round(now / before, 2),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    run()
