"""`check`: every error and warning of a keywords file; the warnings are compliance and wording advice.

A warning never stops start-up: a message longer than one segment, a help text without the
help contact, a prompt that does not say how to stop or what it costs (CTIA), a message that
tells people to send a word that is no keyword, replies missing the language of a keyword,
a sender whose provider this deployment does not run, and the consent rules' own
(app.rules.config).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import date

from app.keywords.loader import Loader, read, sorted_findings
from app.keywords.raw import Kw, Msg, RawBrand, RawProgram
from app.keywords.schema import GSM7_SINGLE, UCS2_SINGLE, CheckReport, segments
from app.matching import Kind, keyword_words, normalize, split_words
from app.rules import config as consent_rules

# CTIA: a DOI prompt must disclose charges. The English wording, its Canadian French one, or the
# Spanish ones US carriers' bilingual programs use ("Pueden aplicarse tarifas de mensajes y datos",
# "Se pueden aplicar tarifas de msj y datos", "Tarifas de mensajes y datos pueden aplicar").
_RATES_DISCLOSURE = re.compile(
    r"\b(?:msg\s*&\s*data|msg and data|message and data|messages and data) rates may apply\b"
    r"|\bdes frais de messagerie(?: texte)? et de donnees peuvent s['\u2019]appliquer\b"
    r"|\b(?:pueden aplicarse|se pueden aplicar|podrian aplicarse|aplican) (?:las )?(?:tarifas|cargos) (?:de|por) "
    r"(?:mensajes|mensajeria|msj|msjs|sms)\s*(?:y|&)\s*datos\b"
    r"|\b(?:tarifas|cargos) (?:de|por) (?:mensajes|mensajeria|msj|msjs|sms)\s*(?:y|&)\s*datos "
    r"(?:pueden aplicar(?:se)?|podrian aplicar(?:se)?|aplican)\b"
)


def check(path: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
          today: date | None = None) -> CheckReport:
    """Every error and warning in a keywords file, each with its line.

    `providers`: the deployment's OPTLINE_PROVIDERS, to warn about a sender naming another
    provider; None (the file alone) skips that warning.
    """
    _, loader = read(path)
    loader.today = today  # for date-bound warnings (opt_out_scope); None: today
    if not any(f.line == 0 for f in loader.errors):
        collect_warnings(loader, providers)
    return CheckReport(errors=sorted_findings(loader.errors), warnings=sorted_findings(loader.warnings))


def collect_warnings(loader: Loader, providers: Sequence[str] | None) -> None:
    for brand in loader.brands.values():
        for name, by_lang in brand.messages.items():
            for lang, msg in by_lang.items():
                message_warnings(loader, brand, None, name, lang, msg)
        for program in brand.programs.values():
            for name, by_lang in program.messages.items():
                for lang, msg in by_lang.items():
                    message_warnings(loader, brand, program, name, lang, msg)
            if providers is not None:
                provider_warnings(loader, brand, program, providers)
            mg_lines = [s.line for s in program.senders if s.id.startswith("MG")]
            yeses = [kw for kw in program.keywords[Kind.CONFIRM] if kw.words == ("yes",)]
            yes = next((kw for kw in yeses if kw.own), yeses[0] if yeses else None)
            if mg_lines and yes is not None:
                loader.warn(
                    yes.line if yes.own and yes.line else mg_lines[0],
                    f"program '{brand.key}/{program.key}': YES is a confirm keyword on a Messaging Service sender; "
                    "Twilio Advanced Opt-Out claims YES as an opt-in keyword by default "
                    "(turn it off there, or pick another confirm keyword)",
                )
            if program.keywords[Kind.JOIN] and "already_subscribed" not in program.messages:
                loader.warn(
                    program.messages_line or program.line,
                    f"program '{brand.key}/{program.key}' has no 'already_subscribed' message: "
                    "a subscriber who texts a join keyword again gets no answer",
                )
            language_warnings(loader, brand, program)
        brand_language_warnings(loader, brand)
        consent_rules.brand_warnings(loader, brand)

def provider_warnings(loader: Loader, brand: RawBrand, program: RawProgram, providers: Sequence[str]) -> None:
    """A sender whose provider this deployment does not run could receive texts but never answer them."""
    for sender in program.senders:
        if sender.provider is not None and sender.provider not in providers:
            loader.warn(
                sender.provider_line,
                f"program '{brand.key}/{program.key}' sender {sender.id}: provider {sender.provider} is not in "
                f"OPTLINE_PROVIDERS ({','.join(providers)}) here: serve and worker refuse to start with it",
            )

def language_warnings(loader: Loader, brand: RawBrand, program: RawProgram) -> None:
    """Replies follow the matched keyword's language, else the program's: each must have text in it."""
    where = f"program '{brand.key}/{program.key}'"
    required = ["welcome", "stop", "help"] + (["doi_prompt"] if program.double_opt_in else [])
    for name in required:
        by_lang = program.messages.get(name)
        if by_lang and not _has_language(by_lang, program.language):
            loader.warn(
                _first_line(by_lang),
                f"{where} message '{name}' has no {program.language} text, the program's language; "
                f"its replies would be in {_languages(by_lang)}",
            )
    reported: set[tuple[str, str]] = set()
    joined = "doi_prompt" if program.double_opt_in else "welcome"
    for kind, names in _REPLIES_TO.items():
        names = tuple(joined if n == "joined" else n for n in names)
        for kw in program.keywords[kind]:
            if kw.language is None or kw.language == program.language:
                continue
            for name in names:
                by_lang = program.messages.get(name)
                if not by_lang or _has_language(by_lang, kw.language) or (name, kw.language) in reported:
                    continue
                reported.add((name, kw.language))
                loader.warn(
                    _first_line(by_lang),
                    f"{where} message '{name}' has no {kw.language} text, so a {kind} keyword in "
                    f"{kw.language} ('{kw.written}', line {kw.line}) is answered in {_languages(by_lang)}",
                )

def brand_language_warnings(loader: Loader, brand: RawBrand) -> None:
    """Brand-level replies are in the matched keyword's language, else the brand's."""
    for name, by_lang in brand.messages.items():
        if not _has_language(by_lang, brand.language):
            loader.warn(
                _first_line(by_lang),
                f"brand '{brand.key}' message '{name}' has no {brand.language} text, the brand's language; "
                f"its replies would be in {_languages(by_lang)}",
            )
            continue
        kind = Kind(name)  # brand-level messages are stop and help
        languages = {kw.language: kw for p in brand.programs.values() for kw in p.keywords[kind]
                     if kw.language is not None and not _has_language(by_lang, kw.language)}
        for language, kw in sorted(languages.items()):
            loader.warn(
                _first_line(by_lang),
                f"brand '{brand.key}' message '{name}' has no {language} text, so a {kind} keyword in "
                f"{language} ('{kw.written}', line {kw.line}) is answered in {_languages(by_lang)}",
            )

def message_warnings(loader: Loader, brand: RawBrand, program: RawProgram | None, name: str, lang: str | None, msg: Msg
) -> None:
    owner = f"program '{brand.key}/{program.key}'" if program else f"brand '{brand.key}'"
    where = f"{owner} message '{name}' ({lang})"
    rendered = msg.text.format(
        brand=brand.name, program=program.name if program else brand.name, help_contact=brand.help_contact
    )
    encoding, count = segments(rendered)
    if count > 1:
        limit = GSM7_SINGLE if encoding == "GSM-7" else UCS2_SINGLE
        loader.warn(
            msg.line,
            f"{where} is {count} {encoding} segments once rendered "
            f"({len(rendered)} characters; one segment is {limit})",
        )
    if (
        name == "help"
        and "{help_contact}" not in msg.text
        and brand.help_contact.casefold() not in msg.text.casefold()
    ):
        loader.warn(msg.line, f"{where} does not give the help contact; include {{help_contact}}")
    if name == "doi_prompt" and program is not None:
        words = split_words(normalize(rendered))
        if not _mentions(words, program.keywords[Kind.STOP]) or not _mentions(words, program.keywords[Kind.HELP]):
            loader.warn(
                msg.line,
                f"{where} should tell how to stop and get help (e.g. 'Reply HELP for help, STOP to cancel')",
            )
        if not _RATES_DISCLOSURE.search(normalize(rendered)):
            loader.warn(msg.line, f"{where} should say 'Msg&data rates may apply'")
    programs = [program] if program is not None else list(brand.programs.values())
    kinds = _INSTRUCTED_KINDS.get(name, tuple(Kind))
    for forms in _instructed_words(rendered):
        wanted_words = {keyword_words(form) for form in forms}
        if not any(kw.words in wanted_words and kw.language in (None, lang)
                   for p in programs for kind in kinds for kw in p.keywords[kind]):
            word = forms[0]
            wanted = " or ".join(str(kind) for kind in kinds) if name in _INSTRUCTED_KINDS else "any"
            loader.warn(
                msg.line,
                f"{where} tells people to send {word}, which is not a {wanted} keyword of "
                f"{'this program' if program is not None else 'its programs'} in {lang}",
            )


def _mentions(words: tuple[str, ...], keywords: list[Kw]) -> bool:
    for kw in keywords:
        size = len(kw.words)
        if any(words[i : i + size] == kw.words for i in range(len(words) - size + 1)):
            return True
    return False


# The replies a keyword of each kind can draw (the transition table, as far as languages go);
# "joined" is the prompt under double opt-in, else the welcome.
_REPLIES_TO: Mapping[Kind, tuple[str, ...]] = {
    Kind.JOIN: ("joined", "already_subscribed"),
    Kind.CONFIRM: ("welcome", "doi_expired"),
    Kind.STOP: ("stop",),
    Kind.HELP: ("help",),
    Kind.START: ("joined",),
}
# What a message may tell people to send: a prompt asks for the confirm keyword, an expiry
# notice for a join keyword; stop and help are always fair to name. Others: any keyword.
_INSTRUCTED_KINDS: Mapping[str, tuple[Kind, ...]] = {
    "doi_prompt": (Kind.CONFIRM, Kind.STOP, Kind.HELP),
    "doi_expired": (Kind.JOIN, Kind.STOP, Kind.HELP),
}
# "Reply YES", "text JOIN", "répondez OUI", "envoyez MENU", "responde SI", "antworte JA"...:
# the verb (any case) and the word in capitals right after it, the way SMS copy names a
# keyword; "reply to this message" or "text us" name none.
_INSTRUCTION = re.compile(
    r"(?i:\b(?:reply|text|txt|send|respond|r[ée]pond(?:ez|re|s)|envoy(?:ez|er)|envoie|tapez|[ée]crivez|textez"
    r"|responde|responda|env[ií]a|env[ií]e|escribe|antworte|antworten|sende|senden|rispondi|invia"
    r"|antwoord|stuur)(?:\s+(?:with|avec|con|mit|com|met))?)\s+"
    r"[\"'«“]?\s*(\w+)(?: (\w+))?"
)


def _instructed_words(text: str) -> list[tuple[str, ...]]:
    """The keywords a message tells people to send, as written in capitals: each as (word, two-word form?)."""
    out = []
    for found in _INSTRUCTION.finditer(text):
        first, second = found.group(1), found.group(2)
        if not first.isupper() or any(ch.isdigit() for ch in first):
            continue
        # "Reply OPT OUT" names a two-word keyword; "Reply YES NOW" names YES.
        out.append((first, f"{first} {second}") if second and second.isupper() else (first,))
    return out


def _has_language(by_lang: Mapping[str | None, Msg], language: str) -> bool:
    # As Rules.render picks: the language itself, else its base (pt-BR -> pt).
    return language in by_lang or language.split("-")[0] in by_lang


def _first_line(by_lang: Mapping[str | None, Msg]) -> int:
    return min(m.line for m in by_lang.values())


def _languages(by_lang: Mapping[str | None, Msg]) -> str:
    return ", ".join(str(lang) for lang in by_lang)
