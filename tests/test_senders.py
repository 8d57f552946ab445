"""Senders in keywords.yaml: ids or maps {id, provider, rate}, default rates by kind, errors at their line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.keywords import SenderConfig, check, load_rules
from app.senders import DEFAULT_RATES, LONG_CODE, SERVICE, SHORT_CODE, TOLL_FREE, sender_kind
from tests.test_keywords import BASE, MG, MG_UPPER, TWO, edit, write

SENDERS = 'senders: ["+15005550006"]'  # line 9 of BASE
TOLL_FREE_NUMBER = "+18885550100"  # 888: a NANP toll-free code
SHORT = "384387"  # the short code courier's captured Twilio payloads post in To

# TWO's programs share +15005550006: deals lists it at line 12, news at line 23.
DEALS_SENDERS = 'senders: ["+15005550006"]\n        keywords:\n          join: [JOIN, DEALS]'
NEWS_SENDERS = 'senders: ["+15005550006"]\n        keywords:\n          join: [NEWS]'


def deals_senders(text: str, senders: str) -> str:
    return edit(text, DEALS_SENDERS, DEALS_SENDERS.replace('senders: ["+15005550006"]', senders))


def news_senders(text: str, senders: str) -> str:
    return edit(text, NEWS_SENDERS, NEWS_SENDERS.replace('senders: ["+15005550006"]', senders))


# --- the forms a sender takes, and what each becomes ---------------------------------

LOADS = [
    # id, written as a string or a map: (sender as written, expected config)
    ("long-code", '"+15005550006"', SenderConfig("+15005550006", LONG_CODE, None, 1.0)),
    ("toll-free", f'"{TOLL_FREE_NUMBER}"', SenderConfig(TOLL_FREE_NUMBER, TOLL_FREE, None, 3.0)),
    ("short-code", f'"{SHORT}"', SenderConfig(SHORT, SHORT_CODE, None, 100.0)),
    ("service", f'"{MG}"', SenderConfig(MG, SERVICE, None, 100.0)),
    ("map-id-only", '{id: "+15005550006"}', SenderConfig("+15005550006", LONG_CODE, None, 1.0)),
    ("map-unquoted-id", "{id: +15005550006}", SenderConfig("+15005550006", LONG_CODE, None, 1.0)),
    ("map-provider-rate", '{id: "+15005550006", provider: telnyx, rate: 2}',
     SenderConfig("+15005550006", LONG_CODE, "telnyx", 2.0)),
    ("map-short-code", f"{{id: {SHORT}, provider: twilio, rate: 100}}", SenderConfig(SHORT, SHORT_CODE, "twilio", 100.0)),
    ("map-service", f"{{id: {MG}, provider: twilio}}", SenderConfig(MG, SERVICE, "twilio", 100.0)),
    ("map-float-rate", f'{{id: "{TOLL_FREE_NUMBER}", rate: 0.5}}', SenderConfig(TOLL_FREE_NUMBER, TOLL_FREE, None, 0.5)),
    ("map-most-rate", f"{{id: {SHORT}, rate: 10_000}}", SenderConfig(SHORT, SHORT_CODE, None, 10000.0)),
    ("provider-any-case", '{id: "+15005550006", provider: Vonage}', SenderConfig("+15005550006", LONG_CODE, "vonage", 1.0)),
    ("every-provider-plivo", '{id: "+15005550006", provider: plivo}', SenderConfig("+15005550006", LONG_CODE, "plivo", 1.0)),
    ("console", '{id: "+15005550006", provider: console}', SenderConfig("+15005550006", LONG_CODE, "console", 1.0)),
]


@pytest.mark.parametrize(("written", "expected"), [c[1:] for c in LOADS], ids=[c[0] for c in LOADS])
def test_a_sender_loads_with_its_defaults(tmp_path: Path, written: str, expected: SenderConfig) -> None:
    path = write(tmp_path, edit(BASE, SENDERS, f"senders: [{written}]"))
    assert check(path).errors == []
    rules = load_rules(path)
    assert rules.program("acme", "deals").senders == (expected.id,)  # ids only, as before
    assert rules.sender_config(expected.id) == expected
    assert dict(rules.sender_configs) == {expected.id: expected}
    assert rules.for_sender(expected.id) is not None or expected.kind == SERVICE
    if expected.kind == SERVICE:
        assert rules.for_sender("+15005550099", expected.id) is not None


def test_a_block_style_map_sender(tmp_path: Path) -> None:
    text = edit(BASE, SENDERS, 'senders:\n          - id: "+15005550006"\n            provider: plivo\n'
                               '            rate: 10\n          - "384387"')
    rules = load_rules(write(tmp_path, text))
    assert rules.program("acme", "deals").senders == ("+15005550006", "384387")
    assert rules.sender_config("+15005550006") == SenderConfig("+15005550006", LONG_CODE, "plivo", 10.0)
    assert rules.sender_config("384387") == SenderConfig("384387", SHORT_CODE, None, 100.0)


KINDS = [
    ("us-long-code", "+14155550123", LONG_CODE, 1.0),
    ("magic-test-number", "+15005550006", LONG_CODE, 1.0),
    ("french-mobile", "+33612345678", LONG_CODE, 1.0),
    ("us-toll-free-888", TOLL_FREE_NUMBER, TOLL_FREE, 3.0),
    ("us-toll-free-800", "+18005550100", TOLL_FREE, 3.0),
    ("uk-freephone", "+448000111111", TOLL_FREE, 3.0),
    ("short-code", SHORT, SHORT_CODE, 100.0),
    ("three-digit-short-code", "123", SHORT_CODE, 100.0),
    ("service", MG, SERVICE, 100.0),
    ("service-upper-case", MG_UPPER, SERVICE, 100.0),
]


@pytest.mark.parametrize(("sender", "kind", "rate"), [c[1:] for c in KINDS], ids=[c[0] for c in KINDS])
def test_the_default_rate_of_each_kind(sender: str, kind: str, rate: float) -> None:
    assert sender_kind(sender) == kind
    assert SenderConfig.of(sender) == SenderConfig(sender, kind, None, rate)
    assert DEFAULT_RATES[kind] == rate
    # a configured rate wins over the default
    assert SenderConfig.of(sender, "twilio", 7).rate == 7.0


def test_sender_config_looks_up_like_for_sender(tmp_path: Path) -> None:
    text = edit(BASE, SENDERS, f'senders: ["+15005550006", {{id: "{MG_UPPER}", provider: twilio, rate: 50}}]')
    rules = load_rules(write(tmp_path, text))
    expected = SenderConfig(MG_UPPER, SERVICE, "twilio", 50.0)
    assert rules.sender_config(MG) == rules.sender_config(MG_UPPER) == expected  # Twilio posts lower-case hex
    assert rules.sender_configs[MG_UPPER] == expected  # keyed by the id as configured
    assert list(rules.sender_configs) == ["+15005550006", MG_UPPER]
    assert rules.sender_config("+15005550099") is None
    assert rules.sender_config("MG" + "f" * 32) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        expected.rate = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.sender_configs["+1"] = expected  # type: ignore[index]


def test_the_shipped_file_has_a_config_for_every_sender() -> None:
    rules = load_rules(Path(__file__).resolve().parent.parent / "keywords.yaml")
    listed = {s for b in rules.brands.values() for p in b.programs.values() for s in p.senders}
    assert set(rules.sender_configs) == listed
    assert all(rules.sender_config(s) is not None for s in listed)


# --- errors, each at its line -------------------------------------------------------------

ERRORS = [
    # (id, replacement for line 9's senders, line, fragment)
    ("unknown-field", 'senders: [{id: "+15005550006", rte: 5}]', 9, "sender: unknown field 'rte' (did you mean 'rate'?)"),
    ("unknown-field-far", 'senders: [{id: "+15005550006", colour: red}]', 9,
     "sender: unknown field 'colour'; expected one of id, provider, rate"),
    ("missing-id", "senders: [{provider: twilio}]", 9, "sender: missing required field 'id'"),
    ("missing-id-block", "senders:\n          - provider: twilio\n            rate: 5", 10,
     "sender: missing required field 'id'"),
    ("empty-map", "senders: [{}]", 9, "sender: missing required field 'id'"),
    ("empty-id", "senders: [{id: }]", 9, "sender must not be empty"),
    ("bad-id-in-map", 'senders: [{id: "+1500555"}]', 9, "sender '+1500555' is not a phone number in E.164 form"),
    ("bad-mg-in-map", "senders: [{id: MG123, provider: twilio}]", 9, "'MG123' is not a Messaging Service SID"),
    ("list-as-sender", 'senders: [["+15005550006"]]', 9, "a sender is an id (a number, short code or MG… SID) or a map"),
    ("bad-provider", 'senders: [{id: "+15005550006", provider: twillio}]', 9,
     "sender +15005550006.provider: unknown provider 'twillio' (did you mean 'twilio'?); "
     "expected one of console, twilio, telnyx, plivo, vonage"),
    ("bad-provider-block", 'senders:\n          - id: "+15005550006"\n            provider: sinch', 11,
     "unknown provider 'sinch'; expected one of"),
    ("provider-not-a-string", 'senders: [{id: "+15005550006", provider: [twilio]}]', 9, "provider must be a string"),
    ("service-on-telnyx", f"senders: [{{id: {MG}, provider: telnyx}}]", 9,
     f"sender {MG}.provider: a Messaging Service (MG…) is Twilio's; its provider can only be twilio, not telnyx"),
    ("rate-zero", 'senders: [{id: "+15005550006", rate: 0}]', 9, "sender +15005550006.rate: '0' is not a rate"),
    ("rate-negative", 'senders: [{id: "+15005550006", rate: -1}]', 9, "'-1' is not a rate"),
    ("rate-too-high", 'senders: [{id: "+15005550006", rate: 10001}]', 9,
     "'10001' is not a rate; write the most messages a second sent from it, a number above 0 and at most 10000"),
    ("rate-word", 'senders: [{id: "+15005550006", rate: fast}]', 9, "'fast' is not a rate"),
    ("rate-quoted", 'senders: [{id: "+15005550006", rate: "5"}]', 9, "'5' is not a rate"),
    ("rate-bool", 'senders: [{id: "+15005550006", rate: yes}]', 9, "'yes' is not a rate"),
    ("rate-infinite", 'senders: [{id: "+15005550006", rate: .inf}]', 9, "'.inf' is not a rate"),
    ("rate-nan", 'senders: [{id: "+15005550006", rate: .nan}]', 9, "'.nan' is not a rate"),
    ("rate-hex", 'senders: [{id: "+15005550006", rate: 0x10}]', 9, "'0x10' is not a rate"),
    ("rate-list", 'senders:\n          - id: "+15005550006"\n            rate: [1]', 11, "rate: must be a number"),
    ("listed-twice-string-and-map", 'senders: ["+15005550006", {id: "+15005550006", rate: 1}]', 9,
     "sender +15005550006 is listed twice"),
    ("listed-twice-service-case", f'senders: [{{id: "{MG}"}}, "{MG_UPPER}"]', 9, f"sender {MG_UPPER} is listed twice"),
]


@pytest.mark.parametrize(("new", "line", "fragment"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_a_bad_sender_is_an_error_at_its_line(tmp_path: Path, new: str, line: int, fragment: str) -> None:
    path = write(tmp_path, edit(BASE, SENDERS, new))
    report = check(path)
    hits = [f for f in report.errors if fragment in f.message]
    assert hits, f"no error containing {fragment!r} in {[str(f) for f in report.errors]}"
    assert hits[0].line == line, [str(f) for f in report.errors]
    assert str(hits[0]).startswith(f"{path}:{line}: program 'acme/deals'")
    with pytest.raises(ConfigError) as raised:
        load_rules(path)
    assert str(raised.value) == str(report.errors[0])


# --- one sender, several programs ------------------------------------------------------------


def test_a_map_sender_shared_by_two_programs(tmp_path: Path) -> None:
    sender = '{id: "+15005550006", provider: twilio, rate: 5}'
    text = news_senders(deals_senders(TWO, f"senders: [{sender}]"), f"senders: [{sender}]")
    path = write(tmp_path, text)
    assert check(path).errors == []
    rules = load_rules(path)
    assert rules.sender_config("+15005550006") == SenderConfig("+15005550006", LONG_CODE, "twilio", 5.0)
    hosted = rules.for_sender("+15005550006")
    assert hosted is not None and [p.key for p in hosted.programs] == ["deals", "news"]
    assert rules.sender_of("acme", "news", "+15005550006", None) == "+15005550006"


SHARED = [
    # (id, deals' senders, news' senders, error fragment or None)
    ("same-map", '[{id: "+15005550006", provider: plivo}]', '[{id: "+15005550006", provider: plivo}]', None),
    ("map-without-options-and-string", '[{id: "+15005550006"}]', '["+15005550006"]', None),
    ("default-rate-written-or-not", '[{id: "+15005550006", rate: 1}]', '["+15005550006"]', None),
    ("service-in-two-cases", f'[{{id: "{MG}", provider: twilio}}]', f'[{{id: "{MG_UPPER}", provider: twilio}}]', None),
    ("provider-here-not-there", '[{id: "+15005550006", provider: telnyx}]', '["+15005550006"]',
     "program 'acme/news': sender +15005550006 has provider the default provider, rate 1/s here but provider "
     "telnyx, rate 1/s in program 'acme/deals' (line 12); give it the same provider and rate wherever it is listed"),
    ("two-providers", '[{id: "+15005550006", provider: telnyx}]', '[{id: "+15005550006", provider: plivo}]',
     "has provider plivo, rate 1/s here but provider telnyx, rate 1/s in program 'acme/deals' (line 12)"),
    ("two-rates", '[{id: "+15005550006", rate: 2}]', '[{id: "+15005550006", rate: 0.5}]',
     "has provider the default provider, rate 0.5/s here but provider the default provider, rate 2/s"),
    ("rate-default-and-other", '["+15005550006"]', '[{id: "+15005550006", rate: 3}]', "rate 3/s here but"),
]


@pytest.mark.parametrize(("deals", "news", "fragment"), [c[1:] for c in SHARED], ids=[c[0] for c in SHARED])
def test_a_shared_sender_names_one_provider_and_rate(tmp_path: Path, deals: str, news: str, fragment: str | None) -> None:
    text = news_senders(deals_senders(TWO, f"senders: {deals}"), f"senders: {news}")
    errors = check(write(tmp_path, text)).errors
    if fragment is None:
        assert errors == []
        return
    assert [(f.line, fragment in f.message) for f in errors] == [(23, True)], [str(f) for f in errors]


def test_shared_map_senders_still_need_the_brand_level_messages(tmp_path: Path) -> None:
    sender = '{id: "+15005550006", rate: 5}'
    text = news_senders(deals_senders(TWO, f"senders: [{sender}]"), f"senders: [{sender}]")
    text = text.replace(text[text.index("    messages:\n      stop"):text.index("    programs:")], "")
    errors = [str(f.message) for f in check(write(tmp_path, text)).errors]
    assert any("missing brand-level message 'stop', required because sender +15005550006 hosts programs deals, news"
               in e for e in errors), errors


def test_a_join_keyword_on_a_shared_map_sender_conflicts(tmp_path: Path) -> None:
    sender = '{id: "+15005550006", provider: twilio}'
    text = news_senders(deals_senders(TWO, f"senders: [{sender}]"), f"senders: [{sender}]")
    text = edit(text, "join: [NEWS]", "join: [NEWS, DEALS]")
    errors = [f for f in check(write(tmp_path, text)).errors]
    assert [(f.line, f.message) for f in errors] == [
        (25, "join keyword 'DEALS' is used by programs 'deals' (line 14) and 'news' on sender +15005550006")
    ]


def test_a_map_sender_of_two_brands(tmp_path: Path) -> None:
    from tests.test_keywords import SECOND_BRAND

    text = BASE + edit(SECOND_BRAND, 'senders: ["+15005550007"]', 'senders: [{id: "+15005550006", provider: twilio}]')
    errors = check(write(tmp_path, edit(text, SENDERS, 'senders: [{id: "+15005550006", provider: twilio}]'))).errors
    assert [(f.line, f.message) for f in errors] == [
        (24, "sender +15005550006 is already used by brand 'acme' (line 9); a sender belongs to one brand")
    ]


def test_yes_on_a_map_service_sender_still_warns(tmp_path: Path) -> None:
    report = check(write(tmp_path, edit(BASE, SENDERS, f"senders: [{{id: {MG}, provider: twilio, rate: 50}}]")))
    assert report.errors == []
    assert [f.line for f in report.warnings] == [9]
    assert "Twilio Advanced Opt-Out claims YES" in report.warnings[0].message


# --- providers the deployment does not run -------------------------------------------------


def test_check_warns_about_a_provider_this_deployment_does_not_run(tmp_path: Path) -> None:
    text = edit(BASE, SENDERS, 'senders:\n          - "384387"\n          - id: "+15005550006"\n'
                               '            provider: telnyx')
    path = write(tmp_path, text)
    warnings = check(path, providers=("console", "twilio")).warnings
    assert [(f.line, f.message) for f in warnings] == [
        (12, "program 'acme/deals' sender +15005550006: provider telnyx is not in OPTLINE_PROVIDERS (console,twilio) "
             "here: serve and worker refuse to start with it")
    ]
    assert check(path, providers=("twilio", "telnyx")).warnings == []
    assert check(path).warnings == []  # the file alone: no environment to compare with
    assert load_rules(path).sender_config("+15005550006") == SenderConfig("+15005550006", LONG_CODE, "telnyx", 1.0)
