"""keywords.yaml: loading, defaults and inheritance, every `check` error at its exact line, warnings."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.errors import ConfigError
from app.matching import BUILTIN_STOP
from app.keywords import (
    Brand,
    CheckReport,
    Finding,
    Kind,
    Program,
    Rules,
    check,
    load_rules,
    parse_duration,
    segments,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "keywords.yaml"
MG = "MG" + "0123456789abcdef" * 2
MG_UPPER = "MG" + MG[2:].upper()

# One brand, one program; the line numbers in the error table below count from here.
BASE = """\
version: 1
brands:
  acme:
    name: ACME Coffee
    help_contact: support@acme.example
    programs:
      deals:
        name: ACME Deals
        senders: ["+15005550006"]
        keywords:
          join: [JOIN, DEALS]
        messages:
          doi_prompt: "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."
          welcome: "{program}: you're in! Reply STOP to cancel."
          stop: "{program}: you're unsubscribed. Help: {help_contact}"
          help: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."
          already_subscribed: "{program}: you're already subscribed. Reply STOP to cancel."
"""

# Two programs on one shared number (brand-level messages required).
TWO = """\
version: 1
brands:
  acme:
    name: ACME Coffee
    help_contact: support@acme.example
    messages:
      stop: "ACME: you're unsubscribed from all ACME texts. Help: {help_contact}"
      help: "ACME Coffee. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."
    programs:
      deals:
        name: ACME Deals
        senders: ["+15005550006"]
        keywords:
          join: [JOIN, DEALS]
        messages: &msgs
          doi_prompt: "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."
          welcome: "{program}: you're in! Reply STOP to cancel."
          stop: "{program}: you're unsubscribed. Help: {help_contact}"
          help: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."
          already_subscribed: "{program}: you're already subscribed. Reply STOP to cancel."
      news:
        name: ACME News
        senders: ["+15005550006"]
        keywords:
          join: [NEWS]
        messages: *msgs
"""

SECOND_BRAND = """\
  bistro:
    name: Bistro
    help_contact: bonjour@bistro.example
    programs:
      menu:
        name: Menu
        senders: ["+15005550007"]
        double_opt_in: false
        keywords:
          join: [MENU]
        messages:
          welcome: "{program}: bienvenue ! STOP pour arreter."
          stop: "{program}: c'est fini. Aide : {help_contact}"
          help: "{program}. Aide : {help_contact}."
          already_subscribed: "{program}: vous êtes déjà inscrit. STOP pour arreter."
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keywords.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"fixture edit {old!r} is not unique"
    return text.replace(old, new)


def errors_of(tmp_path: Path, text: str) -> list[Finding]:
    return check(write(tmp_path, text)).errors


def warnings_of(tmp_path: Path, text: str) -> list[Finding]:
    report = check(write(tmp_path, text))
    assert report.errors == []
    return report.warnings


# --- the shipped file ------------------------------------------------------------------


def test_shipped_keywords_yaml_is_clean() -> None:
    report = check(SHIPPED)
    assert [str(f) for f in report.errors] == []
    assert [str(f) for f in report.warnings] == []
    assert report.ok


def test_shipped_keywords_yaml_has_the_names_other_modules_rely_on() -> None:
    rules = load_rules(SHIPPED)
    assert list(rules.brands) == ["acme", "bistro"]
    deals, news = rules.program("acme", "deals"), rules.program("acme", "news")
    assert deals.join == ("JOIN", "DEALS") and news.join == ("NEWS",)
    assert deals.senders == news.senders == ("+15005550006",)
    assert deals.double_opt_in and news.double_opt_in
    assert rules.brand("acme").allowed_countries == frozenset({"US", "CA", "FR"})
    assert rules.brand("bistro").language == "fr" and rules.brand("bistro").default_region == "FR"
    assert rules.program("bistro", "menu").senders == ("+15005550007",)
    acme = rules.for_sender("+15005550006")
    assert acme is not None and [p.key for p in acme.programs] == ["deals", "news"]
    assert (acme.match("YES").kind, acme.match("YES").language) == (Kind.CONFIRM, "en")
    assert (acme.match("Y").kind, acme.match("OUI").language) == (Kind.CONFIRM, "fr")
    # brand-level messages exist because deals and news share a number
    assert rules.render("acme", None, "stop", "en") is not None
    assert rules.render("acme", None, "help", "fr") is not None


# --- loading and defaults --------------------------------------------------------------


def test_built_in_defaults_apply(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, BASE))
    brand = rules.brand("acme")
    program = rules.program("acme", "deals")
    assert isinstance(rules, Rules) and isinstance(brand, Brand) and isinstance(program, Program)
    assert rules.path == str(tmp_path / "keywords.yaml")
    assert (brand.language, brand.default_region, brand.allowed_countries) == ("en", "US", None)
    assert (brand.events_url, brand.events_secret_env) == (None, None)
    assert program.double_opt_in is True
    assert program.doi_expires_after == timedelta(hours=48)
    assert program.prompt_cooldown == timedelta(minutes=10)
    assert program.language == "en"
    assert program.keywords["stop"] == BUILTIN_STOP  # the floor, in its order
    assert program.keywords["help"] == ("HELP", "INFO")
    assert program.keywords["start"] == ("START", "UNSTOP")
    assert program.keywords["confirm"] == ("YES", "Y")
    assert program.keywords["join"] == ("JOIN", "DEALS")


def test_file_defaults_are_inherited_and_programs_override_them(tmp_path: Path) -> None:
    text = edit(
        BASE,
        "version: 1\n",
        "version: 1\ndefaults:\n  double_opt_in: false\n  doi_expires_after: 2d\n  prompt_cooldown: 1h30m\n",
    )
    text = edit(text, "          doi_prompt:", '          doi_expired: "{program}: expired."\n          doi_prompt:')
    text += textwrap.indent(
        textwrap.dedent(
            """\
            news:
              name: ACME News
              senders: ["+15005550001"]
              double_opt_in: true
              doi_expires_after: 30m
              prompt_cooldown: 0s
              language: fr
              keywords:
                join: [NEWS]
              messages:
                doi_prompt: "{program}: OUI pour confirmer. Msg&data rates may apply. HELP pour l'aide, STOP pour arreter."
                welcome: "{program}: bienvenue. STOP pour arreter."
                stop: "{program}: fini. Aide : {help_contact}"
                help: "{program}. Aide : {help_contact}"
            """
        ),
        "      ",
    )
    rules = load_rules(write(tmp_path, text))
    deals, news = rules.program("acme", "deals"), rules.program("acme", "news")
    assert (deals.double_opt_in, deals.doi_expires_after, deals.prompt_cooldown) == (
        False,
        timedelta(days=2),
        timedelta(hours=1, minutes=30),
    )
    assert (news.double_opt_in, news.doi_expires_after, news.prompt_cooldown) == (
        True,
        timedelta(minutes=30),
        timedelta(0),
    )
    assert (deals.language, news.language) == ("en", "fr")
    # a plain-string message is stored under the program's language
    assert dict(news.messages["welcome"]) == {"fr": "{program}: bienvenue. STOP pour arreter."}
    assert set(deals.messages["welcome"]) == {"en"}


def test_program_language_inherits_the_brand_language(tmp_path: Path) -> None:
    text = edit(
        BASE, "    help_contact: support@acme.example\n", "    help_contact: support@acme.example\n    language: fr\n"
    )
    rules = load_rules(write(tmp_path, text))
    assert rules.brand("acme").language == "fr"
    assert rules.program("acme", "deals").language == "fr"
    assert set(rules.program("acme", "deals").messages["stop"]) == {"fr"}


def test_brand_fields_load(tmp_path: Path) -> None:
    text = edit(
        BASE,
        "    programs:\n",
        "    default_region: CA\n    allowed_countries: [us, CA, NO]\n"
        "    events:\n      url: https://crm.acme.example/hooks\n      secret_env: ACME_SECRET\n    programs:\n",
    )
    brand = load_rules(write(tmp_path, text)).brand("acme")
    assert brand.default_region == "CA"
    # NO is Norway, not YAML 1.1's false; lower case is accepted and upper-cased
    assert brand.allowed_countries == frozenset({"US", "CA", "NO"})
    assert (brand.events_url, brand.events_secret_env) == ("https://crm.acme.example/hooks", "ACME_SECRET")


def test_yaml_1_1_scalars_are_read_as_written(tmp_path: Path) -> None:
    text = edit(BASE, 'senders: ["+15005550006"]', "senders: [+15005550006]")
    text = edit(text, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          confirm: [ON, 1]")
    rules = load_rules(write(tmp_path, text))
    program = rules.program("acme", "deals")
    assert program.senders == ("+15005550006",)
    assert program.keywords["confirm"] == ("YES", "Y", "ON", "1")


def test_program_keyword_lists_extend_the_defaults(tmp_path: Path) -> None:
    text = edit(
        BASE,
        "join: [JOIN, DEALS]",
        "join: [JOIN, DEALS]\n          confirm: {fr: [OUI]}\n          stop: [ENOUGH]\n          help: {fr: [AIDE]}\n          start: [RESUME]",
    )
    program = load_rules(write(tmp_path, text)).program("acme", "deals")
    assert program.keywords["confirm"] == ("YES", "Y", "OUI")
    assert program.keywords["stop"][-1] == "ENOUGH" and "STOP" in program.keywords["stop"]
    assert program.keywords["help"] == ("HELP", "INFO", "AIDE")
    assert program.keywords["start"] == ("START", "UNSTOP", "RESUME")


def test_the_stop_help_start_floor_cannot_be_removed(tmp_path: Path) -> None:
    text = edit(
        BASE,
        "version: 1\n",
        "version: 1\ndefaults:\n  keywords:\n    stop: [ARRET]\n    help: [AIDE]\n    start: [REPRENDRE]\n",
    )
    text = edit(text, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          stop: [FIN]")
    rules = load_rules(write(tmp_path, text))
    sender = rules.for_sender("+15005550006")
    assert sender is not None
    for text_in, kind in [
        ("STOP", Kind.STOP), ("UNSUBSCRIBE", Kind.STOP), ("OPT OUT", Kind.STOP), ("ARRET", Kind.STOP), ("FIN", Kind.STOP),
        ("HELP", Kind.HELP), ("INFO", Kind.HELP), ("AIDE", Kind.HELP),
        ("START", Kind.START), ("UNSTOP", Kind.START), ("REPRENDRE", Kind.START),
    ]:  # fmt: skip
        assert sender.match(text_in).kind is kind, text_in
        assert sender.match(text_in).by_intent is False


def test_defaults_confirm_replaces_the_built_in_confirm(tmp_path: Path) -> None:
    text = edit(BASE, "version: 1\n", "version: 1\ndefaults:\n  keywords:\n    confirm: [OK]\n")
    text = edit(text, "reply YES to confirm", "reply OK to confirm")
    rules = load_rules(write(tmp_path, text))
    sender = rules.for_sender("+15005550006")
    assert sender is not None
    assert rules.program("acme", "deals").keywords["confirm"] == ("OK",)
    assert sender.match("OK").kind is Kind.CONFIRM
    assert sender.match("YES").kind is None


def test_rules_are_immutable(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, BASE))
    program = rules.program("acme", "deals")
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.brands["x"] = rules.brand("acme")  # type: ignore[index]
    with pytest.raises(TypeError):
        program.messages["welcome"]["en"] = "hi"  # type: ignore[index]
    with pytest.raises(TypeError):
        rules.brand("acme").programs["x"] = program  # type: ignore[index]


def test_unknown_brand_or_program_is_a_key_error(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, BASE))
    with pytest.raises(KeyError):
        rules.brand("nope")
    with pytest.raises(KeyError):
        rules.program("acme", "nope")
    with pytest.raises(KeyError):
        rules.render("nope", None, "stop", None)
    with pytest.raises(KeyError):
        rules.render("acme", "nope", "stop", None)


# --- senders ---------------------------------------------------------------------------


def test_for_sender_by_number_by_service_and_their_union(tmp_path: Path) -> None:
    text = edit(
        TWO,
        'senders: ["+15005550006"]\n        keywords:\n          join: [NEWS]',
        f'senders: ["{MG_UPPER}"]\n        keywords:\n          join: [NEWS]',
    )
    text = edit(text, "reply YES to confirm", "reply OUI to confirm")
    text = edit(text, "version: 1\n", "version: 1\ndefaults:\n  keywords:\n    confirm: [OUI]\n")
    rules = load_rules(write(tmp_path, text))
    by_number = rules.for_sender("+15005550006")
    by_service = rules.for_sender("+15005550099", MG)  # Twilio sends lower-case hex
    both = rules.for_sender("+15005550006", MG)
    assert by_number is not None and [p.key for p in by_number.programs] == ["deals"]
    assert by_service is not None and [p.key for p in by_service.programs] == ["news"]
    assert both is not None and [p.key for p in both.programs] == ["deals", "news"]
    assert both.brand.key == "acme"
    assert both.match("NEWS").program == "news" and both.match("DEALS").program == "deals"
    assert rules.for_sender("+15005550099") is None
    assert rules.for_sender(None, None) is None
    assert rules.for_sender(None, "MG" + "f" * 32) is None


def test_sender_of(tmp_path: Path) -> None:
    text = edit(BASE, 'senders: ["+15005550006"]', f'senders: ["+15005550006", "{MG}"]')
    text = edit(text, "version: 1\n", "version: 1\ndefaults:\n  keywords:\n    confirm: [OK]\n")
    text = edit(text, "reply YES to confirm", "reply OK to confirm")
    rules = load_rules(write(tmp_path, text))
    assert rules.sender_of("acme", "deals", "+15005550006", None) == "+15005550006"
    assert rules.sender_of("acme", "deals", "+15005550006", MG) == MG
    assert rules.sender_of("acme", "deals", "+15005550006", MG_UPPER) == MG
    # an API opt-in has no inbound text: the program's first sender
    assert rules.sender_of("acme", "deals", None, None) == "+15005550006"


# --- rendering -------------------------------------------------------------------------


def test_render_placeholders_languages_and_fallbacks(tmp_path: Path) -> None:
    text = edit(
        TWO,
        '          welcome: "{program}: you\'re in! Reply STOP to cancel."',
        '          welcome: {en: "{program} ({brand}): in! Reply STOP to cancel. {{literal}}", fr: "{program} : inscrit ! STOP pour arreter."}\n'
        '          doi_expired: {fr: "{program} : expire."}',
    )
    text = edit(text, '          already_subscribed: "{program}: you\'re already subscribed. Reply STOP to cancel."\n', "")
    rules = load_rules(write(tmp_path, text))
    assert (
        rules.render("acme", "deals", "welcome", "en")
        == "ACME Deals (ACME Coffee): in! Reply STOP to cancel. {literal}"
    )
    assert rules.render("acme", "deals", "welcome", "fr") == "ACME Deals : inscrit ! STOP pour arreter."
    assert rules.render("acme", "deals", "welcome", "fr-CA") == "ACME Deals : inscrit ! STOP pour arreter."
    # a language the message lacks: the program's language
    assert rules.render("acme", "deals", "welcome", "de") == rules.render("acme", "deals", "welcome", "en")
    assert rules.render("acme", "deals", "welcome", None) == rules.render("acme", "deals", "welcome", "en")
    # only in another language: any available one
    assert rules.render("acme", "news", "doi_expired", "en") == "ACME News : expire."
    # optional messages absent: no reply
    assert rules.render("acme", "deals", "already_subscribed", "en") is None
    # brand level: {program} is the brand's name
    assert (
        rules.render("acme", None, "stop", "en")
        == "ACME: you're unsubscribed from all ACME texts. Help: support@acme.example"
    )
    assert rules.render("acme", "deals", "stop", "en") == "ACME Deals: you're unsubscribed. Help: support@acme.example"


def test_brand_level_render_falls_back_to_the_only_program(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, BASE))
    assert rules.brand("acme").messages == {}
    assert rules.render("acme", None, "stop", None) == "ACME Deals: you're unsubscribed. Help: support@acme.example"


def test_render_in_the_language_of_the_matched_keyword(tmp_path: Path) -> None:
    text = edit(BASE, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          confirm: {en: [YES], fr: [OUI]}")
    text = edit(
        text,
        '          welcome: "{program}: you\'re in! Reply STOP to cancel."',
        '          welcome: {en: "{program}: you\'re in! Reply STOP to cancel.", fr: "{program} : c\'est fait ! STOP pour arreter."}',
    )
    rules = load_rules(write(tmp_path, text))
    sender = rules.for_sender("+15005550006")
    assert sender is not None
    oui, yes = sender.match("Oui !"), sender.match("yes")
    assert (oui.kind, oui.language, yes.language) == (Kind.CONFIRM, "fr", "en")
    assert rules.render("acme", "deals", "welcome", oui.language) == "ACME Deals : c'est fait ! STOP pour arreter."
    assert rules.render("acme", "deals", "welcome", yes.language) == "ACME Deals: you're in! Reply STOP to cancel."


# --- check errors, each at its exact line ----------------------------------------------

ERROR_CASES = [
    # (id, old, new, line, expected fragment)
    ("yaml-syntax", "name: ACME Deals", "name: ACME: Deals", 8, "YAML syntax error: mapping values are not allowed"),
    (
        "yaml-unclosed-flow",
        "          join: [JOIN, DEALS]\n",
        "          join: [JOIN, DEALS\n",
        12,
        "did not find expected ',' or ']' (while parsing a flow sequence at line 11)",
    ),
    (
        "duplicate-key",
        "        name: ACME Deals\n",
        "        name: ACME Deals\n        name: Other\n",
        9,
        "duplicate key 'name' (first at line 8)",
    ),
    (
        "unknown-program-field",
        "        senders:",
        "        sender:",
        9,
        "unknown field 'sender' (did you mean 'senders'?)",
    ),
    (
        "unknown-root-field",
        "version: 1\n",
        "version: 1\nbrand: {}\n",
        2,
        "unknown field 'brand' (did you mean 'brands'?)",
    ),
    (
        "unknown-message",
        "          welcome:",
        "          welcom:",
        14,
        "unknown field 'welcom' (did you mean 'welcome'?)",
    ),
    (
        "unknown-brand-field",
        "    help_contact: support@acme.example\n",
        "    help_contact: support@acme.example\n    colour: red\n",
        6,
        "unknown field 'colour'",
    ),
    (
        "merge-key",
        "        name: ACME Deals\n",
        "        name: ACME Deals\n        <<: {double_opt_in: true}\n",
        9,
        "merge keys (<<) are not supported",
    ),
    (
        "bool-type",
        "        name: ACME Deals\n",
        "        name: ACME Deals\n        double_opt_in: maybe\n",
        9,
        "double_opt_in must be true or false",
    ),
    (
        "senders-not-a-list",
        'senders: ["+15005550006"]',
        'senders: "+15005550006"',
        9,
        "senders must be a non-empty list",
    ),
    (
        "join-not-a-list",
        "join: [JOIN, DEALS]",
        "join: JOIN",
        11,
        "join must be a list of keywords or a map of language to list",
    ),
    ("name-not-a-string", "name: ACME Deals", "name: [ACME, Deals]", 8, "name must be a string"),
    ("name-empty", "name: ACME Deals", "name:", 8, "name must not be empty"),
    (
        "message-not-a-string",
        '          welcome: "{program}: you\'re in! Reply STOP to cancel."',
        "          welcome: [a, b]",
        14,
        "welcome must be a string",
    ),
    ("missing-program-name", "        name: ACME Deals\n", "", 7, "missing required field 'name'"),
    ("missing-version", "version: 1\n", "", 1, "missing required field 'version'"),
    (
        "missing-help-contact",
        "    help_contact: support@acme.example\n",
        "",
        3,
        "missing required field 'help_contact'",
    ),
    ("missing-join", "join: [JOIN, DEALS]", "confirm: [OK]", 10, "missing required field 'join'"),
    ("empty-join", "join: [JOIN, DEALS]", "join: []", 11, "join needs at least one keyword"),
    (
        "missing-welcome",
        '          welcome: "{program}: you\'re in! Reply STOP to cancel."\n',
        "",
        12,
        "missing required message 'welcome'",
    ),
    (
        "missing-doi-prompt",
        '          doi_prompt: "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."\n',
        "",
        12,
        "missing required message 'doi_prompt' (the program uses double opt-in)",
    ),
    (
        "bad-duration",
        "        name: ACME Deals\n",
        "        name: ACME Deals\n        doi_expires_after: 48 hours\n",
        9,
        "bad duration '48 hours'",
    ),
    (
        "zero-expiry",
        "        name: ACME Deals\n",
        "        name: ACME Deals\n        doi_expires_after: 0s\n",
        9,
        "doi_expires_after must be longer than zero",
    ),
    (
        "bad-cooldown",
        "        name: ACME Deals\n",
        "        name: ACME Deals\n        prompt_cooldown: soon\n",
        9,
        "bad duration 'soon'",
    ),
    (
        "short-number",
        'senders: ["+15005550006"]',
        'senders:\n          - "+15005550006"\n          - "+1500555"',
        11,
        "sender '+1500555' is not a phone number in E.164 form",
    ),
    (
        "number-without-plus",
        'senders: ["+15005550006"]',
        'senders: ["15005550006"]',
        9,
        "not a phone number in E.164 form (write +15005550006)",
    ),
    ("number-with-spaces", 'senders: ["+15005550006"]', 'senders: ["+1 500 555 0006"]', 9, "(write +15005550006)"),
    ("bad-mg-sid", 'senders: ["+15005550006"]', 'senders: ["MG123"]', 9, "'MG123' is not a Messaging Service SID"),
    (
        "sender-twice",
        'senders: ["+15005550006"]',
        'senders: ["+15005550006", "+15005550006"]',
        9,
        "sender +15005550006 is listed twice",
    ),
    (
        "bad-country",
        "    programs:\n",
        "    allowed_countries:\n      - US\n      - XX\n    programs:\n",
        8,
        "'XX' is not an ISO 3166 country code",
    ),
    (
        "empty-countries",
        "    programs:\n",
        "    allowed_countries: []\n    programs:\n",
        6,
        "allowed_countries is empty",
    ),
    (
        "bad-region",
        "    programs:\n",
        "    default_region: ZZ\n    programs:\n",
        6,
        "'ZZ' is not an ISO 3166 country code",
    ),
    (
        "bad-language",
        "    programs:\n",
        "    language: english\n    programs:\n",
        6,
        "'english' is not a language code",
    ),
    (
        "bad-message-language",
        '          welcome: "{program}: you\'re in! Reply STOP to cancel."',
        '          welcome: {english: "in!"}',
        14,
        "'english' is not a language code",
    ),
    (
        "unknown-placeholder",
        "you're in!",
        "you're in, {first_name}!",
        14,
        "unknown placeholder {first_name}; use {brand}, {program} or {help_contact}",
    ),
    ("placeholder-format", "you're in!", "you're in, {program!r}!", 14, "unknown placeholder {program!r}"),
    ("unbalanced-brace", "you're in!", "you're in {program!", 14, "unbalanced brace"),
    ("bad-version", "version: 1", "version: 2", 1, "unsupported version '2'"),
    (
        "join-is-stop",
        "join: [JOIN, DEALS]",
        "join:\n            - JOIN\n            - Stop!",
        13,
        "join keyword 'Stop!' of program 'deals' is also a stop keyword",
    ),
    (
        "join-is-help-normalised",
        "join: [JOIN, DEALS]",
        "join: [JOIN, ＨＥＬＰ]",
        11,
        "join keyword 'ＨＥＬＰ' of program 'deals' is also a help keyword",
    ),
    ("join-is-start", "join: [JOIN, DEALS]", "join: [JOIN, unstop]", 11, "is also a start keyword"),
    (
        "join-is-program-stop",
        "join: [JOIN, DEALS]",
        "join: [JOIN, ARRÊT]\n          stop: {fr: [ARRET]}",
        11,
        "join keyword 'ARRÊT' of program 'deals' is also a stop keyword",
    ),
    (
        "confirm-is-start",
        "join: [JOIN, DEALS]",
        "join: [JOIN, DEALS]\n          confirm: [UNSTOP]",
        12,
        "confirm keyword 'UNSTOP' is also a start keyword",
    ),
    (
        "confirm-is-help",
        "join: [JOIN, DEALS]",
        "join: [JOIN, DEALS]\n          confirm: {en: [INFO]}",
        12,
        "confirm keyword 'INFO' is also a help keyword",
    ),
    (
        "join-is-confirm",
        "join: [JOIN, DEALS]",
        "join: [JOIN, Y]",
        11,
        "join keyword 'Y' of program 'deals' is also a confirm keyword",
    ),
    (
        "stop-is-help",
        "join: [JOIN, DEALS]",
        "join: [JOIN, DEALS]\n          stop: [INFO]",
        12,
        "keyword 'INFO' is both a stop and a help keyword",
    ),
    (
        "join-reads-as-opt-out",
        "join: [JOIN, DEALS]",
        'join: [JOIN, "PLEASE STOP"]',
        11,
        "join keyword 'PLEASE STOP' would be read as an opt-out",
    ),
    (
        "join-is-a-paraphrased-opt-out",
        "join: [JOIN, DEALS]",
        'join: [JOIN, "NO MORE TEXTS"]',
        11,
        "would be read as an opt-out",
    ),
    (
        "keyword-without-letters",
        "join: [JOIN, DEALS]",
        'join: [JOIN, "!!"]',
        11,
        "keyword '!!' has no letters or digits",
    ),
    (
        "events-without-secret",
        "    programs:\n",
        "    events:\n      url: https://crm.example/hooks\n    programs:\n",
        6,
        "missing required field 'secret_env'",
    ),
    (
        "events-bad-url",
        "    programs:\n",
        "    events:\n      url: crm.example\n      secret_env: X\n    programs:\n",
        7,
        "'crm.example' is not an http(s) URL",
    ),
    ("no-programs", BASE[BASE.index("    programs:") :], "    programs: {}\n", 6, "at least one program is required"),
    ("bad-brand-key", "  acme:", "  ACME Coffee:", 3, "a brand key is lower-case letters"),
    ("brands-not-a-mapping", BASE[BASE.index("brands:") :], "brands: [acme]\n", 2, "brands must be a mapping"),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_check_error_at_its_line(tmp_path: Path, old: str, new: str, line: int, fragment: str) -> None:
    path = write(tmp_path, edit(BASE, old, new))
    report = check(path)
    hits = [f for f in report.errors if fragment in f.message]
    assert hits, f"no error containing {fragment!r} in {[str(f) for f in report.errors]}"
    assert hits[0].line == line, [str(f) for f in report.errors]
    assert str(hits[0]) == f"{path}:{line}: {hits[0].message}"
    assert "\n" not in str(hits[0])
    # load_rules refuses the same file with the first error, one line
    with pytest.raises(ConfigError) as raised:
        load_rules(path)
    assert str(raised.value) == str(report.errors[0])
    assert str(raised.value).startswith(f"{path}:")


def test_base_fixture_is_clean(tmp_path: Path) -> None:
    assert check(write(tmp_path, BASE)) == CheckReport(errors=[], warnings=[])
    assert check(write(tmp_path, TWO)) == CheckReport(errors=[], warnings=[])


def test_doi_prompt_is_not_required_without_double_opt_in(tmp_path: Path) -> None:
    text = edit(BASE, "        name: ACME Deals\n", "        name: ACME Deals\n        double_opt_in: false\n")
    text = edit(
        text,
        '          doi_prompt: "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."\n',
        "",
    )
    assert check(write(tmp_path, text)).errors == []
    assert load_rules(tmp_path / "keywords.yaml").program("acme", "deals").double_opt_in is False


def test_empty_file(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "# nothing here\n")
    assert [(f.line, f.message) for f in errors] == [(1, "the file is empty; it needs version: 1 and brands")]


def test_unreadable_file_has_no_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    report = check(missing)
    assert len(report.errors) == 1 and report.errors[0].line == 0
    assert str(report.errors[0]).startswith(f"{missing}: cannot read the keywords file")
    with pytest.raises(ConfigError, match="cannot read the keywords file"):
        load_rules(missing)


def test_check_reports_every_error_sorted_by_line(tmp_path: Path) -> None:
    text = edit(BASE, "name: ACME Deals", "name: ACME Deals\n        prompt_cooldown: later")
    text = edit(text, "you're in!", "you're in {nope}!")
    text = edit(text, "version: 1", "version: 3")
    errors = errors_of(tmp_path, text)
    assert [f.line for f in errors] == [1, 9, 15]
    with pytest.raises(ConfigError, match=r":1: unsupported version '3'"):
        load_rules(tmp_path / "keywords.yaml")


def test_a_sender_used_by_two_brands(tmp_path: Path) -> None:
    text = BASE + edit(SECOND_BRAND, 'senders: ["+15005550007"]', 'senders: ["+15005550006"]')
    errors = errors_of(tmp_path, text)
    assert [(f.line, f.message) for f in errors] == [
        (24, "sender +15005550006 is already used by brand 'acme' (line 9); a sender belongs to one brand")
    ]


def test_two_brands_on_their_own_senders_load(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, BASE + SECOND_BRAND))
    bistro = rules.for_sender("+15005550007")
    assert bistro is not None and bistro.brand.key == "bistro"
    assert bistro.match("MENU").program == "menu"
    acme = rules.for_sender("+15005550006")
    assert acme is not None and acme.match("MENU").kind is None


def test_one_join_keyword_for_two_programs_on_one_sender(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, edit(TWO, "join: [NEWS]", "join: [NEWS, deals]"))
    assert [(f.line, f.message) for f in errors] == [
        (25, "join keyword 'deals' is used by programs 'deals' (line 14) and 'news' on sender +15005550006")
    ]


def test_one_join_keyword_on_two_different_senders_is_fine(tmp_path: Path) -> None:
    text = edit(
        TWO,
        'senders: ["+15005550006"]\n        keywords:\n          join: [NEWS]',
        'senders: ["+15005550001"]\n        keywords:\n          join: [NEWS, DEALS]',
    )
    rules = load_rules(write(tmp_path, text))
    first, second = rules.for_sender("+15005550006"), rules.for_sender("+15005550001")
    assert first is not None and second is not None
    assert (first.match("DEALS").program, second.match("DEALS").program) == ("deals", "news")


def test_a_join_keyword_that_is_another_programs_confirm(tmp_path: Path) -> None:
    text = edit(TWO, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          confirm: [OK]")
    text = edit(text, "join: [NEWS]", "join: [NEWS, OK]")
    errors = errors_of(tmp_path, text)
    assert [(f.line, f.message) for f in errors] == [
        (26, "join keyword 'OK' of program 'news' is also a confirm keyword of program 'deals' on sender +15005550006")
    ]


def test_brand_level_messages_are_required_on_a_shared_sender(tmp_path: Path) -> None:
    text = edit(TWO, TWO[TWO.index("    messages:\n      stop:") : TWO.index("    programs:")], "")
    errors = errors_of(tmp_path, text)
    assert [(f.line, f.message) for f in errors] == [
        (
            3,
            "brand 'acme': missing brand-level message 'stop', required because sender +15005550006 hosts programs deals, news",
        ),
        (
            3,
            "brand 'acme': missing brand-level message 'help', required because sender +15005550006 hosts programs deals, news",
        ),
    ]
    # only help missing: the error points at the brand's messages block
    text = edit(
        TWO, '      help: "ACME Coffee. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."\n', ""
    )
    assert [(f.line, f.message.split(",")[0]) for f in errors_of(tmp_path, text)] == [
        (6, "brand 'acme': missing brand-level message 'help'")
    ]


def test_brand_level_messages_are_reported_once_for_several_shared_senders(tmp_path: Path) -> None:
    text = edit(TWO, TWO[TWO.index("    messages:\n      stop:") : TWO.index("    programs:")], "")
    text = text.replace('senders: ["+15005550006"]', 'senders: ["+15005550006", "+15005550001"]')
    errors = errors_of(tmp_path, text)
    assert [(f.line, f.message.split(",")[0]) for f in errors] == [
        (3, "brand 'acme': missing brand-level message 'stop'"),
        (3, "brand 'acme': missing brand-level message 'help'"),
    ]


def test_brand_level_messages_are_not_required_when_senders_are_not_shared(tmp_path: Path) -> None:
    text = edit(TWO, TWO[TWO.index("    messages:\n      stop:") : TWO.index("    programs:")], "")
    text = edit(
        text,
        'senders: ["+15005550006"]\n        keywords:\n          join: [NEWS]',
        'senders: ["+15005550001"]\n        keywords:\n          join: [NEWS]',
    )
    assert errors_of(tmp_path, text) == []


def test_precedence_a_program_cannot_take_help_as_a_join_keyword(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, edit(TWO, "join: [NEWS]", "join: [NEWS, HELP]"))
    assert [(f.line, f.message) for f in errors] == [
        (25, "join keyword 'HELP' of program 'news' is also a help keyword")
    ]


def test_a_program_stop_keyword_counts_against_other_programs_on_the_sender(tmp_path: Path) -> None:
    text = edit(TWO, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          stop: [BASTA]")
    text = edit(text, "join: [NEWS]", "join: [NEWS, basta]")
    errors = errors_of(tmp_path, text)
    assert [(f.line, f.message) for f in errors] == [
        (26, "join keyword 'basta' of program 'news' is also a stop keyword")
    ]


# --- check warnings --------------------------------------------------------------------

DOI = '"{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."'


NO_INSTRUCTIONS = "should tell how to stop and get help (e.g. 'Reply HELP for help, STOP to cancel')"
NO_RATES = "should say 'Msg&data rates may apply'"
NOT_A_KEYWORD = "tells people to send HELPME, which is not a confirm or stop or help keyword of this program in en"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ('"{program}: reply YES to confirm. Msg&data rates may apply. Reply STOP to cancel."', [NO_INSTRUCTIONS]),
        ('"{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help."', [NO_INSTRUCTIONS]),
        ('"{program}: reply YES to confirm. Reply HELP for help, STOP to cancel."', [NO_RATES]),
        ('"{program}: reply YES. Rates may apply. Text HELPME or STOPPED."', [NO_INSTRUCTIONS, NO_RATES, NOT_A_KEYWORD]),
    ],
    ids=["no-help", "no-stop", "no-rates", "neither-and-words-must-be-whole"],
)
def test_doi_prompt_warnings(tmp_path: Path, prompt: str, expected: list[str]) -> None:
    warnings = warnings_of(tmp_path, edit(BASE, DOI, prompt))
    assert [(f.line, f.message) for f in warnings] == [
        (13, f"program 'acme/deals' message 'doi_prompt' (en) {text}") for text in expected
    ]


@pytest.mark.parametrize(
    "prompt",
    [
        '"{program}: reply YES to confirm. Msg & data rates may apply. Reply HELP for help, STOP to cancel."',
        '"{program}: reply YES to confirm. MSG&DATA RATES MAY APPLY. reply help for help, stop to cancel."',
        '"{program}: reply YES to confirm. Message and data rates may apply. Text INFO for help, QUIT to quit."',
        '"{program}: reply YES to confirm. Msg &data rates may apply. Reply HELP for help or OPT OUT to cancel."',
    ],
    ids=["spaces-around-ampersand", "case-insensitive", "long-form-and-other-keywords", "two-word-stop-keyword"],
)
def test_doi_prompt_variants_that_pass(tmp_path: Path, prompt: str) -> None:
    assert warnings_of(tmp_path, edit(BASE, DOI, prompt)) == []


def test_french_doi_prompt_with_french_disclosure_and_keywords(tmp_path: Path) -> None:
    text = edit(
        BASE, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          help: {fr: [AIDE]}\n          confirm: {fr: [OUI]}"
    )
    # OUI and AIDE are French, so the replies they draw need French text too.
    text = edit(text, 'welcome: "{program}: you\'re in! Reply STOP to cancel."',
                'welcome: {en: "{program}: you\'re in! Reply STOP to cancel.", fr: "{program} : inscrit ! STOP pour arreter."}')
    text = edit(text, 'help: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."',
                'help: {en: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel.", '
                'fr: "{program}. Aide : {help_contact}. STOP pour arreter."}')
    prompt = (
        "{en: " + DOI + ', fr: "{program} : OUI pour confirmer. Des frais de messagerie et de données peuvent '
        "s'appliquer. AIDE pour l'aide, STOP pour arreter.\"}"
    )
    assert warnings_of(tmp_path, edit(text, DOI, prompt)) == []
    missing_help = prompt.replace("AIDE pour l'aide, ", "")
    warnings = warnings_of(tmp_path, edit(text, DOI, missing_help))
    assert [(f.line, "(fr)" in f.message, "how to stop and get help" in f.message) for f in warnings] == [
        (15, True, True)
    ]


@pytest.mark.parametrize("disclosure", [
    "Pueden aplicarse tarifas de mensajes y datos.",
    "Se pueden aplicar tarifas de msj y datos.",
    "Tarifas de mensajes y datos pueden aplicar.",
], ids=["pueden-aplicarse", "se-pueden-aplicar", "tarifas-first"])
def test_spanish_doi_prompt_with_spanish_disclosure(tmp_path: Path, disclosure: str) -> None:
    """A bilingual US program's Spanish prompt discloses charges in Spanish: no permanent warning."""
    text = edit(
        BASE, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          help: {es: [AYUDA]}\n          confirm: {es: [SI]}"
    )
    text = edit(text, 'welcome: "{program}: you\'re in! Reply STOP to cancel."',
                'welcome: {en: "{program}: you\'re in! Reply STOP to cancel.", es: "{program}: ¡listo! STOP para salir."}')
    text = edit(text, 'help: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."',
                'help: {en: "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel.", '
                'es: "{program}. Ayuda: {help_contact}. STOP para salir."}')
    prompt = "{en: " + DOI + ', es: "{program}: responde SI para confirmar. ' + disclosure + \
        ' AYUDA para ayuda, STOP para salir."}'
    assert warnings_of(tmp_path, edit(text, DOI, prompt)) == []
    without = prompt.replace(disclosure + " ", "")
    assert [NO_RATES in f.message and "(es)" in f.message for f in warnings_of(tmp_path, edit(text, DOI, without))] \
        == [True]


def test_help_without_the_help_contact(tmp_path: Path) -> None:
    old = '"{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."'
    warnings = warnings_of(tmp_path, edit(BASE, old, '"{program}. Msg&data rates may apply. Reply STOP to cancel."'))
    assert [(f.line, f.message) for f in warnings] == [
        (16, "program 'acme/deals' message 'help' (en) does not give the help contact; include {help_contact}")
    ]
    assert (
        warnings_of(tmp_path, edit(BASE, old, '"{program}. Write to SUPPORT@acme.example. Reply STOP to cancel."'))
        == []
    )


def test_brand_level_help_without_the_help_contact(tmp_path: Path) -> None:
    old = '"ACME Coffee. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."'
    warnings = warnings_of(tmp_path, edit(TWO, old, '"ACME Coffee alerts. Reply STOP to cancel."'))
    assert [(f.line, f.message.split(" does ")[0]) for f in warnings] == [(8, "brand 'acme' message 'help' (en)")]


@pytest.mark.parametrize(
    ("welcome", "warned", "detail"),
    [
        ("A" * 160, False, ""),
        ("A" * 161, True, "2 GSM-7 segments once rendered (161 characters; one segment is 160)"),
        ("€" * 80, False, ""),  # extension-table characters cost two septets
        ("€" * 81, True, "2 GSM-7 segments"),
        ("é" * 160, False, ""),  # é is in the GSM-7 basic table
        ("ê" * 70, False, ""),  # ê is not: UCS-2
        ("ê" * 71, True, "2 UCS-2 segments once rendered (71 characters; one segment is 70)"),
        ("{program} " + "A" * 150, True, "2 GSM-7 segments"),  # measured after rendering: ACME Deals + 151
        ("{program} " + "A" * 149, False, ""),
    ],
    ids=[
        "gsm-160",
        "gsm-161",
        "euro-80",
        "euro-81",
        "e-acute-160",
        "e-circumflex-70",
        "e-circumflex-71",
        "rendered-161",
        "rendered-160",
    ],
)
def test_message_segment_warning(tmp_path: Path, welcome: str, warned: bool, detail: str) -> None:
    old = '"{program}: you\'re in! Reply STOP to cancel."'
    warnings = warnings_of(tmp_path, edit(BASE, old, f'"{welcome}"'))
    if warned:
        assert len(warnings) == 1 and warnings[0].line == 14
        assert warnings[0].message.startswith(f"program 'acme/deals' message 'welcome' (en) is {detail}")
    else:
        assert warnings == []


def test_yes_on_a_messaging_service_sender(tmp_path: Path) -> None:
    text = edit(BASE, 'senders: ["+15005550006"]', f'senders: ["{MG}"]')
    warnings = warnings_of(tmp_path, text)
    assert [f.line for f in warnings] == [9]
    assert "Twilio Advanced Opt-Out claims YES as an opt-in keyword by default" in warnings[0].message
    # written in the program: the warning points at the keyword
    own = edit(
        text, "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          confirm:\n            - OK\n            - yes"
    )
    assert [f.line for f in warnings_of(tmp_path, own)] == [14]
    # a number is not a Messaging Service
    assert warnings_of(tmp_path, BASE) == []
    # no YES among the confirm keywords: no warning
    no_yes = edit(text, "version: 1\n", "version: 1\ndefaults:\n  keywords:\n    confirm: [OK]\n")
    assert warnings_of(tmp_path, edit(no_yes, "reply YES", "reply OK")) == []


def test_warnings_do_not_stop_loading(tmp_path: Path) -> None:
    text = edit(BASE, DOI, '"{program}: reply YES."')
    assert len(check(write(tmp_path, text)).warnings) == 2
    assert (
        load_rules(tmp_path / "keywords.yaml").program("acme", "deals").messages["doi_prompt"]["en"]
        == "{program}: reply YES."
    )


# --- durations and segments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", timedelta(hours=48)),
        ("10m", timedelta(minutes=10)),
        ("30s", timedelta(seconds=30)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        (" 48H ", timedelta(hours=48)),
    ],
    ids=["hours", "minutes", "seconds", "days", "combined", "all-units", "over-60", "zero", "spaces-and-case"],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "48", "h", "1.5h", "-1h", "48 hours", "1m1h", "2w", "h48"], ids=repr)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("GSM-7", 1)),
        ("Reply STOP to cancel", ("GSM-7", 1)),
        ("a" * 160, ("GSM-7", 1)),
        ("a" * 161, ("GSM-7", 2)),
        ("a" * 306, ("GSM-7", 2)),
        ("a" * 307, ("GSM-7", 3)),
        ("[]" * 40, ("GSM-7", 1)),
        ("{}" * 40 + "a", ("GSM-7", 2)),
        ("é" * 160, ("GSM-7", 1)),
        ("ê", ("UCS-2", 1)),
        ("ê" * 70, ("UCS-2", 1)),
        ("ê" * 71, ("UCS-2", 2)),
        ("ê" * 134, ("UCS-2", 2)),
        ("ê" * 135, ("UCS-2", 3)),
        ("😀" * 35, ("UCS-2", 1)),  # an emoji is two UTF-16 units
        ("😀" * 36, ("UCS-2", 2)),
        ("’", ("UCS-2", 1)),  # the curly apostrophe is not GSM-7
    ],
    ids=[
        "empty", "short", "gsm-160", "gsm-161", "gsm-306", "gsm-307", "brackets-80", "braces-81",
        "e-acute", "e-circumflex", "ucs2-70", "ucs2-71", "ucs2-134", "ucs2-135", "emoji-35", "emoji-36", "curly-apostrophe",
    ],
)  # fmt: skip
def test_segments(text: str, expected: tuple[str, int]) -> None:
    assert segments(text) == expected


# --- what messages tell people to send, and the languages replies are in ---------------

WELCOME = '"{program}: you\'re in! Reply STOP to cancel."'
EXPIRED = '          doi_expired: "{program}: expired. Text JOIN to subscribe."\n'


FR_DOI = ('"{program} : répondez OUI. Des frais de messagerie et de données peuvent s\'appliquer. '
          'HELP pour l\'aide, STOP pour arreter."')


def with_expired(text: str, line: str = EXPIRED) -> str:
    return text.replace('          already_subscribed:', line + '          already_subscribed:', 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (DOI, '"{program}: reply OK to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."',
         [(13, "message 'doi_prompt' (en) tells people to send OK, which is not a confirm or stop or help keyword "
               "of this program in en")]),
        (DOI, '"{program}: reply JOIN to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel."',
         [(13, "message 'doi_prompt' (en) tells people to send JOIN, which is not a confirm or stop or help "
               "keyword of this program in en")]),
        (DOI, '{en: ' + DOI + ', fr: ' + FR_DOI + '}',
         [(13, "message 'doi_prompt' (fr) tells people to send OUI, which is not a confirm or stop or help "
               "keyword of this program in fr")]),
        (WELCOME, '"{program}: you\'re in! Reply QUITTER to cancel."',
         [(14, "message 'welcome' (en) tells people to send QUITTER, which is not a any keyword of this program "
               "in en")]),
        (EXPIRED, '          doi_expired: "{program}: expired. Text SIGNUP to subscribe."\n',
         [(17, "message 'doi_expired' (en) tells people to send SIGNUP, which is not a join or stop or help "
               "keyword of this program in en")]),
        (EXPIRED, EXPIRED, []),
        (WELCOME, '"{program}: you\'re in! Reply OPT OUT to cancel, HELP for help."', []),
        (WELCOME, '"{program}: you\'re in! Reply to this text or text us anytime. Reply Y to stay."', []),
        (WELCOME, '"{program}: you\'re in! Reply STOP NOW to cancel."', []),
    ],
    ids=["prompt-names-no-confirm-keyword", "prompt-names-a-join-keyword", "french-oui-not-a-french-confirm",
         "welcome-names-no-keyword", "expiry-names-no-join-keyword", "expiry-names-join", "two-word-keyword",
         "lowercase-and-confirm-in-welcome", "keyword-then-capitals"],
)
def test_messages_name_only_keywords_of_their_program(tmp_path: Path, old: str, new: str, expected: list) -> None:
    text = with_expired(BASE, new) if old == EXPIRED else edit(BASE, old, new)
    warnings = warnings_of(tmp_path, text)
    assert [(f.line, f.message) for f in warnings] == [(line, f"program 'acme/deals' {m}") for line, m in expected]


def test_a_french_confirm_keyword_makes_the_french_prompt_right(tmp_path: Path) -> None:
    prompt = '{en: ' + DOI + ', fr: ' + FR_DOI + '}'
    text = edit(edit(BASE, DOI, prompt), "join: [JOIN, DEALS]", "join: [JOIN, DEALS]\n          confirm: [OUI]")
    assert [f.message for f in warnings_of(tmp_path, text) if "tells people" in f.message] == []


def test_brand_level_messages_may_name_any_programs_keyword(tmp_path: Path) -> None:
    old = '"ACME Coffee. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel."'
    ok = warnings_of(tmp_path, edit(TWO, old, '"ACME Coffee. Help: {help_contact}. Text NEWS for news, DEALS for deals."'))
    assert ok == []
    bad = warnings_of(tmp_path, edit(TWO, old, '"ACME Coffee. Help: {help_contact}. Text LUNCH for lunch."'))
    assert [(f.line, f.message) for f in bad] == [
        (8, "brand 'acme' message 'help' (en) tells people to send LUNCH, which is not a any keyword of its "
            "programs in en")]


def test_a_join_keyword_without_already_subscribed(tmp_path: Path) -> None:
    text = edit(BASE, '          already_subscribed: "{program}: you\'re already subscribed. Reply STOP to cancel."\n', "")
    assert [(f.line, f.message) for f in warnings_of(tmp_path, text)] == [
        (12, "program 'acme/deals' has no 'already_subscribed' message: a subscriber who texts a join keyword "
             "again gets no answer")]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    help_contact: support@acme.example\n", "    help_contact: support@acme.example\n    language: fr\n",
         [(15, "program 'acme/deals' message 'welcome' has no fr text, the program's language; its replies would "
               "be in en")]),
        ("        name: ACME Deals\n", "        name: ACME Deals\n        language: fr\n",
         [(15, "program 'acme/deals' message 'welcome' has no fr text, the program's language; its replies would "
               "be in en")]),
        ("join: [JOIN, DEALS]", "join: {en: [JOIN], fr: [OFFRES]}",
         [(13, "program 'acme/deals' message 'doi_prompt' has no fr text, so a join keyword in fr ('OFFRES', "
               "line 11) is answered in en"),
          (17, "program 'acme/deals' message 'already_subscribed' has no fr text, so a join keyword in fr "
               "('OFFRES', line 11) is answered in en")]),
        ("join: [JOIN, DEALS]", "join: {en: [JOIN], pt-BR: [OFERTAS]}",
         [(13, "program 'acme/deals' message 'doi_prompt' has no pt-BR text, so a join keyword in pt-BR "
               "('OFERTAS', line 11) is answered in en"),
          (17, "program 'acme/deals' message 'already_subscribed' has no pt-BR text, so a join keyword in pt-BR "
               "('OFERTAS', line 11) is answered in en")]),
    ],
    ids=["brand-language-fr", "program-language-fr", "french-join-keyword", "regional-join-keyword"],
)
def test_replies_have_text_in_the_language_they_are_sent_in(tmp_path: Path, old: str, new: str, expected: Any) -> None:
    # The welcome is written as English explicitly (a plain string takes its owner's language).
    text = edit(edit(BASE, old, new), "welcome: " + WELCOME, "welcome: {en: " + WELCOME + "}")
    warnings = [(f.line, f.message) for f in warnings_of(tmp_path, text) if " has no " in f.message]
    assert warnings == expected


def test_a_regional_keyword_is_answered_from_its_base_language_text(tmp_path: Path) -> None:
    text = edit(BASE, "join: [JOIN, DEALS]", "join: {en: [JOIN], fr-CA: [OFFRES]}")
    text = edit(text, "doi_prompt: " + DOI, "doi_prompt: {en: " + DOI + ", fr: " + FR_DOI + "}")
    text = edit(text, "already_subscribed: \"{program}: you're already subscribed. Reply STOP to cancel.\"",
                "already_subscribed: {en: \"{program}: you're already subscribed. Reply STOP to cancel.\", "
                "fr: \"{program} : déjà inscrit. STOP pour arreter.\"}")
    assert [f.message for f in warnings_of(tmp_path, text) if " has no " in f.message] == []


def test_brand_level_message_without_the_brand_language(tmp_path: Path) -> None:
    text = edit(TWO, "    help_contact: support@acme.example\n    messages:",
                "    help_contact: support@acme.example\n    language: fr\n    messages:")
    text = edit(text, 'stop: "ACME: you\'re unsubscribed from all ACME texts. Help: {help_contact}"',
                'stop: {en: "ACME: you\'re unsubscribed from all ACME texts. Help: {help_contact}"}')
    brand = [(f.line, f.message) for f in warnings_of(tmp_path, text) if f.message.startswith("brand ")]
    assert brand == [
        (8, "brand 'acme' message 'stop' has no fr text, the brand's language; its replies would be in en"),
    ]


def test_shipped_file_answers_french_keywords_in_french() -> None:
    rules = load_rules(SHIPPED)
    assert rules.render("acme", "deals", "doi_expired", "fr").startswith("ACME Deals : votre demande a expiré")
    assert rules.render("bistro", "menu", "already_subscribed", "en").startswith("Menu du jour: you're already")
