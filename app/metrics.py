"""Prometheus metrics, one registry per app so tests and processes never collide.

Where each figure is taken, chosen so the webhook path does no extra database work:

    optline_inbound_total{kind}, optline_inbound_duplicates_total, optline_replies_queued_total
        the webhook, from the result of its inbound job
    optline_transitions_total{brand,program,event,from_status,to_status}
        `app.consent.record` notes each consent event on its connection (`note_transition`);
        the writer engine's commit counts them and a rollback drops them, so a batch that
        fails and is re-run job by job is counted once
    optline_sends_total{channel,outcome}, optline_send_seconds{channel}, optline_provider_errors_total{code}
        the outbox sender, around each provider (or brand events URL) call
    optline_outbox_depth{channel,status}, optline_outbox_oldest_due_seconds{channel}
    optline_outbox_held{brand,reason}: texts held by quiet hours or a daily cap (app.holds)
        one GROUP BY over the unsent rows on a reader connection, when /metrics is scraped
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from app.providers.base import SendError

# Connection.info key holding the transitions of the open transaction (set only on watched engines).
_PENDING = "optline.transitions"
# Provider latency: a healthy Twilio answers in 100-500 ms; the adapters time out at 10-15 s.
SEND_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The outbox rows a sender still owes work, per channel (app.outbox: CHANNEL_SMS, CHANNEL_EVENT).
BACKLOG_CHANNELS = ("sms", "event")
BACKLOG_STATUSES = ("pending", "sending", "dispatching")


def note_transition(
    conn: Connection, *, brand: str, program: str, event: str, from_status: str, to_status: str
) -> None:
    """Remember one consent event for the metrics, counted when the transaction commits."""
    pending = conn.info.get(_PENDING)
    if pending is not None:
        pending.append((brand, program, event, from_status, to_status))


def forget_transitions(conn: Connection, mark: int | None) -> int:
    """Drop the transitions noted on `conn` since `mark` (None: just read it); the mark to pass later."""
    pending = conn.info.get(_PENDING)
    if pending is None:
        return 0
    if mark is not None:
        del pending[mark:]
    return len(pending)


def error_code(error: SendError) -> str:
    """The `code` label of a failed send: the provider's code, else timeout / connection / http_NNN / none."""
    if error.code is not None:
        return str(error.code)
    if error.kind is not None:
        return error.kind
    if error.http_status is not None:
        return f"http_{error.http_status}"
    return "none"


class Metrics:
    """The figures optline exports at /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.inbound_total = Counter("optline_inbound_total", "Inbound texts by class", ["kind"], registry=r)
        self._inbound_by_kind: dict[str, Any] = {}
        self.duplicates_total = Counter("optline_inbound_duplicates_total", "Inbound texts already seen", registry=r)
        self.replies_total = Counter("optline_replies_queued_total", "Replies queued", registry=r)
        self.transitions_total = Counter(
            "optline_transitions_total", "Consent events committed, by brand, program, event and status change",
            ["brand", "program", "event", "from_status", "to_status"], registry=r)
        self.sends_total = Counter("optline_sends_total", "Outbox sends by channel and outcome "
                                   "(sent, retry, failed, opted_out, cancelled)", ["channel", "outcome"], registry=r)
        self.send_seconds = Histogram("optline_send_seconds", "Provider (or brand events URL) call latency",
                                      ["channel"], buckets=SEND_BUCKETS, registry=r)
        self.provider_errors_total = Counter("optline_provider_errors_total", "SMS sends the provider refused or "
                                             "never answered, by provider error code", ["code"], registry=r)
        self.outbox_depth = Gauge("optline_outbox_depth", "Outbox rows still to send, by channel and status",
                                  ["channel", "status"], registry=r)
        self.ledger_checkpoint = Gauge("optline_ledger_checkpoint", "The newest ledger checkpoint (its id), "
                                       "labelled with its hash: keep it outside optline", ["hash"], registry=r)
        self.outbox_oldest_due = Gauge("optline_outbox_oldest_due_seconds",
                                       "How long the oldest due outbox row has been waiting", ["channel"], registry=r)
        self.outbox_held = Gauge("optline_outbox_held", "Texts held by a consent rule (quiet hours, daily cap),"
                                 " by brand and reason", ["brand", "reason"], registry=r)

    def inbound(self, result: Any) -> None:
        """Count one inbound text."""
        if result.duplicate:
            self.duplicates_total.inc()
            return
        counter = self._inbound_by_kind.get(result.kind)
        if counter is None:  # labels() costs more than the increment: keep each kind's child
            counter = self._inbound_by_kind[result.kind] = self.inbound_total.labels(kind=result.kind)
        counter.inc()
        if result.outbox_id is not None:
            self.replies_total.inc()

    def watch(self, engine: Engine) -> None:
        """Count the consent events that `engine`'s transactions commit."""

        def begin(conn: Connection) -> None:
            conn.info[_PENDING] = []

        def commit(conn: Connection) -> None:
            # SQLAlchemy has no after-commit hook on a Connection; a COMMIT that fails after
            # this point (rare: the statements already ran) would be counted anyway.
            for labels in conn.info.pop(_PENDING, None) or ():
                self.transitions_total.labels(*labels).inc()

        def rollback(conn: Connection) -> None:
            conn.info.pop(_PENDING, None)

        event.listen(engine, "begin", begin)
        event.listen(engine, "commit", commit)
        event.listen(engine, "rollback", rollback)

    def sent(self, channel: str, outcome: str, error: SendError | None = None) -> None:
        """Count one finished send attempt (and, for a text, the provider's error code)."""
        self.sends_total.labels(channel, outcome).inc()
        if error is not None and channel == "sms":
            self.provider_errors_total.labels(error_code(error)).inc()

    def set_outbox(self, backlog: Iterable[tuple[str, str, int, datetime | None]] | None, now: datetime) -> None:
        """Set the outbox gauges from (channel, status, rows, earliest due time) groups; None means unknown."""
        if backlog is None:
            for channel in BACKLOG_CHANNELS:
                self.outbox_oldest_due.labels(channel).set(math.nan)
                for status in BACKLOG_STATUSES:
                    self.outbox_depth.labels(channel, status).set(math.nan)
            return
        depth = {(c, s): 0 for c in BACKLOG_CHANNELS for s in BACKLOG_STATUSES}
        oldest: dict[str, float] = dict.fromkeys(BACKLOG_CHANNELS, 0.0)
        for channel, status, rows, due in backlog:
            depth[(channel, status)] = rows
            if due is not None and due <= now:
                oldest[channel] = max(oldest.get(channel, 0.0), (now - due).total_seconds())
        for (channel, status), rows in depth.items():
            self.outbox_depth.labels(channel, status).set(rows)
        for channel, seconds in oldest.items():
            self.outbox_oldest_due.labels(channel).set(seconds)

    def set_held(self, held: Iterable[tuple[str, str, int]]) -> None:
        """Set the held-texts gauge from (brand, reason, rows); a brand with none left drops to 0."""
        seen = set()
        for brand, reason, rows in held:
            self.outbox_held.labels(brand, reason).set(rows)
            seen.add((brand, reason))
        for labels in list(self.outbox_held._metrics):  # noqa: SLF001 - the label sets set before
            if labels not in seen:
                self.outbox_held.labels(*labels).set(0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
