"""The opt-out detector (app.optout): floors on the labelled dev corpus in every language, our own
cases for each phenomenon, and properties that hold for any opt-out."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keywords import Kind, Rules, SenderRules, load_rules
from app.optout import MAX_CHARS, Outcome, Verdict, detect, last_steps
from app.optout.lexicon import LANGUAGES

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
RECALL_FLOOR = 0.97
FALSE_POSITIVE_CEILING = 0.03


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


# The labelled dev corpus (222 real-world replies, 12 languages), copied from the project's
# shared data; the hidden corpus that judges the detector shares no text with it.
DEV = _rows("optout_dev.tsv")
# Our own cases, one or more a phenomenon and language, none taken from the dev corpus.
OWN = _rows("optout_own.tsv")
# Our own hard cases for the phenomena of issue 21 (consent and statute wording, slang, questions,
# split words, symbols, far typos, terse wrong numbers, changed hands, look-alikes; negation,
# second thoughts, hypotheticals, other objects) in all sixteen languages. `split` says how each
# was used: `train` cases were in view while the rules were written; `held1` to `held9` were
# written and set aside, judged once by the rules of the day (first-run figures in
# docs/optout.md), and only then used to correct the rules. Every case is now checked one by one,
# and the held sets also by figures per language group.
CASES = _rows("optout_cases.tsv")
HELD = [r for r in CASES if r["split"].startswith("held")]
# Known misses, each a limit we accept: a leading "@" is punctuation to the normaliser (it cannot
# tell "@rrêt" from a mention, and reading "@stop" as "astop" would lose a plain STOP).
# "not dave" and "Wrong Tom." are flagged, not honoured: "not" or "wrong" and one word is as often
# "not now" or "wrong size".
KNOWN_MISSES = {"@rrêt", "not dave", "Wrong Tom."}
# The dev corpus is in the first twelve languages; vi, tl, ru and ht have our own cases only.
DEV_LANGUAGES = LANGUAGES[:12]
NEW_LANGUAGES = ("vi", "tl", "ru", "ht")
CAUGHT_FLOOR = 0.99
HELD_FALSE_POSITIVE_CEILING = 0.02
# Never honoured: what a person must decide (a flag is fine, an opt-out is not).
NOT_HONOURED = ("negation", "second-thoughts", "counterfactual", "status", "purchase", "delivery", "order")


def _figures(rows: list[dict[str, str]]) -> tuple[float, float, list[str]]:
    """Recall on opt-outs, false-positive rate on keeps, and the texts that missed."""
    optouts = [r for r in rows if r["label"] == "optout"]
    keeps = [r for r in rows if r["label"] == "keep"]
    missed = [r["text"] for r in optouts if detect(r["text"]).outcome is not Outcome.OPT_OUT]
    wrong = [r["text"] for r in keeps if detect(r["text"]).outcome is Outcome.OPT_OUT]
    recall = 1 - len(missed) / len(optouts) if optouts else 1.0
    fp = len(wrong) / len(keeps) if keeps else 0.0
    return recall, fp, missed + wrong


# --- the dev corpus: floors per language -------------------------------------------------
# Every language is held to the floor on its own. For the languages with only 2 to 8 lines
# (de pt it nl: 8; zh ja ko ar hi: 2) the floor means "no miss and no false positive at all";
# the groups below are the same figures pooled, so a reader sees a rate over more than a few lines.
GROUPS = {
    "en": ("en",),
    "fr": ("fr",),
    "es": ("es",),
    "de+pt+it+nl": ("de", "pt", "it", "nl"),
    "zh+ja+ko+ar+hi": ("zh", "ja", "ko", "ar", "hi"),
}
NEW_GROUPS = {**GROUPS, "vi+tl+ru+ht": NEW_LANGUAGES}


@pytest.mark.parametrize("language", DEV_LANGUAGES)
def test_dev_corpus_floor_per_language(language: str) -> None:
    rows = [r for r in DEV if r["lang"] == language]
    assert rows, f"no dev lines for {language}"
    recall, fp, wrong = _figures(rows)
    assert recall >= RECALL_FLOOR and fp <= FALSE_POSITIVE_CEILING, (recall, fp, wrong)


@pytest.mark.parametrize("group", GROUPS)
def test_dev_corpus_floor_per_group(group: str) -> None:
    recall, fp, wrong = _figures([r for r in DEV if r["lang"] in GROUPS[group]])
    assert recall >= RECALL_FLOOR and fp <= FALSE_POSITIVE_CEILING, (recall, fp, wrong)


def test_dev_corpus_is_what_we_think() -> None:
    assert len(DEV) == 222
    assert {r["lang"] for r in DEV} == set(DEV_LANGUAGES)
    assert {r["label"] for r in DEV} == {"optout", "keep"}
    assert not {r["text"] for r in DEV} & {r["text"] for r in OWN + CASES}, "our own cases must not copy the dev corpus"


# --- our own cases, per phenomenon and language ---------------------------------------------


@pytest.mark.parametrize(
    "row", OWN, ids=[f"{r['lang']}-{r['label']}-{r['phenomenon']}-{i}" for i, r in enumerate(OWN)]
)
def test_own_cases(row: dict[str, str]) -> None:
    verdict = detect(row["text"])
    if row["label"] == "optout":
        assert verdict.outcome is Outcome.OPT_OUT, verdict
        assert verdict.rule and verdict.words and verdict.language in LANGUAGES
    else:
        assert verdict.outcome is not Outcome.OPT_OUT, verdict
        if row["phenomenon"] in ("negation", "re-subscribe"):
            # close to an opt-out: a person should look
            assert verdict.outcome is Outcome.FLAGGED, verdict


def test_own_cases_cover_every_language_both_ways() -> None:
    for language in LANGUAGES:
        labels = {r["label"] for r in OWN + CASES if r["lang"] == language}
        assert labels == {"optout", "keep"}, language


@pytest.mark.parametrize("language", NEW_LANGUAGES)
def test_each_new_language_has_thirty_cases(language: str) -> None:
    assert len([r for r in CASES if r["lang"] == language]) >= 30


@pytest.mark.parametrize(
    "row", CASES, ids=[f"{r['lang']}-{r['label']}-{r['phenomenon']}-{r['split']}-{i}" for i, r in enumerate(CASES)]
)
def test_phenomenon_cases(row: dict[str, str]) -> None:
    verdict = detect(row["text"])
    if row["text"] in KNOWN_MISSES:
        assert verdict.outcome is not Outcome.OPT_OUT, "a known miss is caught now: drop it from KNOWN_MISSES"
    elif row["label"] == "optout":
        assert verdict.outcome is Outcome.OPT_OUT, verdict
        assert verdict.rule and verdict.words and verdict.language in LANGUAGES
    else:
        assert verdict.outcome is not Outcome.OPT_OUT, verdict


@pytest.mark.parametrize("group", NEW_GROUPS)
def test_held_out_cases_per_group(group: str) -> None:
    """The held-out sets, pooled: recall, caught (honoured or flagged), false positives per language group."""
    rows = [r for r in HELD if r["lang"] in NEW_GROUPS[group]]
    optouts = [r["text"] for r in rows if r["label"] == "optout"]
    keeps = [r["text"] for r in rows if r["label"] == "keep"]
    assert optouts and keeps
    missed = [t for t in optouts if detect(t).outcome is not Outcome.OPT_OUT]
    uncaught = [t for t in optouts if detect(t).outcome is Outcome.NONE]
    wrong = [t for t in keeps if detect(t).outcome is Outcome.OPT_OUT]
    assert 1 - len(missed) / len(optouts) >= RECALL_FLOOR, missed
    assert 1 - len(uncaught) / len(optouts) >= CAUGHT_FLOOR, uncaught
    assert len(wrong) / len(keeps) <= HELD_FALSE_POSITIVE_CEILING, wrong


def test_what_a_person_must_decide_is_never_honoured() -> None:
    rows = [r for r in CASES if r["label"] == "keep" and r["phenomenon"] in NOT_HONOURED]
    assert len(rows) > 40
    honoured = [r["text"] for r in rows if detect(r["text"]).outcome is Outcome.OPT_OUT]
    assert not honoured


# (text, outcome, rule, language): why a verdict is what it is
WHY_CASES = [
    ("Je souhaite ne plus recevoir de SMS", Outcome.OPT_OUT, "phrase", "fr"),
    ("STOP", Outcome.OPT_OUT, "keyword", "en"),
    ("stop merci", Outcome.OPT_OUT, "keyword", "en"),
    ("stpo", Outcome.OPT_OUT, "typo", "en"),
    ("S T 0 P", Outcome.OPT_OUT, "keyword", "en"),
    ("s.t.o.p", Outcome.OPT_OUT, "keyword", "en"),
    ("STOOOOOOP", Outcome.OPT_OUT, "keyword", "en"),
    ("how do I unsubscribe from this", Outcome.OPT_OUT, "phrase", "en"),
    ("make it stop", Outcome.OPT_OUT, "phrase", "en"),
    ("why wont it stop", Outcome.FLAGGED, "negated", "en"),
    ("请退订", Outcome.OPT_OUT, "substring", "zh"),
    ("إلغاء", Outcome.OPT_OUT, "alone", "ar"),
    ("don't stop the deals!!", Outcome.FLAGGED, "negated", "en"),
    ("N'arrêtez pas les promos", Outcome.FLAGGED, "negated", "fr"),
    ("Niet afmelden aub", Outcome.FLAGGED, "negated", "nl"),
    ("I unsubscribed by mistake, re-add me", Outcome.FLAGGED, "veto", "en"),
    ("unsubscribe me from the emails please", Outcome.FLAGGED, "veto", "en"),
    ("unsubscribe me from emails and texts", Outcome.OPT_OUT, "strong", "en"),
    ("I would stop at nothing to get these shoes honestly they are great", Outcome.FLAGGED, "hedged", "en"),
    ("we had to stop because the weather was bad all week long", Outcome.FLAGGED, "ambiguous", "en"),
    ("end of the day works for pickup", Outcome.NONE, None, None),
    ("the bus stop by your store", Outcome.NONE, None, None),
    ("cancel my order", Outcome.NONE, None, None),
    # look-alikes: Cyrillic letters, regional indicators, enclosed letters, far misspellings
    ("SТОР", Outcome.OPT_OUT, "keyword", "en"),
    ("\U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5", Outcome.OPT_OUT, "keyword", "en"),
    ("\U0001f162\U0001f163\U0001f15e\U0001f15f", Outcome.OPT_OUT, "keyword", "en"),
    ("un subscribe", Outcome.OPT_OUT, "keyword", "en"),
    ("unsub$cribe me", Outcome.OPT_OUT, "keyword", "en"),
    ("unsbsucribe", Outcome.OPT_OUT, "typo", "en"),
    # second thoughts and hypotheticals are flagged, never honoured
    ("Stop! Oh wait, never mind", Outcome.FLAGGED, "hedged", "en"),
    ("if the prices keep going up i will unsubscribe", Outcome.FLAGGED, "hedged", "en"),
    # "don't stop sending": a negated stop verb is a double negative, in any language
    ("Не прекращайте присылать скидки", Outcome.FLAGGED, "veto", "ru"),
    ("Niet stoppen met sturen", Outcome.FLAGGED, "negated", "nl"),
    ("No dejen de mandar ofertas", Outcome.FLAGGED, "veto", "es"),
    # the wide net: opt-out vocabulary that no rule honours goes to a person
    ("my lawyer says this breaks the TCPA", Outcome.FLAGGED, "net", "en"),
    ("who's this?", Outcome.FLAGGED, "net", "en"),
    # small capitals, a star for a vowel, "-in'" for "-ing"
    ("\u1d1c\u0274\ua731\u1d1c\u0299\ua731\u1d04\u0280\u026a\u0299\u1d07", Outcome.OPT_OUT, "keyword", "en"),
    ("unsubscr*be", Outcome.OPT_OUT, "typo", "en"),
    ("quit spammin me", Outcome.OPT_OUT, "phrase", "en"),
    # a question about what STOP does, delight, an order named in another clause, a negation after the verb
    ("when i text stop do i lose my rewards?", Outcome.FLAGGED, "hedged", "en"),
    ("Stop!! these boots are gorgeous", Outcome.FLAGGED, "hedged", "en"),
    ("Annulez. Ma commande est en double", Outcome.FLAGGED, "ambiguous", "fr"),
    ("\u914d\u4fe1\u89e3\u9664\u306f\u3057\u306a\u3044\u3067", Outcome.FLAGGED, "negated", "ja"),
    # another channel named, a paid plan, an aside before a question, a choice, a place to leave a parcel
    ("take me off the email list, keep the texts", Outcome.FLAGGED, "veto", "en"),
    ("unsubscribe me from the email messages", Outcome.FLAGGED, "veto", "en"),
    ("只退订邮件", Outcome.FLAGGED, "ambiguous", "zh"),
    ("how do I cancel my monthly snack box", Outcome.NONE, None, None),
    ("Stopp, stimmt der Preis so?", Outcome.FLAGGED, "ambiguous", "en"),
    ("what is this? stop", Outcome.OPT_OUT, "keyword", "en"),
    ("Stop ou encore ? Encore !", Outcome.FLAGGED, "hedged", "en"),
    ("Stop maar in de brievenbus", Outcome.NONE, None, None),
    ("Случайно отписался, как подписаться снова?", Outcome.FLAGGED, "veto", "ru"),
    # a keyword as typed, before its accents are folded; a loose keyword one letter off before a verb of sending
    ("Dừng", Outcome.OPT_OUT, "keyword", "vi"),
    ("Đúng", Outcome.FLAGGED, "net", "vi"),
    ("stoo texting me", Outcome.OPT_OUT, "phrase", "en"),
    ("hello", Outcome.NONE, None, None),
    ("", Outcome.NONE, None, None),
]


@pytest.mark.parametrize(("text", "outcome", "rule", "language"), WHY_CASES, ids=[c[0] or "<empty>" for c in WHY_CASES])
def test_verdicts_say_why(text: str, outcome: Outcome, rule: str | None, language: str | None) -> None:
    verdict = detect(text)
    assert (verdict.outcome, verdict.rule, verdict.language) == (outcome, rule, language), verdict
    if rule is None:
        assert verdict.why is None
    else:
        assert verdict.why == f"{rule}({language}): '{verdict.words}'"


@pytest.mark.parametrize("text", ["\U0001f6d1", "\u270b", "\u270b\U0001f3fd", "\U0001f6d1 \U0001f6d1", "\u26d4"])
def test_a_stop_sign_alone_is_flagged(text: str) -> None:
    verdict = detect(text)
    assert (verdict.outcome, verdict.rule, verdict.language) == (Outcome.FLAGGED, "symbol", None)
    assert verdict.why == f"symbol: '{verdict.words}'"


@pytest.mark.parametrize("text", ["\U0001f44d", "\U0001f6d1\U0001f44d", "!!", "\U0001f1fa\U0001f1f8"])
def test_other_symbols_alone_are_nothing(text: str) -> None:
    assert detect(text).outcome is Outcome.NONE


def test_verdict_is_a_frozen_value() -> None:
    assert detect("Remove me") == Verdict(Outcome.OPT_OUT, "phrase", "remove me", "en")
    assert detect("Remove me").why == "phrase(en): 'remove me'"


def test_the_detector_is_deterministic() -> None:
    texts = [r["text"] for r in DEV + OWN]
    first = [detect(t) for t in texts]
    assert [detect(t) for t in reversed(texts)] == list(reversed(first))


# --- properties ------------------------------------------------------------------------------

OPT_OUTS = sorted({r["text"] for r in DEV + OWN if r["label"] == "optout"})
# Wrappers a person adds around an opt-out without changing it, in the corpus's languages.
AROUND = st.sampled_from(["", "🛑", "😡😡", "🙏", "!!!", "...", "??", " ", "\n", "👍🏽", "‼️", "(", ")", "✋"])
THANKS = st.sampled_from(
    ["", " thanks", " thank you!", " thx", ". Thanks.", " merci", ", merci beaucoup", " gracias", " por favor",
     " danke", " obrigado", " grazie", " bedankt", " 谢谢", " ありがとう", " 감사합니다", " شكرا", " धन्यवाद"]
)  # fmt: skip


@given(text=st.sampled_from(OPT_OUTS), before=AROUND, after=AROUND, thanks=THANKS)
def test_an_opt_out_stays_one_when_wrapped(text: str, before: str, after: str, thanks: str) -> None:
    assert detect(before + text + thanks + after).outcome is Outcome.OPT_OUT


# --- the cost bound: counted work, never a clock ----------------------------------------------

# Work per character read: words visited, pattern attempts, typo cells and characters scanned
# all grow with the text; this bound (measured at about 25 on the corpora) leaves headroom but
# fails on anything quadratic (a 1,600-character text reaching millions of steps).
STEPS_PER_CHAR = 200
PIECES = st.sampled_from([
    "stop ", "STOP", "don't ", "unsubscribe", "\"", "'", "«", "»", "(", ")", "[", "]", " ", ".", "!", "?",
    "no more texts ", "wrong number ", "s t o p ", "$", "@", "0", "un sub ", "\u0422\u041e\u0420", "\U0001f1f8\U0001f1f9",
    "\u9000\u8ba2", "\u914d\u4fe1\u505c\u6b62", "\uc218\uc2e0\uac70\ubd80", "\u0627\u0644\u063a\u0627\u0621", "\u092c\u0902\u0926",
    "\u043d\u0435 \u043f\u0438\u0448\u0438\u0442\u0435 ", "dung gui ", "sispann ", "tigil ", "if ", "never mind ", "unsbsucribe ",
    "aaaaaaaaaaaaaaaaaaaa", "\U0001f6d1", "|", "...", "-", "qwertyuiopasdfgh ",
])  # fmt: skip


def _pathological(pieces: list[str], repeat: int, nesting: int) -> str:
    body = "".join(pieces) * repeat
    return "\"«(" * nesting + body + ")»\"" * nesting


@given(pieces=st.lists(PIECES, min_size=1, max_size=30), repeat=st.integers(1, 400), nesting=st.integers(0, 300))
def test_detection_work_is_bounded_by_the_characters_read(pieces: list[str], repeat: int, nesting: int) -> None:
    text = _pathological(pieces, repeat, nesting)
    detect(text)
    assert last_steps() <= STEPS_PER_CHAR * min(len(text), MAX_CHARS) + 1000, (len(text), last_steps())


@given(pieces=st.lists(PIECES, min_size=1, max_size=10), repeat=st.integers(200, 2000))
def test_only_the_first_characters_are_read(pieces: list[str], repeat: int) -> None:
    text = "".join(pieces) * repeat
    longer = text + " x" * 30_000
    long_verdict = detect(longer)
    long_steps = last_steps()
    assert long_verdict == detect(longer[:MAX_CHARS])
    assert long_steps <= STEPS_PER_CHAR * MAX_CHARS


@given(st.text(max_size=200))
def test_any_text_gets_a_verdict(text: str) -> None:
    verdict = detect(text)
    assert verdict.outcome in Outcome
    assert (verdict.why is None) is (verdict.rule is None)


# --- the lexicons ship with the package ------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_lexicon_ships_and_names_its_sources(language: str) -> None:
    text = resources.files("app.optout").joinpath("lexicons", f"{language}.yaml").read_text(encoding="utf-8")
    assert "# source:" in text


def test_every_pattern_compiles() -> None:
    # Patterns compile on first use (a short-lived process pays only for what it meets);
    # a broken one must fail here, not on the hot path.
    from app.optout.detector import _DETECTOR

    patterns = _DETECTOR.lexicon.patterns
    assert len(patterns) > 200
    for pattern in patterns:
        assert pattern.regex.pattern == pattern.expression, pattern.source


@pytest.mark.parametrize("language", NEW_LANGUAGES)
def test_each_new_lexicon_names_more_than_our_reasoning(language: str) -> None:
    text = resources.files("app.optout").joinpath("lexicons", f"{language}.yaml").read_text(encoding="utf-8")
    sources = [line for line in text.splitlines() if line.startswith("# source:")]
    assert len(sources) >= 2 and any("our own" not in line for line in sources)


def test_pyproject_ships_the_lexicons() -> None:
    assert '"app.optout" = ["lexicons/*.yaml"]' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


# --- in the matcher: the repo's keywords.yaml ------------------------------------------------


@pytest.fixture(scope="module")
def acme() -> SenderRules:
    rules: Rules = load_rules(REPO / "keywords.yaml")
    sender = rules.for_sender("+15005550006")
    assert sender is not None
    return sender


# (text, kind, flagged, why)
MATCH_CASES = [
    ("STOP", Kind.STOP, False, "keyword: 'STOP'"),
    ("BAJA", Kind.STOP, False, "keyword: 'BAJA'"),
    ("退订", Kind.STOP, False, "keyword: '退订'"),
    ("YES", Kind.CONFIRM, False, None),
    ("JOIN", Kind.JOIN, False, None),
    ("HELP", Kind.HELP, False, None),
    ("Je ne veux plus recevoir vos messages", Kind.STOP, False, "phrase(fr): 'ne veux plus recevoir vos messages'"),
    ("don't stop the deals!!", None, True, "negated(en): 'don't stop'"),
    ("end of the day works for pickup", None, False, None),
    ("what time do you open", None, False, None),
]


@pytest.mark.parametrize(("text", "kind", "flagged", "why"), MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_the_matcher_records_why(
    acme: SenderRules, text: str, kind: Kind | None, flagged: bool, why: str | None
) -> None:
    found = acme.match(text)
    assert (found.kind, found.flagged, found.why) == (kind, flagged, why)
    assert found.by_intent is (kind is Kind.STOP and not why.startswith("keyword"))  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["\U0001f6d1", "\u270b\u270b"])
def test_the_matcher_flags_a_stop_sign_alone(acme: SenderRules, text: str) -> None:
    found = acme.match(text)
    assert (found.kind, found.flagged, found.why) == (None, True, f"symbol: '{text}'")


def test_the_matcher_reads_the_text_as_sent(acme: SenderRules) -> None:
    # the accents the normaliser folds ("Dừng" is stop, "Đúng" is right) and a closing question mark
    assert acme.match("Dừng").kind is Kind.STOP
    assert acme.match("Đúng").kind is not Kind.STOP
    found = acme.match("Stop, is this price right?")
    assert (found.kind, found.flagged) == (None, True)
    assert acme.match("Stop, please").kind is Kind.STOP


def test_the_matcher_honours_look_alikes(acme: SenderRules) -> None:
    for text in ("SТОР", "\U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5", "\U0001f182\U0001f183\U0001f17e\U0001f17f"):
        found = acme.match(text)
        assert (found.kind, found.keyword, found.by_intent) == (Kind.STOP, "STOP", False), text


def test_an_exact_non_stop_keyword_never_becomes_a_stop(acme: SenderRules) -> None:
    for text in ("YES", "Y", "JOIN", "DEALS", "NEWS", "HELP", "INFO", "START", "UNSTOP", "OUI", "AIDE"):
        assert acme.match(text).kind is not Kind.STOP, text


def test_a_detected_stop_reports_the_senders_stop_keyword(acme: SenderRules) -> None:
    found = acme.match("Arrêt s'il vous plaît, merci")
    assert (found.kind, found.keyword, found.language, found.by_intent) == (Kind.STOP, "ARRÊT", "fr", True)
    found = acme.match("lose my number")
    assert (found.kind, found.keyword, found.why) == (Kind.STOP, "LOSE MY NUMBER", "phrase(en): 'lose my number'")
