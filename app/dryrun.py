"""What one inbound text would do, without writing anything: the dry run behind `optline simulate --dry-run`.

The text goes through the real pipeline (app.inbound.record_texts) inside a SAVEPOINT of a
writer job, the rows it wrote are read back, and the savepoint is rolled back: nothing
stays, nothing is sent, and the metrics forget its transitions. Running inside the writer's
own transaction (rather than on a connection of its own) means a dry run never waits for,
nor holds up, the webhooks' writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.inbound import InboundJob, InboundResult, record_texts
from app.keywords import Match, Rules
from app.metrics import forget_transitions
from app.providers.base import InboundSms
from app.sql import Raw


@dataclass(frozen=True)
class Transition:
    """One change of status the text would cause."""

    program: str
    event: str
    from_status: str
    to_status: str
    reason: str | None


@dataclass(frozen=True)
class DryRun:
    """Everything one text would do."""

    text: str
    normalized: str
    brand: str | None  # None: no program uses the number it was sent to
    match: Match | None
    result: InboundResult
    transitions: list[Transition] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # brand events it would send (types)

    def lines(self) -> list[str]:
        """A human-readable account, one fact a line."""
        out = [f"text:        {self.text!r}", f"normalized:  {self.normalized!r}"]
        if self.brand is None:
            out.append("routed:      no program uses that number (stored as unrouted, nothing else)")
            return out
        match = self.match
        if match is None or match.kind is None:
            out.append("matched:     nothing (stored, sent to the brand as message.received)")
        else:
            how = f"keyword {match.keyword!r}"
            if match.by_intent:
                how = f"opt-out intent ({match.keyword!r})"
            if match.why:
                how += f": {match.why}"
            scope = f", program {match.program}" if match.program else ""
            lang = f", language {match.language}" if match.language else ""
            out.append(f"matched:     {match.kind.value} by {how}{scope}{lang}")
        if match is not None and match.flagged:
            reason = f" ({match.why})" if match.why else ""
            out.append(f"flagged:     close to an opt-out, not honoured{reason}: a person should decide")
        if self.result.duplicate:
            out.append("duplicate:   this message id was seen before: nothing happens")
        for t in self.transitions:
            out.append(f"transition:  {t.program}: {t.from_status} -> {t.to_status} ({t.event})")
        if not self.transitions and not self.result.duplicate:
            out.append("transition:  none")
        for event in self.events:
            out.append(f"brand event: {event}")
        if self.result.reply is not None:
            lang = f" [{self.result.language}]" if self.result.language else ""
            out.append(f"reply{lang}:".ljust(13) + self.result.reply)
        else:
            out.append("reply:       none")
        return out


class _Discard(Exception):
    """Rolls the savepoint back."""


def dry_run(conn: Connection, now: datetime, *, sms: InboundSms, rules: Rules) -> DryRun:
    """Apply `sms` inside a savepoint, read what it wrote, roll it back; a writer job (phone locked)."""
    sender = rules.for_sender(sms.to, sms.service_id)
    match = sender.match(sms.body, sms.opt_out_type) if sender is not None else None
    normalized = match.normalized if match is not None else sms.body.strip()
    mark = forget_transitions(conn, None)
    savepoint = conn.begin_nested()
    try:
        [result] = record_texts(conn, [(now, InboundJob(sms, rules))])
        raw = Raw(conn)
        params: dict[str, Any] = {"phone": sms.from_phone, "now": now}
        transitions = [Transition(r["program"], r["event"], r["from_status"], r["to_status"], r["reason"])
                       for r in raw.rows("SELECT program, event, from_status, to_status, reason FROM consent_events"
                                         " WHERE phone = :phone AND created_at >= :now ORDER BY id", params)]
        events = [r["purpose"] for r in raw.rows(
            "SELECT purpose FROM outbox WHERE channel = 'event' AND created_at >= :now ORDER BY id", params)]
    finally:
        savepoint.rollback()
        forget_transitions(conn, mark)
    return DryRun(text=sms.body, normalized=normalized, brand=sender.brand.key if sender is not None else None,
                  match=match, result=result, transitions=transitions, events=events)
