"""Rules across brands and programs of keywords.yaml: what a sender hosts must fit together (errors).

A sender belongs to one brand and has one provider and rate wherever it is listed; the
programs it hosts share its keywords, so each keyword means one thing on it, and the
opt-out detector must not read a help, start, confirm or join keyword as a stop.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.keywords.nodes import NodeReader
from app.keywords.raw import BRAND_MESSAGES, Kw, RawBrand, RawProgram, RawSender
from app.matching import Kind, is_opt_out_intent
from app.senders import SenderConfig, sender_key


def cross_check(reader: NodeReader, brands: Mapping[str, RawBrand]) -> None:
    """Rules across brands and programs: a sender belongs to one brand and is one sender everywhere; a sender
    hosting several programs needs the brand's own stop and help texts, and its keywords must each mean one thing."""
    firsts: dict[str, tuple[RawProgram, RawSender]] = {}
    groups: dict[str, list[RawProgram]] = {}
    for brand in brands.values():
        for program in brand.programs.values():
            for sender in program.senders:
                skey = sender_key(sender.id)
                first_program, first = firsts.setdefault(skey, (program, sender))
                if first_program.brand != brand.key:
                    reader.error(
                        sender.line,
                        f"sender {sender.id} is already used by brand '{first_program.brand}' (line {first.line}); "
                        "a sender belongs to one brand",
                    )
                    continue
                same_sender(reader, first_program, first, program, sender)
                groups.setdefault(skey, []).append(program)
    reported: set[tuple[str, str]] = set()
    for skey, programs in groups.items():
        if len(programs) > 1:
            brand = brands[programs[0].brand]
            for name in BRAND_MESSAGES:
                if (brand.key, name) in reported:
                    continue
                reported.add((brand.key, name))
                if name not in brand.messages and not any(
                    f.message.startswith(f"brand '{brand.key}'.messages.{name}") for f in reader.errors
                ):
                    shared = ", ".join(p.key for p in programs)
                    reader.error(
                        brand.messages_line or brand.line,
                        f"brand '{brand.key}': missing brand-level message '{name}', "
                        f"required because sender {skey} hosts programs {shared}",
                    )
        keyword_conflicts(reader, skey, programs)

def same_sender(reader: NodeReader, first_program: RawProgram, first: RawSender, program: RawProgram,
                sender: RawSender) -> None:
    """A sender listed by several programs is one sender: one provider sends from it, at one rate."""
    was, now = first.config(), sender.config()
    if sender is first or (was.provider, was.rate) == (now.provider, now.rate):
        return
    reader.error(
        sender.line,
        f"program '{program.brand}/{program.key}': sender {sender.id} has {_how(now)} here but {_how(was)} "
        f"in program '{first_program.brand}/{first_program.key}' (line {first.line}); give it the same provider "
        "and rate wherever it is listed (or leave them out)",
    )

def keyword_conflicts(reader: NodeReader, sender: str, programs: list[RawProgram]) -> None:
    """Keywords on one sender must each mean one thing."""
    fixed: dict[tuple[str, ...], tuple[Kind, Kw]] = {}
    for kind in (Kind.STOP, Kind.HELP, Kind.START):
        for program in programs:
            for kw in program.keywords[kind]:
                seen = fixed.setdefault(kw.words, (kind, kw))
                if seen[0] is not kind:
                    line = kw.line if kw.line is not None else seen[1].line
                    reader.error(
                        line or 1,
                        f"keyword '{kw.written}' is both a {seen[0]} and a {kind} keyword on sender {sender}",
                    )
    # A keyword the opt-out detector would read as a stop can never do its job.
    stops = [kw.written for kind, kw in fixed.values() if kind is Kind.STOP]
    for program in programs:
        for kind in (Kind.HELP, Kind.START, Kind.CONFIRM, Kind.JOIN):
            for kw in program.keywords[kind]:
                if kw.line is not None and kw.words not in fixed and is_opt_out_intent(kw.written, stops):
                    reader.error(
                        kw.line,
                        f"{kind} keyword '{kw.written}' would be read as an opt-out (stop) "
                        "by the opt-out detector",
                    )
    confirms: dict[tuple[str, ...], tuple[RawProgram, Kw]] = {}
    for program in programs:
        for kw in program.keywords[Kind.CONFIRM]:
            confirms.setdefault(kw.words, (program, kw))
            if kw.words in fixed:
                other = fixed[kw.words][0]
                reader.error(
                    kw.line or program.line,
                    f"confirm keyword '{kw.written}' is also a {other} keyword on sender {sender}",
                )
    joins: dict[tuple[str, ...], tuple[RawProgram, Kw]] = {}
    for program in programs:
        for kw in program.keywords[Kind.JOIN]:
            line = kw.line or program.line
            if kw.words in fixed:
                reader.error(
                    line,
                    f"join keyword '{kw.written}' of program '{program.key}' "
                    f"is also a {fixed[kw.words][0]} keyword",
                )
                continue
            if kw.words in confirms:
                owner = confirms[kw.words][0]
                reader.error(
                    line,
                    f"join keyword '{kw.written}' of program '{program.key}' "
                    f"is also a confirm keyword of program '{owner.key}' on sender {sender}",
                )
                continue
            first = joins.setdefault(kw.words, (program, kw))
            if first[0] is not program:
                reader.error(
                    line,
                    f"join keyword '{kw.written}' is used by programs '{first[0].key}' (line {first[1].line}) "
                    f"and '{program.key}' on sender {sender}",
                )

# -- warnings (check only)


def _how(config: SenderConfig) -> str:
    provider = config.provider or "the default provider"
    return f"provider {provider}, rate {config.rate:g}/s"
