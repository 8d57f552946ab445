"""API opt-in and opt-out: the brand's CRM acting with consent proof.

Like app.inbound, these run inside the writer's transaction with the phone locked and never
commit; replies are outbox rows sent from the program's own sender.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.consent import Proof, Sub, Writes, apply_event, load_subs
from app.errors import Conflict, OptedOut, Unprocessable
from app.events import iso
from app.holds import enqueue_unasked, hold_for
from app.keywords import Brand, Rules
from app.outbox.queue import cancel_queued, enqueue_sms
from app.phone import in_countries
from app.sql import Raw
from app.subscriptions import COOLDOWN_REPLIES, Event, Reply, Source, Status, time_problem


@dataclass(frozen=True)
class ApiActor:
    """Who is acting: the API key, for the ledger."""

    api_key_id: int


def resolve_program(brand: Brand, program: str | None) -> str:
    """The program named, else the brand's `default_program`, else its only one; 422 otherwise."""
    if program is None:
        if brand.default_program is not None:
            return brand.default_program
        if len(brand.programs) == 1:
            return next(iter(brand.programs))
        raise Unprocessable("program is required: this brand has several programs", field="program")
    if program not in brand.programs:
        raise Unprocessable(f"unknown program {program!r}", field="program")
    return program


def _route(rules: Rules, brand: str, program: str, sub: Sub) -> tuple[str | None, str | None]:
    """(from_number, service_id) for a text about this subscription: the sender the phone used, else the program's."""
    configured = rules.program(brand, program).senders
    via = sub.sender if sub.sender in configured else rules.sender_of(brand, program, None, None)
    return (None, via) if via.startswith("MG") else (via, None)


def check_consent_is_current(sub: Sub | None, *, consented_at: datetime | None, now: datetime) -> None:
    """Refuse API consent that may not reopen the program: 409 after the phone's own opt-out or a newer one, 422 for a
    time no engine can keep or in the future.

    Only the phone reopens what the phone closed: after a STOP it texted (on any channel) or a
    carrier's opt-out signal, no API path subscribes or prompts it again until the phone itself
    texts a join keyword or START; carriers behave the same (Twilio refuses sends with 21610).
    An opt-out the brand made (API, console, import) may be superseded by newer consent, dated
    the earlier of `consented_at` and `now` (the request's arrival): a CRM that stamps its sync
    time, or re-sends an old opt-in, cannot slip past an opt-out with a clock that runs ahead.
    `consented_at=None` (a contact PUT that gives no time) is accepted only when the phone never
    opted out of the program.
    """
    if consented_at is not None:
        why = time_problem(consented_at, now)
        if why is not None:
            raise Unprocessable(f"consentedAt {why}", field="consentedAt")
    if sub is None:
        return
    if sub.phone_opted_out_at is not None:
        source = sub.phone_opted_out_source or Source.SMS.value
        raise OptedOut(
            f"{sub.program}: this phone opted out itself ({source}) at {iso(sub.phone_opted_out_at)}; only the phone "
            "can subscribe again, by texting a join keyword or START",
            field="phoneNumber", extra={"optOut": {"at": iso(sub.phone_opted_out_at), "source": source,
                                                   "scope": {"program": sub.program, "sender": sub.sender}}})
    opted_out = sub.opted_out_at
    if opted_out is None:
        return
    if consented_at is None:
        raise Conflict(f"{sub.program}: this phone opted out at {iso(opted_out)}; send consentedAt, later than that",
                       field="consentedAt")
    if min(consented_at, now) <= opted_out:
        raise Conflict(f"{sub.program}: consent given at {iso(consented_at)} is not later than this phone's opt-out at "
                       f"{iso(opted_out)}", field="consentedAt")


def opt_in(
    conn: Connection, now: datetime, *, rules: Rules, brand: Brand, program: str, phone: str, double_opt_in: bool,
    actor: ApiActor, consent_source: str, consented_at: datetime | None, consent_proof: Mapping[str, Any],
    profile_id: str | None, keyword: str | None = None,
) -> Sub:
    """Opt `phone` into `program` with consent proof: subscribed at once, or pendingDOI with a prompt.

    Consent must be newer than the phone's latest opt-out from the program (409 otherwise,
    nothing written); `consented_at=None` means "now" for a phone that never opted out.
    """
    if brand.allowed_countries is not None and not in_countries(phone, brand.allowed_countries):
        raise Unprocessable("this brand does not send to that country", field="phoneNumber")
    settings = rules.program(brand.key, program)
    subs = load_subs(conn, brand=brand.key, phone=phone, programs=[program])
    check_consent_is_current(subs.get(program), consented_at=consented_at, now=now)
    consented_at = consented_at or now
    sub = subs.get(program) or Sub.blank(brand=brand.key, program=program, phone=phone, now=now)
    if profile_id is None and sub.profile_id is None:
        # No profile named: attach the brand's profile with this phone, if there is one.
        profile_id = Raw(conn).scalar(
            "SELECT id FROM profiles WHERE brand = :brand AND phone = :phone AND deleted_at IS NULL",
            {"brand": brand.key, "phone": phone})
    if profile_id is not None:
        sub.set(profile_id=profile_id)
    event = Event.API_OPT_IN_DOI if double_opt_in else Event.API_OPT_IN
    proof = Proof(source=Source.API, api_key_id=actor.api_key_id, consent_source=consent_source,
                  consent_proof=consent_proof, consented_at=consented_at, keyword=keyword)
    writes = Writes()
    from_number, service_id = _route(rules, brand.key, program, sub)
    applied = apply_event(writes, sub, event, now=now, proof=proof, brand=brand, sender=from_number or service_id,
                          doi_expires_after=settings.doi_expires_after, always_record=True)
    reply = applied.rule.reply
    if reply is Reply.WELCOME and not applied.changed:
        reply = None  # already subscribed: restating consent is recorded, not texted
    if reply in COOLDOWN_REPLIES:
        last = sub.last_prompt_at
        if not applied.changed and last is not None and now - last < settings.prompt_cooldown:
            reply = None
    body = rules.render(brand.key, program, reply.value, sub.language) if reply is not None else None
    # Nothing the phone texted asked for this one: quiet hours and caps may hold it (app.holds).
    hold = (hold_for(conn, now, rules=rules, brand=brand.key, program=program, phone=phone, purpose=reply.value)
            if reply is not None and body is not None else None)
    if reply in COOLDOWN_REPLIES and hold is None:
        # A held prompt has prompted nobody yet: the phone's own JOIN meanwhile is answered at once
        # (and the held one then goes nowhere: app.outbox.queue.NOT_SUPERSEDED).
        sub.set(last_prompt_at=now)
    if reply is not None and body is not None:
        writes.reply(reply.value, body)  # the ledger keeps the text sent with the event
    writes.flush(conn)
    if reply is not None and body is not None:
        enqueue_unasked(conn, now, hold=hold, brand=brand, program=program, phone=phone, body=body,
                        purpose=reply.value, from_number=from_number, service_id=service_id)
    return sub


def opt_out(
    conn: Connection, now: datetime, *, rules: Rules, brand: Brand, programs: list[str], phone: str, notify: bool,
    actor: ApiActor | None, proof: Proof | None = None, event: Event = Event.API_OPT_OUT,
) -> list[Sub]:
    """Opt `phone` out of `programs`; a stop reply goes out when asked and something changed.

    The ledger records `proof` when given (a person in the console, with `event` console_opt_out),
    else the API key `actor`.
    """
    subs = load_subs(conn, brand=brand.key, phone=phone, programs=programs)
    if proof is None:
        assert actor is not None, "an opt-out needs its actor or its proof"
        proof = Proof(source=Source.API, api_key_id=actor.api_key_id)
    changed: list[Sub] = []
    out: list[Sub] = []
    writes = Writes()  # flushed once the stop reply is known: the ledger keeps its text
    for program in programs:
        sub = subs.get(program) or Sub.blank(brand=brand.key, program=program, phone=phone, now=now)
        applied = apply_event(writes, sub, event, now=now, proof=proof, brand=brand)
        # Only someone who was (or was becoming) a subscriber is told: a stop text to a phone
        # that never joined this brand would be the first message it ever got from it.
        if applied.before in (Status.SUBSCRIBED, Status.PENDING):
            changed.append(sub)
        out.append(sub)
    body: str | None = None
    lead: Sub | None = None
    stop_program: str | None = None
    if notify and changed:
        # One stop reply, from the sender the phone knows best: the most recently used one.
        lead = max(changed, key=lambda s: s.updated_at)
        stop_program = lead.program if len(programs) == 1 else None
        body = rules.render(brand.key, stop_program, Reply.STOP.value, lead.language) or \
            rules.render(brand.key, lead.program, Reply.STOP.value, lead.language)
        if body is not None:
            writes.reply(Reply.STOP.value, body)
    writes.flush(conn)
    whole_brand = set(programs) == set(brand.programs)
    cancel_queued(conn, [{"brand": brand.key, "phone": phone, "now": now}],
                  programs=None if whole_brand else programs)
    if lead is not None and body is not None:
        from_number, service_id = _route(rules, brand.key, lead.program, lead)
        enqueue_sms(conn, now=now, brand=brand.key, program=stop_program, phone=phone, body=body,
                    purpose=Reply.STOP.value, from_number=from_number, service_id=service_id)
    return out


def profile_ref(conn: Connection, *, brand: str, profile_id: str) -> tuple[str, str | None] | None:
    """(id, externalId) of the live profile of this brand whose `prof_` id or externalId is `profile_id`, or None.

    Noticia's own opt-in example names the profile by the CRM's externalId. As for
    GET /v1/profiles/{ref}, an id wins over an externalId that happens to look like one.
    """
    rows = Raw(conn).rows(
        "SELECT id, external_id FROM profiles WHERE brand = :brand AND deleted_at IS NULL"
        " AND (id = :ref OR external_id = :ref) ORDER BY CASE WHEN id = :ref THEN 0 ELSE 1 END LIMIT 1",
        {"ref": profile_id, "brand": brand},
    )
    return (rows[0]["id"], rows[0]["external_id"]) if rows else None


__all__ = ["ApiActor", "opt_in", "opt_out", "profile_ref", "resolve_program"]
