"""Normalising and matching inbound texts: the normaliser, keywords and arguments, precedence,
Twilio's OptOutType and the opt-out intent rule."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keywords import (
    Brand,
    Kind,
    Match,
    Program,
    Rules,
    SenderRules,
    check,
    is_opt_out_intent,
    load_rules,
    normalize,
    split_words,
)
from app.matching import KeywordEntry, keyword_words

# acme: deals + news share one number (with French keywords), promo sits alone on another.
CONFIG = """\
version: 1
brands:
  acme:
    name: ACME Coffee
    help_contact: support@acme.example
    messages:
      stop: {en: "ACME: unsubscribed from all ACME texts. Help: {help_contact}", fr: "ACME : désabonné. Aide : {help_contact}"}
      help: {en: "ACME Coffee. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel.", fr: "ACME. Aide : {help_contact}. STOP pour arreter."}
    programs:
      deals:
        name: ACME Deals
        senders: ["+15005550006"]
        keywords:
          join: [JOIN, DEALS]
          confirm: {en: [YES, Y], fr: [OUI]}
          stop: {fr: ["ARRÊT"]}
          help: {fr: [AIDE]}
        messages: &msgs
          doi_prompt: "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."
          welcome: {en: "{program}: you're in! Reply STOP to cancel.", fr: "{program} : inscrit ! STOP pour arreter."}
          stop: {en: "{program}: unsubscribed. Help: {help_contact}", fr: "{program} : désabonné. Aide : {help_contact}"}
          help: {en: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel.", fr: "{program}. Aide : {help_contact}. STOP pour arreter."}
          already_subscribed: "{program}: already subscribed. Reply STOP to cancel."
      news:
        name: ACME News
        senders: ["+15005550006"]
        keywords:
          join: [NEWS, "WEEKLY NEWS"]
        messages: *msgs
      promo:
        name: ACME Promo
        senders: ["+15005550001"]
        keywords:
          join: [PROMO]
        messages: *msgs
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Rules:
    path = tmp_path_factory.mktemp("matching") / "keywords.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    report = check(path)
    assert report.errors == [] and report.warnings == []
    return load_rules(path)


@pytest.fixture(scope="module")
def shared(rules: Rules) -> SenderRules:
    sender = rules.for_sender("+15005550006")
    assert sender is not None
    return sender


@pytest.fixture(scope="module")
def alone(rules: Rules) -> SenderRules:
    sender = rules.for_sender("+15005550001")
    assert sender is not None
    return sender


# --- normalize -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", "stop"),
        ("ＳＴＯＰ", "stop"),  # full-width letters
        ("ｓｔｏｐ ａｌｌ", "stop all"),
        ("STOP\u200b", "stop"),  # zero-width space
        ("S\u200dT\u200cOP", "stop"),  # zero-width joiner / non-joiner inside
        ("\ufeffSTOP", "stop"),  # BOM
        ("STOP\u00ad", "stop"),  # soft hyphen
        ("\u200fSTOP\u200e", "stop"),  # RTL / LTR marks
        ("\u202eSTOP\u202c", "stop"),  # bidi override and pop
        ("\u2067STOP\u2069", "stop"),  # bidi isolates
        ("\u061cSTOP", "stop"),  # Arabic letter mark
        ("ArrÊt", "arret"),
        ("ARRÊT", "arret"),
        ("Désinscrire", "desinscrire"),
        ("A\u0301RRET", "arret"),  # decomposed accent
        ("Straße", "strasse"),  # casefold, not lower
        ("ﬁn", "fin"),  # ligature
        ("  stop  ", "stop"),
        ("stop\n\tplease", "stop please"),
        ("Stop   please", "stop please"),
        ("🛑 STOP 🛑", "stop"),
        ("Stop!!!", "stop"),
        ("STOP.", "stop"),
        ("«STOP»", "stop"),
        ("¡Alto!", "alto"),
        ("👍🏽 yes 👍🏽", "yes"),  # skin-tone modifier
        ("❤️ oui ❤️", "oui"),  # variation selector
        ("👨‍👩‍👧 join", "join"),  # ZWJ sequence
        ("🇫🇷 oui", "oui"),  # regional indicators
        ("1️⃣", "1"),  # keycap
        ("STOP, please.", "stop, please"),  # inner punctuation stays; words split it
        ("...", ""),
        ("", ""),
        ("\u200b", ""),
    ],
    ids=[
        "ascii", "full-width", "full-width-two-words", "zwsp", "zwj-inside", "bom", "soft-hyphen", "rtl-ltr-marks",
        "bidi-override", "bidi-isolate", "arabic-mark", "mixed-case-accent", "upper-accent", "french-word",
        "decomposed-accent", "eszett", "ligature", "spaces", "newline-tab", "inner-spaces", "emoji-around",
        "exclamations", "full-stop", "guillemets", "inverted-exclamation", "skin-tone", "variation-selector",
        "zwj-family", "flag", "keycap", "inner-punctuation", "only-punctuation", "empty", "only-invisible",
    ],
)  # fmt: skip
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@given(st.text(alphabet=st.characters(codec="ascii")))
def test_ascii_fast_path_agrees_with_the_unicode_path(text: str) -> None:
    # Prefixing an invisible character forces the full Unicode path on the same text.
    assert normalize("\u200b" + text) == normalize(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stop", ("stop",)),
        ("stop, please", ("stop", "please")),
        ("stop.please", ("stop", "please")),
        ("opt-out", ("opt", "out")),
        ("don't stop", ("don't", "stop")),
        ("stopwatch", ("stopwatch",)),
        ("snake_case", ("snake", "case")),
        ("join 2", ("join", "2")),
        ("", ()),
        ("🛑", ()),
    ],
    ids=["one", "comma", "dot", "hyphen", "apostrophe", "no-prefix", "underscore", "digits", "empty", "emoji"],
)
def test_split_words(text: str, expected: tuple[str, ...]) -> None:
    assert split_words(text) == expected


def test_keywords_are_normalised_like_texts() -> None:
    assert keyword_words("OPT OUT") == keyword_words("Opt-Out!") == ("opt", "out")
    assert keyword_words("ARRÊT") == keyword_words("arret") == ("arret",)


# --- matching on a shared sender -------------------------------------------------------

# (text, kind, keyword, language, program, by_intent)
SHARED_CASES = [
    ("JOIN", Kind.JOIN, "JOIN", None, "deals", False),
    ("deals", Kind.JOIN, "DEALS", None, "deals", False),
    ("Join!", Kind.JOIN, "JOIN", None, "deals", False),
    ("NEWS", Kind.JOIN, "NEWS", None, "news", False),
    ("weekly news", Kind.JOIN, "WEEKLY NEWS", None, "news", False),
    ("JOIN NEWS", Kind.JOIN, "JOIN", None, "news", False),
    ("join weekly news", Kind.JOIN, "JOIN", None, "news", False),
    ("STOP", Kind.STOP, "STOP", None, None, False),
    ("stop.", Kind.STOP, "STOP", None, None, False),
    ("ＳＴＯＰ", Kind.STOP, "STOP", None, None, False),
    ("STOP\u200b", Kind.STOP, "STOP", None, None, False),
    ("stop deals", Kind.STOP, "STOP", None, "deals", False),
    ("STOP NEWS", Kind.STOP, "STOP", None, "news", False),
    ("Stop, join!", Kind.STOP, "STOP", None, "deals", False),
    ("STOPALL", Kind.STOP, "STOPALL", None, None, False),
    ("unsubscribe news", Kind.STOP, "UNSUBSCRIBE", None, "news", False),
    ("Opt out", Kind.STOP, "OPT OUT", None, None, False),
    ("opt-out", Kind.STOP, "OPT OUT", None, None, False),
    ("OPT OUT DEALS", Kind.STOP, "OPT OUT", None, "deals", False),
    ("optout", Kind.STOP, "OPTOUT", None, None, False),
    ("End", Kind.STOP, "END", None, None, False),
    ("ArrÊt", Kind.STOP, "ARRÊT", "fr", None, False),
    ("arret news", Kind.STOP, "ARRÊT", "fr", "news", False),
    ("STOP PROMO", Kind.STOP, "STOP", None, None, True),  # promo is not on this sender: no argument
    ("Stop please", Kind.STOP, "STOP", None, None, True),
    ("please stop", Kind.STOP, "STOP", None, None, True),
    ("join stop", Kind.STOP, "STOP", None, None, True),
    ("help stop", Kind.STOP, "STOP", None, None, True),
    ("yes stop", Kind.STOP, "STOP", None, None, True),
    ("Arrêt svp", Kind.STOP, "ARRÊT", "fr", None, True),
    ("please unsubscribe me", Kind.STOP, "UNSUBSCRIBE", None, None, True),
    ("I want to opt out", Kind.STOP, "OPT OUT", None, None, True),
    ("please take me off this list, I get far too many messages from you", Kind.STOP, "TAKE ME OFF THIS LIST", None, None, True),
    ("HELP", Kind.HELP, "HELP", None, None, False),
    ("help?", Kind.HELP, "HELP", None, None, False),
    ("info", Kind.HELP, "INFO", None, None, False),
    ("help news", Kind.HELP, "HELP", None, "news", False),
    ("AIDE", Kind.HELP, "AIDE", "fr", None, False),
    ("YES", Kind.CONFIRM, "YES", "en", None, False),
    ("Yes!", Kind.CONFIRM, "YES", "en", None, False),
    ("y", Kind.CONFIRM, "Y", "en", None, False),
    ("OUI", Kind.CONFIRM, "OUI", "fr", None, False),
    ("oui 👍", Kind.CONFIRM, "OUI", "fr", None, False),
    ("YES DEALS", Kind.CONFIRM, "YES", "en", "deals", False),
    ("oui news", Kind.CONFIRM, "OUI", "fr", "news", False),
    ("START", Kind.START, "START", None, None, False),
    ("unstop", Kind.START, "UNSTOP", None, None, False),
    ("start news", Kind.START, "START", None, "news", False),
    ("stopwatch", None, None, None, None, False),
    ("hello", None, None, None, None, False),
    ("yes please", None, None, None, None, False),
    ("join deals news", None, None, None, None, False),
    ("PROMO", None, None, None, None, False),  # another sender's program
    ("what time does the sale end", None, None, None, None, False),
    ("👍", None, None, None, None, False),  # a stop sign alone is flagged: tests/test_optout.py
    ("", None, None, None, None, False),
]


@pytest.mark.parametrize(
    ("text", "kind", "keyword", "language", "program", "by_intent"),
    SHARED_CASES,
    ids=[f"{c[0] or '<empty>'}" for c in SHARED_CASES],
)
def test_match_on_a_shared_sender(
    shared: SenderRules,
    text: str,
    kind: Kind | None,
    keyword: str | None,
    language: str | None,
    program: str | None,
    by_intent: bool,
) -> None:
    found = shared.match(text)
    assert dataclasses.replace(found, why=None) == Match(kind, keyword, language, program, normalize(text), by_intent)
    # every stop says why; "keyword: 'STOP'" for an exact keyword, the detector's rule otherwise
    assert (found.why is not None) is (kind is Kind.STOP)


@pytest.mark.parametrize(
    ("text", "kind", "program"),
    [
        ("PROMO", Kind.JOIN, "promo"),
        ("STOP PROMO", Kind.STOP, "promo"),
        ("STOP", Kind.STOP, None),
        ("YES", Kind.CONFIRM, None),
        ("JOIN", None, None),  # deals' keyword, another sender
        ("ARRÊT", Kind.STOP, None),  # ARRET is on the floor everywhere (AWS's list), whatever deals adds
        ("DESABONNER", Kind.STOP, None),  # not a keyword here, but the detector reads French
        ("OUI", None, None),  # ...and so does its confirm keyword
        ("UNSUBSCRIBE", Kind.STOP, None),  # the floor is everywhere
    ],
    ids=[
        "join",
        "stop-arg",
        "stop",
        "confirm",
        "other-senders-join",
        "floor-arret",
        "detector-french",
        "other-senders-confirm",
        "floor",
    ],
)
def test_match_is_per_sender(alone: SenderRules, text: str, kind: Kind | None, program: str | None) -> None:
    found = alone.match(text)
    assert (found.kind, found.program) == (kind, program)


def test_sender_rules_carry_brand_and_programs(shared: SenderRules, alone: SenderRules) -> None:
    assert shared.brand.key == alone.brand.key == "acme"
    assert [p.key for p in shared.programs] == ["deals", "news"]
    assert shared.program_keys == ("deals", "news")
    assert alone.program_keys == ("promo",)


def test_match_is_a_frozen_value(shared: SenderRules) -> None:
    found = shared.match("JOIN")
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.kind = Kind.STOP  # type: ignore[misc]
    assert found == Match(Kind.JOIN, "JOIN", None, "deals", "join")
    assert hash(found) == hash(Match(Kind.JOIN, "JOIN", None, "deals", "join"))
    assert found.normalized == "join"


# --- precedence ------------------------------------------------------------------------


def _program(key: str) -> Program:
    return Program(
        brand="b", key=key, name=key, senders=("+15005550006",), double_opt_in=True,
        doi_expires_after=timedelta(hours=48), prompt_cooldown=timedelta(minutes=10), language="en",
        join=(), messages=MappingProxyType({}),
    )  # fmt: skip


def _sender(*entries: tuple[Kind, str, str | None]) -> SenderRules:
    """A SenderRules fed directly, bypassing check (which refuses these conflicts)."""
    programs = (_program("p"), _program("q"))
    brand = Brand(
        key="b", name="B", help_contact="h", language="en", default_region="US", allowed_countries=None,
        messages=MappingProxyType({}), events_url=None, events_secret_env=None,
        programs=MappingProxyType({p.key: p for p in programs}),
    )  # fmt: skip
    return SenderRules(
        brand, programs, [KeywordEntry(kind, keyword_words(kw), kw, None, prog) for kind, kw, prog in entries]
    )


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([(Kind.JOIN, "X", "p"), (Kind.STOP, "X", None)], Kind.STOP),
        ([(Kind.JOIN, "X", "p"), (Kind.HELP, "X", None)], Kind.HELP),
        ([(Kind.START, "X", None), (Kind.CONFIRM, "X", None)], Kind.CONFIRM),
        ([(Kind.START, "X", None), (Kind.JOIN, "X", "p")], Kind.JOIN),
        ([(Kind.CONFIRM, "X", None), (Kind.JOIN, "X", "p")], Kind.CONFIRM),
        ([(Kind.HELP, "X", None), (Kind.STOP, "X", None)], Kind.STOP),
        (
            [(Kind.START, "X", None), (Kind.HELP, "X", None), (Kind.JOIN, "X", "p"), (Kind.CONFIRM, "X", None)],
            Kind.HELP,
        ),
    ],
    ids=["stop>join", "help>join", "confirm>start", "join>start", "confirm>join", "stop>help", "help>all-lower"],
)
def test_precedence_whatever_the_order_given(entries: list[tuple[Kind, str, str | None]], expected: Kind) -> None:
    assert _sender(*entries).match("x").kind is expected
    assert _sender(*reversed(entries)).match("x").kind is expected


def test_precedence_between_whole_text_and_keyword_plus_argument() -> None:
    # "HELP Q" is both a join keyword of p as a whole and HELP + argument Q: help wins.
    sender = _sender((Kind.JOIN, "HELP Q", "p"), (Kind.HELP, "HELP", None), (Kind.JOIN, "Q", "q"))
    assert (sender.match("help q").kind, sender.match("help q").program) == (Kind.HELP, "q")
    # and a plain join-with-argument still reads as join
    assert (sender.match("q").kind, sender.match("q").program) == (Kind.JOIN, "q")


def test_an_exact_keyword_that_reads_as_an_opt_out_is_a_stop() -> None:
    # check refuses such a keyword; the matcher still errs towards honouring the opt-out.
    sender = _sender((Kind.STOP, "STOP", None), (Kind.JOIN, "PLEASE STOP", "p"))
    found = sender.match("please stop")
    assert (found.kind, found.by_intent) == (Kind.STOP, True)


# --- Twilio OptOutType -----------------------------------------------------------------

# (text, OptOutType, kind, keyword, program)
OPT_OUT_TYPE_CASES = [
    ("STOP", "STOP", Kind.STOP, "STOP", None),
    ("stop news", "STOP", Kind.STOP, "STOP", "news"),
    ("unsubscribe", "STOP", Kind.STOP, "UNSUBSCRIBE", None),
    ("JOIN", "STOP", Kind.STOP, "STOP", None),
    ("hello", "stop", Kind.STOP, "STOP", None),
    ("", "STOP", Kind.STOP, "STOP", None),
    ("HELP", "HELP", Kind.HELP, "HELP", None),
    ("info", "HELP", Kind.HELP, "INFO", None),
    ("help deals", "HELP", Kind.HELP, "HELP", "deals"),
    ("JOIN", "Help", Kind.HELP, "HELP", None),
    ("YES", "START", Kind.CONFIRM, "YES", None),
    ("oui", "START", Kind.CONFIRM, "OUI", None),
    ("JOIN", "START", Kind.JOIN, "JOIN", "deals"),
    ("START", "START", Kind.START, "START", None),
    ("unstop news", "START", Kind.START, "UNSTOP", "news"),
    ("hi there", "START", Kind.START, "START", None),
    ("JOIN", None, Kind.JOIN, "JOIN", "deals"),
    ("JOIN", "", Kind.JOIN, "JOIN", "deals"),
    ("JOIN", "SOMETHING", Kind.JOIN, "JOIN", "deals"),
]


@pytest.mark.parametrize(
    ("text", "opt_out_type", "kind", "keyword", "program"),
    OPT_OUT_TYPE_CASES,
    ids=[f"{c[0] or '<empty>'}|{c[1]}" for c in OPT_OUT_TYPE_CASES],
)
def test_opt_out_type(
    shared: SenderRules, text: str, opt_out_type: str | None, kind: Kind, keyword: str, program: str | None
) -> None:
    found = shared.match(text, opt_out_type)
    assert (found.kind, found.keyword, found.program, found.by_intent) == (kind, keyword, program, False)
    assert found.normalized == normalize(text)


# --- the opt-out intent rule -----------------------------------------------------------

INTENT_CASES = [
    # begins with a stop keyword
    ("STOP", True),
    ("stop", True),
    ("Stop please", True),
    ("STOP. Thank you", True),
    ("stop texting me", True),
    ("Opt out now", True),
    ("opt-out", True),
    ("End", True),
    ("END.", True),
    ("Quit it", True),
    ("cancel please", True),
    ("Cancel my subscription to all of these marketing messages now", True),
    ("Unsubscribe", True),
    ("Revoke consent", True),
    ("STOPALL", True),
    ("Stop!!! 🛑", True),
    ("ＳＴＯＰ ｐｌｅａｓｅ", True),
    ("STOP\u200b please", True),
    ("STOP. I never signed up for this and I do not want any more of these", True),
    # short text (at most six words) containing stop / unsubscribe / optout / revoke / opt out
    ("please stop", True),
    ("can you unsubscribe me", True),
    ("Don't stop", False),  # negated: flagged for a person, not honoured (it was honoured before)
    ("I want to opt out", True),
    ("pls stop now thanks", True),
    ("How do I unsubscribe?", True),
    ("I said revoke", True),
    ("no more, optout", True),
    ("I don't want these anymore, stop", True),
    ("ok stopall", True),
    ("we met at the bus stop", False),  # a bus stop, whatever the length
    # unmistakable requests at any length
    ("please stop texting me, I never signed up for any of this nonsense", True),
    ("Please unsubscribe me from all of your marketing lists right now thank you", True),
    ("Can you please take me off this list, I get too many messages", True),
    ("Stop sending these messages to my phone every single day", True),
    ("hey this is Bob and I would like you to stop sending me these", True),
    ("could you opt me out of everything you send to this number", True),
    ("whoever this is, please remove me from your list right away", True),
    # not opt-outs
    ("what time does the sale end", False),
    ("I can't stop drinking your coffee it is the best thing ever in my life", False),
    ("stopwatch", False),
    ("unstop", False),
    ("START", False),
    ("JOIN", False),
    ("Yes", False),
    ("hello", False),
    ("", False),
    ("Can I cancel my order", False),
    ("Don't quit your day job", False),
    ("the end", False),
    ("weekend deals please", False),
    ("I will never end my subscription to the best coffee in town ever", False),
    ("non-stop deals all weekend long at every store near you today", False),
    ("quitting", False),
    ("Stopover in Paris", False),
    ("backstop", False),
    ("tell me more about the deals", False),
    ("see you at the bus stop on main street near the old coffee shop", False),
    ("we met at the bus stop yesterday", False),  # seven words: long
    ("ending soon?", False),
    ("cancellation policy?", False),
]


@pytest.mark.parametrize(("text", "expected"), INTENT_CASES, ids=[c[0] or "<empty>" for c in INTENT_CASES])
def test_opt_out_intent(text: str, expected: bool) -> None:
    assert is_opt_out_intent(normalize(text)) is expected


def test_the_intent_table_is_large_enough() -> None:
    assert len(INTENT_CASES) >= 40
    assert sum(1 for _, e in INTENT_CASES if e) >= 15 and sum(1 for _, e in INTENT_CASES if not e) >= 15


@pytest.mark.parametrize(("text", "expected"), INTENT_CASES, ids=[c[0] or "<empty>" for c in INTENT_CASES])
def test_the_matcher_applies_the_intent_rule(shared: SenderRules, text: str, expected: bool) -> None:
    found = shared.match(text)
    assert (found.kind is Kind.STOP) is expected
    if expected:
        # an exact keyword is not "by intent"; anything longer is
        assert found.by_intent is (
            len(split_words(found.normalized)) > len(split_words(normalize(found.keyword or "")))
        )


def test_intent_uses_the_given_stop_keywords() -> None:
    # a brand's own stop word with only politeness around it
    assert is_opt_out_intent("enough already thanks") is True  # "enough" is in the English lexicon
    assert is_opt_out_intent("pineapple please") is False
    assert is_opt_out_intent("pineapple please", ["PINEAPPLE"]) is True
    assert is_opt_out_intent("ya pineapple", ["PINEAPPLE"]) is True
    assert is_opt_out_intent("pineapple pizza", ["PINEAPPLE"]) is False
    # the detector holds whatever the list
    assert is_opt_out_intent("please stop", []) is True
    assert is_opt_out_intent("arret svp", []) is True
    assert is_opt_out_intent("end of the day", []) is False


def test_intent_accepts_raw_text() -> None:
    assert is_opt_out_intent("ＳＴＯＰ!!") is True
    assert is_opt_out_intent("Please  STOP") is True
