"""A carrier's opt-out: the phone blocked a sender at its carrier (Twilio 21610 on a send or in a report,
a provider's opt-out signal), so every program on that sender ends, with no reply (source `carrier`).

The outbox learns of it when a send is refused; it does not change consent itself (the consent
room depends on the queue, not the other way round): whoever builds the sender hands it this
function (app.main), and the webhooks call it for the provider's own signals.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from app.consent import Proof, Sub, apply_event, load_subs
from app.keywords import Rules
from app.outbox.queue import cancel_queued
from app.subscriptions import Event, Source


def carrier_opt_out(
    conn: Connection, now: datetime, *, rules: Rules | None, brand: str, phone: str, to: str | None,
    service_id: str | None, code: int | None, message_id: str | None = None, raw_text: str | None = None,
) -> list[str]:
    """Unsubscribe `phone` from every program on that sender (source carrier); returns the programs."""
    programs: list[str] | None = None
    if rules is not None:
        sender = rules.for_sender(to, service_id)
        if sender is not None:
            programs = [p.key for p in sender.programs]
    subs = load_subs(conn, brand=brand, phone=phone, programs=programs)
    proof = Proof(source=Source.CARRIER, message_id=message_id, raw_text=raw_text,
                  keyword=f"error {code}" if code else None)
    for program in programs or list(subs):
        sub = subs.get(program) or Sub.blank(brand=brand, program=program, phone=phone, now=now)
        apply_event(conn, sub, Event.CARRIER_OPT_OUT, now=now, proof=proof,
                    brand=rules.brands.get(brand) if rules is not None else None)
    cancel_queued(conn, [{"brand": brand, "phone": phone, "now": now}], programs=programs)
    return programs or list(subs)


__all__ = ["carrier_opt_out"]
