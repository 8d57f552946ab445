"""What a plain opt-out ends, and what its one reply says (keywords.yaml `opt_out_scope`).

- `brand` (the default): the FCC's revoke-all rule (47 CFR 64.1200(a)(10), FCC 24-24, in
  force from 2027-01-31) reads a plain STOP to any of the brand's numbers as "no more texts
  from this brand": every program on every sender and channel ends.
- `sender`: a plain STOP ends the programs on the number texted; STOP ALL ends every program
  of the brand, and the reply may say so in one line, never more and never marketing.
`STOP <program>` ends that program alone in both. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.keywords import Brand

BRAND, SENDER, PROGRAM = "brand", "sender", "program"

# Texts that ask for every program in sender scope ("STOP ALL", "STOPALL"), normalised.
_ALL = frozenset({"stopall", "stop all", "stop-all"})

# The reply's words when the brand wrote no brand-level stop message (its programs each have
# their own senders, so none was required): it must say that everything stopped.
_ENDED_ALL = {
    "en": "{brand}: you're unsubscribed from all {brand} texts and will get no more messages. Help: {help_contact}",
    "fr": "{brand} : vous êtes désabonné de tous les SMS {brand} et n'en recevrez plus. Aide : {help_contact}",
    "es": "{brand}: te has dado de baja de todos los mensajes de {brand}. Ayuda: {help_contact}",
}
# The one clarification a sender-scope stop reply may carry.
_CLARIFY = {
    "en": "Reply STOP ALL to stop every {brand} text.",
    "fr": "Répondez STOP ALL pour arrêter tous les SMS {brand}.",
    "es": "Responde STOP ALL para detener todos los mensajes de {brand}.",
}


def asks_for_all(normalized: str) -> bool:
    """Whether a stop text names every program ("STOP ALL")."""
    return normalized in _ALL


def plain_stop_programs(brand: Brand, sender_programs: Iterable[str], normalized: str) -> tuple[list[str], str]:
    """The programs a plain opt-out on a sender ends, and the scope that decided it ("brand" or "sender")."""
    if brand.opt_out_scope == BRAND or asks_for_all(normalized):
        return list(brand.programs), BRAND
    return list(sender_programs), SENDER


def _pick(table: dict[str, str], language: str | None, brand: Brand) -> str:
    for lang in (language, (language or "").split("-")[0], brand.language, "en"):
        if lang and lang in table:
            return table[lang]
    return table["en"]


def stop_reply(body: str | None, brand: Brand, *, ended_all: bool, clarify: bool, language: str | None) -> str | None:
    """The stop reply: the configured text (or, for a brand-wide stop without one, a plain default), plus the
    sender-scope clarification line when asked."""
    if body is None and ended_all:
        body = _pick(_ENDED_ALL, language, brand).format(brand=brand.name, help_contact=brand.help_contact)
    if body is not None and clarify:
        body = f"{body}\n{_pick(_CLARIFY, language, brand).format(brand=brand.name)}"
    return body


def describe(brand: Brand) -> str:
    """One line for `optline check`: what a plain STOP ends for this brand, and its sending rules."""
    if brand.opt_out_scope == BRAND:
        what = "a plain STOP ends every program on every sender (revoke-all)"
    else:
        what = "a plain STOP ends the programs of the number texted; STOP ALL ends every program"
    extras = []
    if brand.quiet_hours is not None:
        start, end = brand.quiet_hours
        extras.append(f"own sending window {start:%H:%M}–{end:%H:%M}")
    capped = [f"{p.key} {p.max_per_day}/day" for p in brand.programs.values() if p.max_per_day is not None]
    marketing = [p.key for p in brand.programs.values() if p.marketing]
    if capped:
        extras.append("caps " + ", ".join(capped))
    if marketing:
        extras.append("marketing (state caps apply): " + ", ".join(marketing))
    tail = f"; {'; '.join(extras)}" if extras else ""
    return f"brand '{brand.key}': opt_out_scope {brand.opt_out_scope}: {what}{tail}"
