"""One inbound text, in one transaction: match → dedupe → transition → consent event → outbox.

`record_inbound` runs inside the writer's transaction (app.db.Writer) with the phone locked,
so concurrent texts from one phone are applied one after another, in arrival order, in every
process. It never commits and never sends: replies are outbox rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.consent import Proof, Sub, apply_event
from app.events import MESSAGE_RECEIVED, enqueue_event, message_received_event
from app.keywords import Kind, Match, Program, Rules, SenderRules
from app.models import subscriptions
from app.outbox import cancel_queued, enqueue_sms
from app.phone import in_countries
from app.providers.base import InboundSms
from app.sql import Raw
from app.subscriptions import COOLDOWN_REPLIES, Event, Reply, Source, Status, transition

# CTIA: repeat the stop confirmation to a phone that keeps texting STOP at most once a day.
STOP_REPLY_INTERVAL = timedelta(days=1)
UNMATCHED = "unmatched"
UNROUTED = "unrouted"  # sent to a number no program uses


@dataclass(frozen=True)
class InboundResult:
    """What one inbound text did."""

    duplicate: bool
    kind: str  # a Kind value, "unmatched" or "unrouted"
    program: str | None = None
    reply: str | None = None  # the reply body queued, if any
    outbox_id: int | None = None


@dataclass
class _Plan:
    """The reply a text earns; at most one per inbound text, ever."""

    program: str | None = None
    reply: Reply | None = None
    language: str | None = None


def record_inbound(conn: Connection, now: datetime, *, sms: InboundSms, rules: Rules) -> InboundResult:
    """Apply one inbound text; a MessageSid already seen changes nothing."""
    sender = rules.for_sender(sms.to, sms.service_id)
    match = sender.match(sms.body, sms.opt_out_type) if sender is not None else None
    kind = (match.kind.value if match and match.kind else UNMATCHED) if sender is not None else UNROUTED
    # The phone's lock (app.db.lock_phones; SQLite's single writer) is held, and one
    # MessageSid always comes from one phone: no copy can commit between this look and the
    # insert below, so the text is written once, with its program, after it was applied.
    if sender is None or match is None:
        if _seen(conn, sms):
            return InboundResult(duplicate=True, kind=kind)
        _insert_inbound(conn, now, sms=sms, brand=None, kind=kind, match=match, program=None)
        return InboundResult(duplicate=False, kind=kind)
    brand = sender.brand
    seen, subs = _seen_and_subs(conn, sms, brand=brand.key, programs={p.key for p in sender.programs})
    if seen:
        return InboundResult(duplicate=True, kind=kind)
    if kind == UNMATCHED and brand.events_url is not None:
        enqueue_event(conn, now, brand=brand, type=MESSAGE_RECEIVED, data=message_received_event(
            brand=brand.key, phone=sms.from_phone, to=sms.to, body=sms.body,
            provider_message_id=sms.message_id, received_at=now))

    _expire_due(conn, now, subs=subs, sender=sender, sms=sms)
    proof = Proof(source=Source.SMS, keyword=match.keyword, message_id=sms.message_id, raw_text=sms.body)
    ctx = _Ctx(conn=conn, now=now, sms=sms, rules=rules, sender=sender, subs=subs, proof=proof, match=match)

    if match.kind is Kind.STOP:
        plan = ctx.stop()
    elif match.kind is Kind.HELP:
        plan = ctx.help()
    elif match.kind is Kind.CONFIRM:
        plan = ctx.confirm()
    elif match.kind is Kind.JOIN:
        plan = ctx.join(_program(sender, match.program))
    elif match.kind is Kind.START:
        plan = ctx.start()
    else:
        plan = _Plan()

    inbound_id = _insert_inbound(conn, now, sms=sms, brand=brand.key, kind=kind, match=match, program=plan.program)
    if inbound_id is None:  # cannot happen under the lock; failing the job makes the writer retry it alone
        raise RuntimeError(f"MessageSid {sms.message_id} was stored by someone else meanwhile")
    if plan.reply is None:
        return InboundResult(duplicate=False, kind=kind, program=plan.program)
    body = rules.render(brand.key, plan.program, plan.reply.value, plan.language)
    if body is None:  # an optional message the brand did not configure
        return InboundResult(duplicate=False, kind=kind, program=plan.program)
    from_number, service_id = reply_route(rules, sender, plan.program, sms)
    outbox_id = enqueue_sms(conn, now=now, brand=brand.key, program=plan.program, phone=sms.from_phone, body=body,
                            purpose=plan.reply.value, from_number=from_number, service_id=service_id,
                            inbound_id=inbound_id)
    return InboundResult(duplicate=False, kind=kind, program=plan.program, reply=body, outbox_id=outbox_id)


def reply_route(rules: Rules, sender: SenderRules, program: str | None, sms: InboundSms) -> tuple[str | None, str | None]:
    """(from_number, service_id) for a reply: the Messaging Service when the program is reached through it."""
    key = program or sender.programs[0].key
    via = rules.sender_of(sender.brand.key, key, sms.to, sms.service_id)
    if via.startswith("MG"):
        return None, via
    return sms.to, None


def _program(sender: SenderRules, key: str | None) -> Program:
    if key is None:
        return sender.programs[0]
    for program in sender.programs:
        if program.key == key:
            return program
    raise KeyError(key)


_INSERT_INBOUND = (
    "INSERT INTO inbound_messages (provider, message_id, account_id, service_id, from_phone, \"to\", body, num_media,"
    " opt_out_type, brand, program, kind, keyword, params, received_at) VALUES (:provider, :message_id, :account_id,"
    " :service_id, :from_phone, :to, :body, :num_media, :opt_out_type, :brand, :program, :kind, :keyword, :params,"
    " :received_at) ON CONFLICT (provider, message_id) DO NOTHING RETURNING id"
)


def _seen(conn: Connection, sms: InboundSms) -> bool:
    """True when this provider message id was stored before."""
    return Raw(conn).scalar("SELECT 1 FROM inbound_messages WHERE provider = :provider AND message_id = :m",
                            {"provider": sms.provider, "m": sms.message_id}) is not None


def _seen_and_subs(conn: Connection, sms: InboundSms, *, brand: str, programs: set[str]) -> tuple[bool, dict[str, Sub]]:
    """Whether this message id was stored before, and the phone's subscriptions to these programs: one query."""
    rows = Raw(conn).rows(
        "SELECT seen.hit, s.* FROM (SELECT (SELECT 1 FROM inbound_messages WHERE provider = :provider"
        " AND message_id = :m) AS hit) seen LEFT JOIN subscriptions s ON s.brand = :brand AND s.phone = :phone",
        {"provider": sms.provider, "m": sms.message_id, "brand": brand, "phone": sms.from_phone})
    seen = rows[0]["hit"] is not None  # the LEFT JOIN gives at least one row
    subs = {}
    for row in rows:
        del row["hit"]
        if row["id"] is not None and row["program"] in programs:
            subs[row["program"]] = Sub(values=row)
    return seen, subs


def _insert_inbound(conn: Connection, now: datetime, *, sms: InboundSms, brand: str | None, kind: str,
                    match: Match | None, program: str | None) -> int | None:
    """Insert the text unless its message id was seen; None for a duplicate."""
    return Raw(conn).scalar(_INSERT_INBOUND, {
        "provider": sms.provider, "message_id": sms.message_id, "account_id": sms.account_id,
        "service_id": sms.service_id, "from_phone": sms.from_phone, "to": sms.to, "body": sms.body,
        "num_media": sms.num_media, "opt_out_type": sms.opt_out_type, "brand": brand, "program": program,
        "kind": kind, "keyword": match.keyword if match else None, "params": dict(sms.params), "received_at": now,
    })


def _expire_due(conn: Connection, now: datetime, *, subs: dict[str, Sub], sender: SenderRules, sms: InboundSms) -> None:
    """Lazy DOI expiry: a pending DOI past its deadline goes back before this text is applied."""
    for sub in subs.values():
        if sub.status == Status.PENDING.value and sub.doi_expires_at is not None and sub.doi_expires_at <= now:
            apply_event(conn, sub, Event.EXPIRE, now=now, proof=Proof(source=Source.SYSTEM), brand=sender.brand)


@dataclass
class _Ctx:
    conn: Connection
    now: datetime
    sms: InboundSms
    rules: Rules
    sender: SenderRules
    subs: dict[str, Sub]
    proof: Proof
    match: Match

    def sub(self, program: str) -> Sub:
        if program not in self.subs:
            self.subs[program] = Sub.blank(brand=self.sender.brand.key, program=program,
                                           phone=self.sms.from_phone, now=self.now)
        return self.subs[program]

    @property
    def via(self) -> str:
        return self.sms.service_id or self.sms.to

    def stop(self) -> _Plan:
        carrier = self.sms.opt_out_type == "STOP"
        # Twilio's Advanced Opt-Out blocks the whole sender, whatever program the text named.
        scope = [p.key for p in self.sender.programs] if carrier or self.match.program is None else [self.match.program]
        event = Event.CARRIER_OPT_OUT if carrier else Event.STOP
        proof = Proof(source=Source.CARRIER, keyword=self.match.keyword or "STOP", message_id=self.sms.message_id,
                      raw_text=self.sms.body) if carrier else self.proof
        subs = [self.sub(key) for key in scope]
        # Decided before the write, so last_stop_reply_at goes out in the same UPDATE.
        changes = any(sub.status != Status.UNSUBSCRIBED.value for sub in subs)
        recent = all(sub.last_stop_reply_at is not None and self.now - sub.last_stop_reply_at < STOP_REPLY_INTERVAL
                     for sub in subs)
        # Twilio already answered a STOP it classified itself; else at most one repeat a day.
        reply = not carrier and (changes or not recent)
        for sub in subs:
            if reply:
                sub.set(last_stop_reply_at=self.now)
            apply_event(self.conn, sub, event, now=self.now, proof=proof, sender=self.via, brand=self.sender.brand)
        cancel_queued(self.conn, now=self.now, brand=self.sender.brand.key, phone=self.sms.from_phone,
                      programs=None if len(scope) == len(self.sender.programs) else scope)
        program = scope[0] if len(scope) == 1 else None
        return _Plan(program=program, reply=Reply.STOP if reply else None, language=self.match.language)

    def help(self) -> _Plan:
        program = self.match.program or self._last_program()
        if program is None and len(self.sender.programs) == 1:
            program = self.sender.programs[0].key
        if self.sms.opt_out_type == "HELP":
            return _Plan(program=program)  # Twilio already answered the HELP
        language = self.match.language or (self.subs[program].language if program in self.subs else None)
        return _Plan(program=program, reply=Reply.HELP, language=language)

    def confirm(self) -> _Plan:
        pending = [s for s in self.subs.values() if s.status == Status.PENDING.value
                   and (self.match.program is None or s.program == self.match.program)]
        if not pending:
            expired = [s for s in self.subs.values() if s.doi_expired_at is not None
                       and s.status != Status.SUBSCRIBED.value]
            if expired:
                latest = max(expired, key=lambda s: s.doi_expired_at)
                return _Plan(program=latest.program, reply=Reply.DOI_EXPIRED,
                             language=self.match.language or latest.language)
            return _Plan()
        # A confirm answers the phone's most recent pending DOI on this sender.
        sub = max(pending, key=lambda s: s.doi_requested_at)
        applied = apply_event(self.conn, sub, Event.CONFIRM, now=self.now, proof=self.proof, sender=self.via,
                              brand=self.sender.brand)
        return _Plan(program=sub.program, reply=applied.rule.reply, language=self.match.language or sub.language)

    def join(self, program: Program) -> _Plan:
        allowed = self.sender.brand.allowed_countries
        if allowed is not None and not in_countries(self.sms.from_phone, allowed):
            # No prompt may go to a country the brand does not serve: change nothing, say nothing.
            return _Plan(program=program.key)
        sub = self.sub(program.key)
        event = Event.JOIN if program.double_opt_in else Event.JOIN_SINGLE
        language = self.match.language
        rule = transition(sub.status, event)
        reply = rule.reply
        if reply in COOLDOWN_REPLIES:
            # Decided before the write, so last_prompt_at goes out in the same UPDATE.
            last = sub.last_prompt_at
            if rule.to == sub.status_enum and last is not None and self.now - last < program.prompt_cooldown:
                reply = None
            else:
                sub.set(last_prompt_at=self.now)
        apply_event(self.conn, sub, event, now=self.now, proof=self.proof, brand=self.sender.brand,
                    doi_expires_after=program.doi_expires_after, language=language, sender=self.via)
        return _Plan(program=program.key, reply=reply, language=language or sub.language)

    def start(self) -> _Plan:
        left = [s for s in self.subs.values() if s.status == Status.UNSUBSCRIBED.value and s.unsubscribed_at]
        if not left:
            return _Plan()
        latest = max(left, key=lambda s: s.unsubscribed_at)
        return self.join(_program(self.sender, latest.program))

    def _last_program(self) -> str | None:
        return Raw(self.conn).scalar(  # type: ignore[no-any-return]
            'SELECT program FROM inbound_messages WHERE from_phone = :phone AND "to" = :to AND program IS NOT NULL'
            " ORDER BY id DESC LIMIT 1",
            {"phone": self.sms.from_phone, "to": self.sms.to},
        )


def due_for_expiry(conn: Connection, now: datetime, *, limit: int = 500) -> list[str]:
    """Phones holding a pending DOI past its deadline (read before locking them)."""
    return list(conn.execute(
        sa.select(subscriptions.c.phone).where(subscriptions.c.status == Status.PENDING.value,
                                               subscriptions.c.doi_expires_at <= now).distinct().limit(limit)
    ).scalars())


def expire_due(conn: Connection, now: datetime, *, phones: list[str], rules: Rules | None) -> int:
    """The periodic sweep, with `phones` locked: pending DOIs past their deadline go back; returns how many."""
    rows = conn.execute(
        sa.select(subscriptions).where(subscriptions.c.phone.in_(phones), subscriptions.c.status == Status.PENDING.value,
                                       subscriptions.c.doi_expires_at <= now)
    ).all()
    for row in rows:
        brand = rules.brands.get(row.brand) if rules is not None else None
        apply_event(conn, Sub(values=dict(row._mapping)), Event.EXPIRE, now=now, proof=Proof(source=Source.SYSTEM),
                    brand=brand)
    return len(rows)
