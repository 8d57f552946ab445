"""Inbound texts, applied in order: match → dedupe → transition → consent event → outbox.

`record_texts` runs inside the writer's transaction (app.db.Writer) with the phones locked,
so concurrent texts from one phone are applied one after another, in arrival order, in every
process. It never commits and never sends: replies are outbox rows.

The writer hands it every text of a batch at once (`InboundJob.run_many`). The texts are
applied one after another in memory, each seeing what the texts before it did, and then
written together: one query each loads what the batch needs to know (which message ids were
seen, the phones' subscriptions, the program a bare HELP refers to), and each table gets one
statement for the whole batch. Five or six statements a text became about ten a batch: on
PostgreSQL, where each costs a round trip and about 100 µs of psycopg, one process went from
about 700 to 1,700 texts/s. tests/test_inbound_batch.py checks that a batch leaves exactly
what the same texts one at a time leave.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import groupby

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.consent import Proof, Sub, Writes, apply_event
from app.events import MESSAGE_FLAGGED, MESSAGE_RECEIVED, event_row, message_received_event
from app.keywords import Brand, Kind, Match, Program, Rules, SenderRules, is_opt_out_intent
from app.optout.detector import detect
from app.models import subscriptions
from app.outbox.queue import CANCELLED_BY_OPT_OUT, SMS_COLUMNS, OutboxStatus, cancel_queued, sms_row
from app.phone import in_countries
from app.providers.base import CHANNEL_SMS, InboundSms, Media
from app.rules import scope as opt_out_scope
from app.sql import Array, Raw
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
    language: str | None = None  # the language the reply was asked in (the message's fallback may differ)


@dataclass(frozen=True)
class InboundJob:
    """One inbound text as a writer job; the writer runs consecutive ones together through `run_many`."""

    sms: InboundSms
    rules: Rules
    # When the webhook arrived, for a text applied late from the spool: it applies as of then,
    # so it can never undo an opt-out that came after it. None: as of the batch's time.
    received_at: datetime | None = None

    def __call__(self, conn: Connection, now: datetime) -> InboundResult:
        return record_texts(conn, [(now, self)])[0]

    @staticmethod
    def run_many(conn: Connection, jobs: Sequence[tuple[datetime, InboundJob]]) -> list[InboundResult]:
        """Apply the texts in order, as one after another would; their results in the same order."""
        return record_texts(conn, jobs)


def record_texts(conn: Connection, texts: Sequence[tuple[datetime, InboundJob]]) -> list[InboundResult]:
    """Apply inbound texts in order and write them; a MessageSid already seen changes nothing."""
    texts = [(job.received_at or now, job) for now, job in texts]
    batch = _Batch(conn, texts)
    results = [batch.apply(i, now, job.sms, job.rules, sender, match)
               for i, ((now, job), (sender, match)) in enumerate(zip(texts, batch.routes, strict=True))]
    outbox_ids = batch.write()
    return [replace(result, outbox_id=outbox_ids[i]) if i in outbox_ids else result
            for i, result in enumerate(results)]


@dataclass
class _Plan:
    """The reply a text earns; at most one per inbound text, ever."""

    program: str | None = None
    reply: Reply | None = None
    language: str | None = None
    # A stop reply's scope (app.rules.scope): it ended every program; it may offer STOP ALL.
    ended_all: bool = False
    clarify: bool = False


class _Batch:
    """The texts of one job batch: what they read, loaded at once, and what they write, written at once.

    The phones' locks (app.db.lock_phones; SQLite's single writer) are held, and one
    MessageSid always comes from one phone: nothing can store these texts, or change these
    phones' subscriptions, between the loads and the writes.
    """

    def __init__(self, conn: Connection, texts: Sequence[tuple[datetime, InboundJob]]):
        self.conn = conn
        self.raw = Raw(conn)
        self.routes: list[tuple[SenderRules | None, Match | None]] = []
        for _now, job in texts:
            sender = job.rules.for_sender(job.sms.to, job.sms.service_id)
            self.routes.append((sender, sender.match(job.sms.body, job.sms.opt_out_type) if sender else None))
        smses = [job.sms for _now, job in texts]
        self.seen = self._load_seen(smses)
        self.subs = self._load_subs([(sender.brand.key, sms.from_phone)
                                     for sms, (sender, match) in zip(smses, self.routes, strict=True)
                                     if match and sms.from_phone])
        self.last_programs = self._load_last_programs(
            [(sms.from_phone, sms.to) for sms, (_sender, match) in zip(smses, self.routes, strict=True)
             if match and match.kind in (Kind.HELP, Kind.START) and match.program is None])  # START may answer as HELP
        self.writes = Writes()
        self.inbound: list[dict[str, object]] = []  # rows of inbound_messages, in order
        self.replies: list[tuple[int, int, dict[str, object]]] = []  # (text, inbound row, outbox row), in order
        self.cancels: list[tuple[tuple[str, ...] | None, dict[str, object]]] = []  # (programs, parameters), in order

    # --- reads, one query each for the whole batch --------------------------------------------

    def _load_seen(self, smses: list[InboundSms]) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        for provider in {sms.provider for sms in smses}:
            params: dict[str, object] = {"provider": provider}
            ids = self.raw.each("ids", {sms.message_id for sms in smses if sms.provider == provider}, params)
            rows = self.raw.execute(
                "SELECT ids.value, (SELECT 1 FROM inbound_messages WHERE provider = :provider AND message_id = ids.value)"
                f" FROM {ids}", params).fetchall()
            seen.update((provider, message_id) for message_id, hit in rows if hit is not None)
        return seen

    def _load_subs(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Sub]]:
        """Every subscription of these (brand, phone) pairs, by pair and program."""
        subs: dict[tuple[str, str], dict[str, Sub]] = {key: {} for key in keys}
        for brand in {brand for brand, _phone in keys}:
            params: dict[str, object] = {"brand": brand}
            phones = self.raw.each("phones", {phone for b, phone in keys if b == brand}, params)
            if self.raw.pg:  # a lateral subquery that cannot be flattened: one index probe a phone (see Raw.each)
                sql = (f"SELECT s.* FROM {phones} CROSS JOIN LATERAL (SELECT * FROM subscriptions"
                       " WHERE brand = :brand AND phone = phones.value OFFSET 0) s")
            else:
                sql = f"SELECT * FROM subscriptions WHERE brand = :brand AND phone IN (SELECT value FROM {phones})"
            for row in self.raw.rows(sql, params):
                subs[(brand, row["phone"])][row["program"]] = Sub(values=row)
        return subs

    def _load_last_programs(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """The program of the latest text from each phone to each number that had one (a HELP's context)."""
        if not pairs:
            return {}
        keys = sorted(set(pairs))
        if self.raw.pg:
            params: dict[str, object] = {"f": Array(k[0] for k in keys), "t": Array(k[1] for k in keys)}
            source = "SELECT * FROM unnest(CAST(:f AS text[]), CAST(:t AS text[])) AS k(f, t)"
        else:
            params = {"pairs": json.dumps(keys)}
            source = "SELECT json_extract(value, '$[0]') AS f, json_extract(value, '$[1]') AS t FROM json_each(:pairs)"
        # One index walk a pair, stopping at its latest row (a phone's history may be long).
        rows = self.raw.execute(
            'SELECT k.f, k.t, (SELECT program FROM inbound_messages WHERE from_phone = k.f AND "to" = k.t'
            f" AND program IS NOT NULL ORDER BY id DESC LIMIT 1) FROM ({source}) k", params).fetchall()
        return {(phone, to): program for phone, to, program in rows}

    def last_program(self, phone: str, to: str) -> str | None:
        """The program of the latest text from `phone` to `to` that had one, this batch's texts included."""
        for row in reversed(self.inbound):
            if row["from_phone"] == phone and row["to"] == to and row["program"] is not None:
                return row["program"]  # type: ignore[return-value]
        return self.last_programs.get((phone, to))

    # --- one text -------------------------------------------------------------------------------

    def apply(self, position: int, now: datetime, sms: InboundSms, rules: Rules, sender: SenderRules | None,
              match: Match | None) -> InboundResult:
        kind = (match.kind.value if match and match.kind else UNMATCHED) if sender is not None else UNROUTED
        key = (sms.provider, sms.message_id)
        if key in self.seen:
            return InboundResult(duplicate=True, kind=kind)
        self.seen.add(key)
        if sender is None and sms.from_phone and (sms.opt_out_type == "STOP" or is_opt_out_intent(sms.body)):
            history = self.stop_by_history(position, now, sms, rules)
            if history is not None:
                return history
        if sender is None or match is None:
            self._inbound(now, sms, brand=None, kind=kind, match=match, program=None)
            return InboundResult(duplicate=False, kind=kind)
        brand = sender.brand
        if sms.channel != CHANNEL_SMS and (match.kind is not Kind.STOP or not sms.from_phone):
            # Consent is per channel: a JOIN, YES or START on WhatsApp or Messenger is no SMS
            # consent and earns no SMS. The brand hears of it, and a person can act.
            self._received_event(now, brand, sms, match)
            self._inbound(now, sms, brand=brand.key, kind=kind, match=match, program=None)
            return InboundResult(duplicate=False, kind=kind)
        if kind == UNMATCHED:
            self._received_event(now, brand, sms, match)
        assert sms.from_phone is not None  # only channel addresses lack a phone, and they stopped above
        stored = self.subs[(brand.key, sms.from_phone)]
        keys = {p.key for p in sender.programs}
        subs = {program: sub for program, sub in stored.items() if program in keys}
        _expire_due(self.writes, now, subs=subs, sender=sender)
        proof = Proof(source=Source.SMS, keyword=match.keyword, message_id=sms.message_id, raw_text=sms.body,
                      reason=match.why if match.kind is Kind.STOP else None)
        ctx = _Ctx(batch=self, now=now, sms=sms, sender=sender, stored=stored, subs=subs, proof=proof, match=match)
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
        index = self._inbound(now, sms, brand=brand.key, kind=kind, match=match, program=plan.program)
        if plan.reply is None:
            return InboundResult(duplicate=False, kind=kind, program=plan.program)
        body = rules.render(brand.key, plan.program, plan.reply.value, plan.language)
        if plan.ended_all or plan.clarify:
            body = opt_out_scope.stop_reply(body, brand, ended_all=plan.ended_all, clarify=plan.clarify,
                                            language=plan.language)
        if body is None:  # an optional message the brand did not configure
            return InboundResult(duplicate=False, kind=kind, program=plan.program)
        from_number, service_id = reply_route(rules, sender, plan.program, sms)
        row = sms_row(now=now, brand=brand.key, program=plan.program, phone=sms.from_phone, body=body,
                      purpose=plan.reply.value, from_number=from_number, service_id=service_id)
        self.replies.append((position, index, row))
        self.writes.reply(plan.reply.value, body, message_id=sms.message_id)  # the ledger keeps the text sent
        return InboundResult(duplicate=False, kind=kind, program=plan.program, reply=body, language=plan.language)

    def stop_by_history(self, position: int, now: datetime, sms: InboundSms, rules: Rules) -> InboundResult | None:
        """A STOP to a number keywords.yaml no longer routes ends every live subscription the phone joined through
        it (None when there is none): a STOP is honoured by history, not only by today's configuration."""
        assert sms.from_phone is not None
        via = {sms.to} | ({sms.service_id} if sms.service_id else set())
        rows = self.raw.rows(
            "SELECT * FROM subscriptions WHERE phone = :phone AND status IN (:subscribed, :pending)"
            " ORDER BY brand, program", {"phone": sms.from_phone, "subscribed": Status.SUBSCRIBED.value,
                                         "pending": Status.PENDING.value})
        rows = [row for row in rows if row["joined_via"] in via or (row["joined_via"] is None and row["sender"] in via)]
        if not rows:
            return None
        why = detect(sms.body).why or (f"keyword: '{sms.body.strip()}'" if sms.opt_out_type != "STOP" else "carrier")
        reason = f"{why}; sent to {sms.to}, which keywords.yaml no longer routes: ends what the phone joined through it"
        carrier = sms.opt_out_type == "STOP"
        proof = Proof(source=Source.CARRIER if carrier else (Source.SMS if sms.channel == CHANNEL_SMS
                                                             else Source(sms.channel)),
                      keyword="STOP", message_id=sms.message_id, raw_text=sms.body, reason=reason)
        ended: dict[str, list[Sub]] = {}
        for row in rows:
            stored = self.subs.setdefault((row["brand"], sms.from_phone), {})
            sub = stored.setdefault(row["program"], Sub(values=row))  # one object per row, shared with the batch
            brand = rules.brands.get(row["brand"])
            apply_event(self.writes, sub, Event.CARRIER_OPT_OUT if carrier else Event.STOP, now=now, proof=proof,
                        brand=brand)
            ended.setdefault(row["brand"], []).append(sub)
        for brand_key, subs in ended.items():
            self.cancel(now, brand=brand_key, phone=sms.from_phone, programs=[sub.program for sub in subs])
        lead = next(iter(ended))
        index = self._inbound(now, sms, brand=lead, kind=Kind.STOP.value, match=None, program=None)
        body = None
        if lead in rules.brands and not carrier and sms.channel == CHANNEL_SMS:
            programs = [sub.program for sub in ended[lead] if sub.program in rules.brands[lead].programs]
            body = rules.render(lead, programs[0] if len(programs) == 1 else None, Reply.STOP.value,
                                ended[lead][0].language)
        if body is None:  # the brand is gone (its texts with it), or the carrier already answered
            return InboundResult(duplicate=False, kind=Kind.STOP.value)
        from_number, service_id = (None, sms.service_id) if sms.service_id else (sms.to, None)
        row = sms_row(now=now, brand=lead, program=None, phone=sms.from_phone, body=body, purpose=Reply.STOP.value,
                      from_number=from_number, service_id=service_id)
        for sub in ended[lead]:
            sub.set(last_stop_reply_at=now)
        self.replies.append((position, index, row))
        return InboundResult(duplicate=False, kind=Kind.STOP.value, reply=body)

    def _received_event(self, now: datetime, brand: Brand, sms: InboundSms, match: Match | None) -> None:
        """message.received for a text that changes nothing; message.flagged, with why, for one close to an opt-out."""
        flagged = match is not None and match.flagged
        data = message_received_event(
            brand=brand.key, phone=sms.from_phone, to=sms.to, body=sms.body, provider_message_id=sms.message_id,
            received_at=now, channel=sms.channel, address=sms.from_address, media=media_json(sms.media))
        if flagged:
            assert match is not None
            data["reason"] = match.why
        self.writes.event(event_row(now, brand=brand, type=MESSAGE_FLAGGED if flagged else MESSAGE_RECEIVED,
                                    data=data))

    def _inbound(self, now: datetime, sms: InboundSms, *, brand: str | None, kind: str, match: Match | None,
                 program: str | None) -> int:
        self.inbound.append({
            "provider": sms.provider, "message_id": sms.message_id, "account_id": sms.account_id,
            "service_id": sms.service_id, "from_phone": sms.from_phone, "from_address": sms.from_address,
            "channel": sms.channel, "to": sms.to, "body": sms.body, "num_media": sms.num_media,
            "media": media_json(sms.media), "opt_out_type": sms.opt_out_type, "brand": brand, "program": program,
            "kind": kind, "keyword": match.keyword if match else None, "params": dict(sms.params),
            # Flagged only when nothing acted on it: a person decides what it meant.
            "flagged": bool(match is not None and match.flagged and match.kind is None), "received_at": now,
        })
        return len(self.inbound) - 1

    def cancel(self, now: datetime, *, brand: str, phone: str, programs: list[str] | None) -> None:
        """Cancel the texts still queued to `phone`, but stop replies: this batch's at once, stored ones at the write."""
        for _position, _index, row in self.replies:
            if (row["brand"] == brand and row["phone"] == phone and row["status"] == OutboxStatus.PENDING.value
                    and row["purpose"] != Reply.STOP.value and (programs is None or row["program"] in programs)):
                row.update(status=OutboxStatus.CANCELLED.value, error_reason=CANCELLED_BY_OPT_OUT, updated_at=now)
        self.cancels.append((None if programs is None else tuple(programs), {"brand": brand, "phone": phone, "now": now}))

    # --- the writes, one statement a table ------------------------------------------------------

    def write(self) -> dict[int, int]:
        """Write the batch; the outbox id of each text that queued a reply, by the text's index."""
        self.writes.flush(self.conn)
        # Texts queued before this batch: none of this batch's rows is written yet, so none is touched.
        for programs, group in groupby(self.cancels, key=lambda cancel: cancel[0]):
            cancel_queued(self.conn, [params for _programs, params in group], programs=programs)
        if not self.inbound:
            return {}
        ids = self.raw.insert_rows("inbound_messages", _INBOUND_COLUMNS, self.inbound,
                                   on_conflict="(provider, message_id) DO NOTHING", ids=True)
        if len(ids) != len(self.inbound):  # cannot happen under the lock; failing makes the writer retry alone
            raise RuntimeError("an inbound MessageSid was stored by someone else meanwhile")
        if not self.replies:
            return {}
        for _position, index, row in self.replies:
            row["inbound_id"] = ids[index]
        queued = self.raw.insert_rows("outbox", SMS_COLUMNS, [row for _p, _i, row in self.replies], ids=True)
        return {position: outbox_id for (position, _index, _row), outbox_id in zip(self.replies, queued, strict=True)}


_INBOUND_COLUMNS = ("provider", "message_id", "account_id", "service_id", "from_phone", "from_address", "channel", "to",
                    "body", "num_media", "media", "opt_out_type", "brand", "program", "kind", "keyword", "params",
                    "flagged", "received_at")


def media_json(media: Sequence[Media]) -> list[dict[str, str | None]] | None:
    """MMS attachments as stored and shown: [{url, contentType}], None for none."""
    return [{"url": m.url, "contentType": m.content_type} for m in media] if media else None


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


def _expire_due(writes: Writes, now: datetime, *, subs: dict[str, Sub], sender: SenderRules) -> None:
    """Lazy DOI expiry: a pending DOI past its deadline goes back before this text is applied."""
    for _program, sub in sorted(subs.items()):  # in one order, whatever order the rows were read in
        if sub.status == Status.PENDING.value and sub.doi_expires_at is not None and sub.doi_expires_at <= now:
            apply_event(writes, sub, Event.EXPIRE, now=now, proof=Proof(source=Source.SYSTEM), brand=sender.brand)


@dataclass
class _Ctx:
    """One text being applied: its phone's subscriptions to the programs on the number it reached."""

    batch: _Batch
    now: datetime
    sms: InboundSms
    sender: SenderRules
    stored: dict[str, Sub]  # the phone's subscriptions in the brand, shared by the batch's texts
    subs: dict[str, Sub]  # those to this sender's programs
    proof: Proof
    match: Match

    def sub(self, program: str) -> Sub:
        if program not in self.subs and program in self.stored:  # joined through this sender, since moved
            self.subs[program] = self.stored[program]
        if program not in self.subs:
            self.subs[program] = self.stored[program] = Sub.blank(
                brand=self.sender.brand.key, program=program, phone=self.phone, now=self.now)
        return self.subs[program]

    @property
    def phone(self) -> str:
        assert self.sms.from_phone is not None  # texts without a phone never reach a _Ctx
        return self.sms.from_phone

    def later_opt_out(self, sub: Sub) -> bool:
        """True when the phone opted out of `sub` after this text was received (a text applied late, from the spool)."""
        return sub.opted_out_at is not None and sub.opted_out_at > self.now

    @property
    def via(self) -> str:
        return self.sms.service_id or self.sms.to

    def stop(self) -> _Plan:
        carrier = self.sms.opt_out_type == "STOP"
        other_channel = self.sms.channel != CHANNEL_SMS
        brand = self.sender.brand
        reach = opt_out_scope.PROGRAM
        if other_channel:
            # An opt-out is not channel-specific: STOP on WhatsApp ends the phone's SMS
            # subscriptions to every program of the brand (consent events name the channel).
            scope, reach = list(brand.programs), opt_out_scope.BRAND
        elif carrier or self.match.program is None:
            # A plain opt-out ends the brand's programs (revoke-all) or, in sender scope, this
            # number's; Twilio's Advanced Opt-Out blocks the whole sender whatever the text named.
            scope, reach = opt_out_scope.plain_stop_programs(brand, self.sender.program_keys, self.match.normalized)
            if reach == opt_out_scope.SENDER:
                # And what the phone joined through this number, though keywords.yaml has since moved
                # that program to another sender: a STOP is honoured by history too.
                scope += sorted(key for key, sub in self.stored.items() if key not in scope and key in
                                self.sender.brand.programs and sub.joined_via == self.via
                                and sub.status in (Status.SUBSCRIBED.value, Status.PENDING.value))
        else:
            scope = [self.match.program]
        event = Event.CARRIER_OPT_OUT if carrier else Event.STOP
        if carrier:
            proof = Proof(source=Source.CARRIER, keyword=self.match.keyword or "STOP", message_id=self.sms.message_id,
                          raw_text=self.sms.body, reason=self.match.why)
        elif other_channel:
            proof = replace(self.proof, source=Source(self.sms.channel))
        else:
            proof = self.proof
        subs = [self.sub(key) for key in scope]
        # Decided before the write, so last_stop_reply_at goes out in the same UPDATE.
        changes = any(sub.status != Status.UNSUBSCRIBED.value for sub in subs)
        recent = all(sub.last_stop_reply_at is not None and self.now - sub.last_stop_reply_at < STOP_REPLY_INTERVAL
                     for sub in subs)
        # Twilio already answered a STOP it classified itself; else at most one repeat a day. An
        # opt-out on another channel gets no SMS: the person did not text this number.
        reply = not carrier and not other_channel and (changes or not recent)
        for sub in subs:
            if reply:
                sub.set(last_stop_reply_at=self.now)
            # A program on another of the brand's numbers keeps the sender it was joined through.
            here = sub.program in self.sender.program_keys
            apply_event(self.batch.writes, sub, event, now=self.now, proof=proof, sender=self.via if here else None,
                        brand=self.sender.brand)
        whole = reach == opt_out_scope.BRAND or len(scope) == len(self.sender.programs)
        self.batch.cancel(self.now, brand=self.sender.brand.key, phone=self.phone, programs=None if whole else scope)
        program = scope[0] if len(scope) == 1 else None
        # In the language of the stop word, else the one the phone joined in (a LUNCH joiner of a
        # French program reads English), like help and welcome.
        joined = next((sub.language for sub in subs if sub.language), None)
        # Sender scope: one line may tell a phone still subscribed elsewhere in the brand how to stop it all.
        clarify = reach == opt_out_scope.SENDER and any(
            s.status in (Status.SUBSCRIBED.value, Status.PENDING.value) for p, s in self.stored.items() if p not in scope)
        return _Plan(program=program, reply=Reply.STOP if reply else None, language=self.match.language or joined,
                     ended_all=reach == opt_out_scope.BRAND and program is None, clarify=clarify)

    def help(self) -> _Plan:
        program = self.match.program or self.batch.last_program(self.phone, self.sms.to)
        if program is None and len(self.sender.programs) == 1:
            program = self.sender.programs[0].key
        if self.sms.opt_out_type == "HELP":
            return _Plan(program=program)  # Twilio already answered the HELP
        language = self.match.language or (self.subs[program].language if program in self.subs else None)
        return _Plan(program=program, reply=Reply.HELP, language=language)

    def confirm(self) -> _Plan:
        # A confirm answers a DOI asked before it was received (a late one must not confirm a newer DOI).
        pending = [s for s in self.subs.values() if s.status == Status.PENDING.value
                   and (s.doi_requested_at is None or s.doi_requested_at <= self.now)
                   and (self.match.program is None or s.program == self.match.program)]
        if not pending:
            expired = [s for s in self.subs.values() if s.doi_expired_at is not None
                       and s.status != Status.SUBSCRIBED.value]
            if expired:
                latest = max(expired, key=lambda s: (s.doi_expired_at, s.program))
                return _Plan(program=latest.program, reply=Reply.DOI_EXPIRED,
                             language=self.match.language or latest.language)
            return _Plan()
        # A confirm answers the phone's most recent pending DOI on this sender.
        sub = max(pending, key=lambda s: (s.doi_requested_at, s.program))
        applied = apply_event(self.batch.writes, sub, Event.CONFIRM, now=self.now, proof=self.proof, sender=self.via,
                              brand=self.sender.brand)
        return _Plan(program=sub.program, reply=applied.rule.reply, language=self.match.language or sub.language)

    def join(self, program: Program) -> _Plan:
        allowed = self.sender.brand.allowed_countries
        if allowed is not None and not in_countries(self.phone, allowed):
            # No prompt may go to a country the brand does not serve: change nothing, say nothing.
            return _Plan(program=program.key)
        sub = self.sub(program.key)
        if self.later_opt_out(sub):
            # Received before an opt-out that is already applied: it cannot undo it.
            return _Plan(program=program.key)
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
        apply_event(self.batch.writes, sub, event, now=self.now, proof=self.proof, brand=self.sender.brand,
                    doi_expires_after=program.doi_expires_after, language=language, sender=self.via)
        return _Plan(program=program.key, reply=reply, language=language or sub.language)

    def start(self) -> _Plan:
        """Restart the program most recently left on this sender, among those the phone had joined."""
        if any(self.later_opt_out(s) for s in self.subs.values()):
            return _Plan()  # received before an opt-out that is already applied: it cannot undo it
        # A plain STOP also records "unsubscribed" for the sender's programs the phone never
        # joined; those are never restarted.
        left = [s for s in self.subs.values() if s.status == Status.UNSUBSCRIBED.value and s.unsubscribed_at
                and s.joined_at is not None]
        if not left:
            if self.sms.opt_out_type == "START":
                return _Plan()  # Twilio's Advanced Opt-Out already answered the START
            return self.help()  # nothing to restart: tell the phone what this number is
        latest = max(left, key=lambda s: (s.unsubscribed_at, s.joined_at, s.program))
        return self.join(_program(self.sender, latest.program))


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
