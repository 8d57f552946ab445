"""SQLModel tables. Alembic migrations (alembic/versions) are the only way the schema is made.

Phone numbers are E.164 strings; times are `UtcDateTime` (aware UTC); brands and programs
are keys from keywords.yaml, not tables, so a config change never needs a migration.
"""

from __future__ import annotations

import os
import time
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import UtcDateTime

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """A sortable, unguessable id: prefix + 26 Crockford base32 chars (48-bit ms time, 80 random bits)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UtcDateTime, nullable=nullable, index=index)


class Subscription(SQLModel, table=True):
    """One phone's status in one program."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        sa.UniqueConstraint("brand", "program", "phone", name="uq_subscriptions_brand_program_phone"),
        sa.Index("ix_subscriptions_brand_phone", "brand", "phone"),
        # The send check (app.sendcheck) reads all it needs from this one alone (see migration 0011
        # for why the narrow one stays).
        sa.Index("ix_subscriptions_brand_phone_program_status", "brand", "phone", "program", "status", "opted_out_at"),
        sa.Index("ix_subscriptions_status_doi_expires_at", "status", "doi_expires_at"),
        sa.Index("ix_subscriptions_phone_joined_via", "phone", "joined_via"),
        # GET /v1/opt-outs pages the suppression list by time.
        sa.Index("ix_subscriptions_brand_opted_out_at", "brand", "opted_out_at", "id"),
        # The console's subscriber list filtered by status, paged by phone (app.console.subscribers_query).
        sa.Index("ix_subscriptions_brand_program_status_phone", "brand", "program", "status", "phone"),
    )

    id: str = Field(primary_key=True, max_length=40)
    brand: str = Field(max_length=64)
    program: str = Field(max_length=64)
    phone: str = Field(max_length=20)
    status: str = Field(max_length=16)
    # The status a pending DOI returns to if it expires unconfirmed.
    status_before_doi: str | None = Field(default=None, max_length=16)
    keyword: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=16)
    sender: str | None = Field(default=None, max_length=40)
    doi_requested_at: datetime | None = _ts()
    doi_expires_at: datetime | None = _ts()
    doi_expired_at: datetime | None = _ts()
    subscribed_at: datetime | None = _ts()
    unsubscribed_at: datetime | None = _ts()
    last_prompt_at: datetime | None = _ts()
    last_stop_reply_at: datetime | None = _ts()
    # The latest opt-out from this program by any means (SMS, API, carrier, console), never
    # cleared: API consent must be newer than it, and a text applied late (from the spool)
    # may not undo it.
    opted_out_at: datetime | None = _ts()
    # The latest time the phone itself joined (pendingDOI or subscribed): START restarts only
    # programs the phone had joined, never one a plain STOP merely recorded.
    joined_at: datetime | None = _ts()
    # An opt-out the phone made itself (a texted STOP on any channel, a carrier or provider
    # signal) that the phone has not undone by joining again: while set, only the phone may
    # reopen this program (no API, import or console path subscribes or prompts it).
    phone_opted_out_at: datetime | None = _ts()
    phone_opted_out_source: str | None = Field(default=None, max_length=16)
    # The sender the phone joined through: a STOP to it is honoured even once keywords.yaml no
    # longer routes that number.
    joined_via: str | None = Field(default=None, max_length=40)
    consent_source: str | None = Field(default=None, max_length=200)
    consented_at: datetime | None = _ts()
    profile_id: str | None = Field(default=None, max_length=40, index=True)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False, index=True)


class ConsentEvent(SQLModel, table=True):
    """The append-only proof of consent: one row per change of status (never updated or deleted)."""

    __tablename__ = "consent_events"
    __table_args__ = (
        sa.Index("ix_consent_events_brand_phone", "brand", "phone"),
        sa.Index("ix_consent_events_brand_id", "brand", "id"),
        # The console's 30-day chart and the ledger's since/until filters read by time.
        sa.Index("ix_consent_events_brand_created_at", "brand", "created_at"),
        # The console's operations page reads the day's STOPs, not the day's events.
        sa.Index("ix_consent_events_brand_event_created_at", "brand", "event", "created_at"),
        # One link per place in a chain: two writers can never fork a chain.
        sa.Index("uq_consent_events_chain", "brand", "phone_key", "chain_seq", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    subscription_id: str = Field(max_length=40, index=True)
    brand: str = Field(max_length=64)
    program: str = Field(max_length=64)
    phone: str = Field(max_length=20)
    event: str = Field(max_length=32)
    from_status: str = Field(max_length=16)
    to_status: str = Field(max_length=16)
    source: str = Field(max_length=16)
    keyword: str | None = Field(default=None, max_length=64)
    provider_message_id: str | None = Field(default=None, max_length=64)
    raw_text: str | None = Field(default=None)
    api_key_id: int | None = Field(default=None, sa_type=BigId)
    consent_source: str | None = Field(default=None, max_length=200)
    consent_proof: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    consented_at: datetime | None = _ts()
    # Why an opt-out by SMS was read as one: the rule and the words that fired.
    reason: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts(nullable=False)
    # The tamper-evident chain (app.ledger): one chain per brand and phone, keyed by a keyed
    # hash of the number so the chain outlives an erasure of the number and its texts.
    phone_key: str | None = Field(default=None, max_length=64)
    chain_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)
    raw_text_sha256: str | None = Field(default=None, max_length=64)
    # The rules it was made under (keywords.yaml's sha256) and the reply sent with it.
    rules_sha256: str | None = Field(default=None, max_length=64)
    reply_purpose: str | None = Field(default=None, max_length=32)
    reply_text: str | None = Field(default=None, sa_type=sa.Text)
    reply_sha256: str | None = Field(default=None, max_length=64)


class InboundMessage(SQLModel, table=True):
    """Every inbound text received, deduplicated on the provider's message id."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        sa.UniqueConstraint("provider", "message_id", name="uq_inbound_messages_provider_message_id"),
        sa.Index("ix_inbound_messages_from_to_id", "from_phone", "to", "id"),
        sa.Index("ix_inbound_messages_brand_id", "brand", "id"),
        sa.Index("ix_inbound_messages_brand_flagged_id", "brand", "flagged", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    provider: str = Field(max_length=16)
    message_id: str = Field(max_length=64)
    account_id: str | None = Field(default=None, max_length=64)
    service_id: str | None = Field(default=None, max_length=64)
    # The sender's phone, E.164; None when the channel address is not a phone (messenger:…).
    from_phone: str | None = Field(default=None, max_length=20)
    from_address: str | None = Field(default=None, max_length=128)  # that address, as received
    channel: str = Field(default="sms", max_length=16, sa_column_kwargs={"server_default": "sms"})
    to: str = Field(max_length=40)
    body: str = Field(default="")
    num_media: int = Field(default=0)
    media: list[dict[str, Any]] | None = Field(default=None, sa_type=sa.JSON)  # [{url, contentType}]
    opt_out_type: str | None = Field(default=None, max_length=16)
    brand: str | None = Field(default=None, max_length=64)
    program: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=16)
    keyword: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # Close to an opt-out, not honoured (negated or ambiguous): a person should decide.
    flagged: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    flag_resolution: str | None = Field(default=None, max_length=16)  # "opted_out" | "dismissed"
    flag_resolved_at: datetime | None = _ts()
    flag_resolved_by: str | None = Field(default=None, max_length=254)
    received_at: datetime = _ts(nullable=False)


_HELD = "held_until IS NOT NULL"
_FAILED = "status IN ('failed', 'undelivered')"


class Outbox(SQLModel, table=True):
    """A reply (or brand event) to deliver, written in the same transaction as its cause."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
        # The claim's first look: due stop replies, however many prompts are queued.
        sa.Index("ix_outbox_purpose_due", "purpose", "status", "next_attempt_at"),
        # Claims walk one priority at a time: stop replies, then help and welcome, then prompts.
        sa.Index("ix_outbox_priority_due", "priority", "status", "next_attempt_at"),
        sa.Index("ix_outbox_brand_phone_status", "brand", "phone", "status"),
        sa.Index("ix_outbox_provider_message_id", "provider_message_id"),
        # Held texts, for metrics and the console: only the rows that carry a time are in it. Whole, it
        # was a (brand, …) index PostgreSQL took, on a table without statistics yet, to cancel a
        # phone's queued texts at a STOP, reading the whole brand (migration 0013).
        sa.Index("ix_outbox_brand_held_until", "brand", "held_until",
                 sqlite_where=sa.text(_HELD), postgresql_where=sa.text(_HELD)),
        # The console's failures by error code: only failed texts are in it, so sending costs nothing
        # until a text fails (app.console.operations writes the condition the same way).
        sa.Index("ix_outbox_failed_brand_created_at", "brand", "created_at",
                 sqlite_where=sa.text(_FAILED), postgresql_where=sa.text(_FAILED)),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    channel: str = Field(max_length=8)  # "sms" | "event"
    brand: str | None = Field(default=None, max_length=64)
    program: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=20)
    from_number: str | None = Field(default=None, max_length=20)
    service_id: str | None = Field(default=None, max_length=64)
    body: str = Field(default="")
    purpose: str = Field(max_length=32)
    # 0 stop replies, 1 help, welcome and other answers, 2 prompts and brand events (app.outbox.queue.priority_of).
    priority: int = Field(default=2, sa_type=sa.SmallInteger, sa_column_kwargs={"server_default": "2"})
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = _ts()
    # Transient failures are retried until then (stop replies 1 h, texts 24 h, brand events 72 h).
    deadline_at: datetime | None = _ts()
    lease_until: datetime | None = _ts()
    claimed_by: str | None = Field(default=None, max_length=64)
    dispatched_at: datetime | None = _ts()  # when the send was decided (no stop before it, under the phone's lock)
    provider_message_id: str | None = Field(default=None, max_length=64)
    error_code: int | None = Field(default=None)
    error_reason: str | None = Field(default=None)
    inbound_id: int | None = Field(default=None, sa_type=BigId)
    url: str | None = Field(default=None)
    payload: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts()
    # A text the phone did not just ask for, held by a consent rule (app.holds): due then, and why.
    held_until: datetime | None = _ts()
    held_reason: str | None = Field(default=None, max_length=32)  # "quiet_hours" | "daily_cap"


class BrandSend(SQLModel, table=True):
    """A text the brand sent itself and reported (POST /v1/sends): it counts toward the program's caps."""

    __tablename__ = "brand_sends"
    __table_args__ = (
        # Caps count a phone's texts in one program over the last 24 h: one index range.
        sa.Index("ix_brand_sends_brand_phone_program_sent_at", "brand", "phone", "program", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    brand: str = Field(max_length=64)
    program: str = Field(max_length=64)
    phone: str = Field(max_length=20)
    sent_at: datetime = _ts(nullable=False)
    external_id: str | None = Field(default=None, max_length=255)
    api_key_id: int | None = Field(default=None, sa_type=BigId)
    created_at: datetime = _ts(nullable=False)


class OptOutImport(SQLModel, table=True):
    """One opt-out list imported (API or CLI): what it held and what it changed."""

    __tablename__ = "opt_out_imports"

    id: str = Field(primary_key=True, max_length=40)  # imp_…, the batch id each consent event names
    brand: str = Field(max_length=64, index=True)
    origin: str = Field(max_length=16)  # "api" | "cli"
    api_key_id: int | None = Field(default=None, sa_type=BigId)
    rows: int = Field(default=0)
    applied: int = Field(default=0)  # rows that opted a phone out of at least one program
    unchanged: int = Field(default=0)  # rows already opted out
    rejected: int = Field(default=0)
    created_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = _ts()


class DeliveryReport(SQLModel, table=True):
    """The furthest delivery status a provider reported for a message id.

    Kept apart from the outbox because a status callback can arrive before the sender has
    recorded the provider's message id on its row.
    """

    __tablename__ = "delivery_reports"

    message_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)
    error_code: int | None = Field(default=None)
    updated_at: datetime = _ts(nullable=False)


class ApiKey(SQLModel, table=True):
    """A brand-scoped API key, stored as a SHA-256 hash only."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    brand: str = Field(max_length=64, index=True)
    name: str | None = Field(default=None, max_length=200)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = _ts()


# Live profiles only: a deleted profile is a tombstone whose personal fields are null anyway,
# but the condition keeps a tombstone from ever blocking a new profile with the same keys.
_LIVE = sa.text("deleted_at IS NULL")


class Profile(SQLModel, table=True):
    """A person a brand knows, addressable by id, externalId, phone or email.

    DELETE keeps the row as a tombstone (personal fields nulled, `deleted_at` set) so the
    id answers 404 and subscriptions that pointed at it are detached, never orphaned.
    """

    __tablename__ = "profiles"
    __table_args__ = (
        sa.Index("uq_profiles_brand_external_id", "brand", "external_id", unique=True,
                 sqlite_where=_LIVE, postgresql_where=_LIVE),
        sa.Index("uq_profiles_brand_phone", "brand", "phone", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE),
        sa.Index("uq_profiles_brand_email", "brand", "email", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE),
        # Listing walks (brand, updated_at, id) so a page costs the same at any depth.
        sa.Index("ix_profiles_brand_updated_at_id", "brand", "updated_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    brand: str = Field(max_length=64)
    external_id: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=20)
    email: str | None = Field(default=None, max_length=254)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    deleted_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class IdempotencyKey(SQLModel, table=True):
    """A stored answer to a POST/PUT/PATCH/DELETE sent with `Idempotency-Key`, kept 24 h."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # Scoped to brand + method + path: a key used on another route is another key.
        sa.UniqueConstraint("brand", "method", "path", "key", name="uq_idempotency_keys_scope"),
        sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    brand: str = Field(max_length=64)
    method: str = Field(default="POST", max_length=8)
    path: str = Field(default="", max_length=512)
    key: str = Field(max_length=255)
    # Hash of method, path and body: the same key with another request is refused (422).
    request_hash: str = Field(max_length=64)
    status: str = Field(max_length=16)  # "in_flight" while the first request runs, then "done"
    # An in-flight claim lapses then (its process died, its client vanished): the key is free again.
    lease_until: datetime | None = _ts()
    response_status: int | None = Field(default=None)
    response_body: str | None = Field(default=None, sa_type=sa.Text)
    response_headers: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)


class ConsoleUser(SQLModel, table=True):
    """A person who signs in to the web console; sees one brand, like an API key."""

    __tablename__ = "console_users"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    brand: str = Field(max_length=64, index=True)
    email: str = Field(max_length=254, unique=True)  # stored lower-case
    password_hash: str = Field(max_length=255)  # argon2id, with its parameters and salt
    created_at: datetime = _ts(nullable=False)
    disabled_at: datetime | None = _ts()
    # Sessions issued before this are void: signing out ends the session in every browser.
    signed_out_at: datetime | None = _ts()
    last_sign_in_at: datetime | None = _ts()
    # What the account may do in the console: "owner" (keys, users, and everything below),
    # "compliance" (opt-outs, exports and every page), "viewer" (reads only). app.console.roles.
    role: str = Field(default="viewer", max_length=16, sa_column_kwargs={"server_default": "owner"})
    # A one-time password reset link (`optline users reset-password`): the SHA-256 of its
    # token, and when it stops working. Used once, then both are cleared.
    reset_token_hash: str | None = Field(default=None, max_length=64)
    reset_expires_at: datetime | None = _ts()


class ConsoleSignInAttempt(SQLModel, table=True):
    """Failed console sign-ins of one email from one client address, shared by every process.

    The row of account "*" counts an address's failures whatever the email. Each failure past
    a few free ones makes the next try wait twice as long as the last (app.console.throttle).
    """

    __tablename__ = "console_sign_in_attempts"

    account: str = Field(primary_key=True, max_length=254)  # the email typed, lower-case; "*" for the address
    address: str = Field(primary_key=True, max_length=64)  # the client address (an IPv6 /64 network)
    failures: int = Field(default=0)
    last_failed_at: datetime = _ts(nullable=False, index=True)
    blocked_until: datetime | None = _ts()


class SubscriptionCount(SQLModel, table=True):
    """Signed amounts whose sum per (brand, program, status) is how many subscriptions are in it.

    Added to in the transaction of every status write, folded now and then (app.status_counts).
    """

    __tablename__ = "subscription_counts"
    __table_args__ = (sa.Index("ix_subscription_counts_brand_program_status", "brand", "program", "status"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    brand: str = Field(max_length=64)
    program: str = Field(max_length=64)
    status: str = Field(max_length=16)
    n: int = Field(sa_type=sa.BigInteger)


class ConsentRollup(SQLModel, table=True):
    """Consent events counted per brand, program, UTC hour, source and keyword (the console's analytics).

    Built incrementally from the ledger by app.console.rollup; never the proof itself.
    """

    __tablename__ = "consent_rollup"
    # On SQLite the rows live in primary-key order (brand, program, hour, …): a range of hours is read
    # in one sweep instead of a lookup per row.
    __table_args__ = {"sqlite_with_rowid": False}

    brand: str = Field(primary_key=True, max_length=64)
    program: str = Field(primary_key=True, max_length=64)
    hour: datetime = Field(primary_key=True, sa_type=UtcDateTime)  # the UTC hour the events fell in
    source: str = Field(primary_key=True, max_length=16)
    keyword: str = Field(primary_key=True, max_length=64)  # "" when the events had none
    joins: int = Field(default=0)  # became pending or subscribed from none/unsubscribed
    confirmations: int = Field(default=0)  # pendingDOI → subscribed
    opt_outs: int = Field(default=0)  # subscribed or pending → unsubscribed
    subscribed_in: int = Field(default=0)  # became subscribed
    subscribed_out: int = Field(default=0)  # stopped being subscribed


class ConsentRollupSeries(SQLModel, table=True):
    """consent_rollup without source and keyword: one row per brand, program and UTC hour (the charts)."""

    __tablename__ = "consent_rollup_series"
    __table_args__ = {"sqlite_with_rowid": False}

    brand: str = Field(primary_key=True, max_length=64)
    program: str = Field(primary_key=True, max_length=64)
    hour: datetime = Field(primary_key=True, sa_type=UtcDateTime)
    joins: int = Field(default=0)
    confirmations: int = Field(default=0)
    opt_outs: int = Field(default=0)
    subscribed_in: int = Field(default=0)
    subscribed_out: int = Field(default=0)


class ConsentRollupDay(SQLModel, table=True):
    """consent_rollup by day in one time zone (a day: the UTC hours that start in it there), so a year's
    figures are a few hundred rows. Kept for each zone in rollup_zones (app.console.rollup)."""

    __tablename__ = "consent_rollup_days"
    __table_args__ = {"sqlite_with_rowid": False}

    brand: str = Field(primary_key=True, max_length=64)
    zone: str = Field(primary_key=True, max_length=64)  # an IANA name
    program: str = Field(primary_key=True, max_length=64)
    day: date = Field(primary_key=True)
    source: str = Field(primary_key=True, max_length=16)
    keyword: str = Field(primary_key=True, max_length=64)
    joins: int = Field(default=0)
    confirmations: int = Field(default=0)
    opt_outs: int = Field(default=0)
    subscribed_in: int = Field(default=0)
    subscribed_out: int = Field(default=0)


class ConsentRollupDaySeries(SQLModel, table=True):
    """consent_rollup_days without source and keyword: one row per brand, zone, program and day (the charts)."""

    __tablename__ = "consent_rollup_day_series"
    __table_args__ = {"sqlite_with_rowid": False}

    brand: str = Field(primary_key=True, max_length=64)
    zone: str = Field(primary_key=True, max_length=64)
    program: str = Field(primary_key=True, max_length=64)
    day: date = Field(primary_key=True)
    joins: int = Field(default=0)
    confirmations: int = Field(default=0)
    opt_outs: int = Field(default=0)
    subscribed_in: int = Field(default=0)
    subscribed_out: int = Field(default=0)


class RollupZone(SQLModel, table=True):
    """A time zone whose days are kept in consent_rollup_days (for every brand, up to rollup_state.last_id)."""

    __tablename__ = "rollup_zones"

    zone: str = Field(primary_key=True, max_length=64)
    added_at: datetime = _ts(nullable=False)


class RollupState(SQLModel, table=True):
    """How far app.console.rollup has counted the ledger (one row)."""

    __tablename__ = "rollup_state"

    name: str = Field(primary_key=True, max_length=32)
    last_id: int = Field(default=0, sa_type=sa.BigInteger)  # every consent event up to this id is counted
    # The highest id seen at `seen_at`: counted once `seen_at` is old enough that no transaction
    # still holding a lower id can commit (ids are handed out before commit, not in commit order).
    seen_id: int = Field(default=0, sa_type=sa.BigInteger)
    seen_at: datetime | None = _ts()


class SenderRate(SQLModel, table=True):
    """Where one sender stands against its send rate, shared by every process (app.ratelimit)."""

    __tablename__ = "sender_rates"

    sender: str = Field(primary_key=True, max_length=64)  # an E.164 number, a short code or a service id
    # The theoretical arrival time of the sender's next message (GCRA), in whole microseconds
    # since the Unix epoch: integer arithmetic, exact and alike on both engines.
    tat_us: int = Field(sa_type=sa.BigInteger)
    updated_at: datetime = _ts(nullable=False)


class LedgerHead(SQLModel, table=True):
    """The newest link of one consent chain (a brand and a phone's keyed hash): what the next event links to."""

    __tablename__ = "ledger_heads"

    # phone_key first: the writer looks heads up by the keys of the numbers it writes for.
    phone_key: str = Field(primary_key=True, max_length=64)
    brand: str = Field(primary_key=True, max_length=64)
    seq: int = Field(sa_type=sa.BigInteger)
    hash: str = Field(max_length=64)
    updated_at: datetime = _ts(nullable=False)


class LedgerCheckpoint(SQLModel, table=True):
    """A seal over every chain head that moved since the checkpoint before it (itself chained to that one)."""

    __tablename__ = "ledger_checkpoints"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)
    heads: int = Field(sa_type=sa.BigInteger)  # how many heads this checkpoint seals
    created_at: datetime = _ts(nullable=False)


class LedgerCheckpointHead(SQLModel, table=True):
    """One chain head a checkpoint sealed: the chain's event at `seq` must still hash to `hash`."""

    __tablename__ = "ledger_checkpoint_heads"
    __table_args__ = (sa.Index("ix_ledger_checkpoint_heads_chain", "brand", "phone_key", "seq"),)

    checkpoint_id: int = Field(primary_key=True, sa_type=BigId)
    brand: str = Field(primary_key=True, max_length=64)
    phone_key: str = Field(primary_key=True, max_length=64)
    seq: int = Field(sa_type=sa.BigInteger)
    hash: str = Field(max_length=64)


class Erasure(SQLModel, table=True):
    """A number erased from a brand: only its keyed hash is kept, so its opt-outs still hold if it comes back."""

    __tablename__ = "erasures"

    # phone_key first: every write looks up the numbers it locks (app.erasure.restore).
    phone_key: str = Field(primary_key=True, max_length=64)
    brand: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = _ts(nullable=False)


subscriptions = Subscription.__table__  # type: ignore[attr-defined]
consent_events = ConsentEvent.__table__  # type: ignore[attr-defined]
inbound_messages = InboundMessage.__table__  # type: ignore[attr-defined]
outbox = Outbox.__table__  # type: ignore[attr-defined]
delivery_reports = DeliveryReport.__table__  # type: ignore[attr-defined]
api_keys = ApiKey.__table__  # type: ignore[attr-defined]
profiles = Profile.__table__  # type: ignore[attr-defined]
idempotency_keys = IdempotencyKey.__table__  # type: ignore[attr-defined]
console_users = ConsoleUser.__table__  # type: ignore[attr-defined]
sender_rates = SenderRate.__table__  # type: ignore[attr-defined]
ledger_heads = LedgerHead.__table__  # type: ignore[attr-defined]
ledger_checkpoints = LedgerCheckpoint.__table__  # type: ignore[attr-defined]
ledger_checkpoint_heads = LedgerCheckpointHead.__table__  # type: ignore[attr-defined]
erasures = Erasure.__table__  # type: ignore[attr-defined]
brand_sends = BrandSend.__table__  # type: ignore[attr-defined]
opt_out_imports = OptOutImport.__table__  # type: ignore[attr-defined]
console_sign_in_attempts = ConsoleSignInAttempt.__table__  # type: ignore[attr-defined]
consent_rollup = ConsentRollup.__table__  # type: ignore[attr-defined]
consent_rollup_series = ConsentRollupSeries.__table__  # type: ignore[attr-defined]
rollup_state = RollupState.__table__  # type: ignore[attr-defined]
subscription_counts = SubscriptionCount.__table__  # type: ignore[attr-defined]
consent_rollup_days = ConsentRollupDay.__table__  # type: ignore[attr-defined]
consent_rollup_day_series = ConsentRollupDaySeries.__table__  # type: ignore[attr-defined]
rollup_zones = RollupZone.__table__  # type: ignore[attr-defined]
metadata = SQLModel.metadata
