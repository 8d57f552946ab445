"""nothing gets around a STOP: opt-out and join times, channels, flagged texts, send deadlines, scoped idempotency keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:40:00.000000

- subscriptions.opted_out_at (the latest opt-out, never cleared) and joined_at (the latest
  time the phone itself joined), backfilled from the ledger: API consent must be newer than
  the opt-out, and START restarts only what the phone had joined.
- consent_events.reason: why a text was read as an opt-out. Added with ADD COLUMN on both
  engines, so SQLite keeps the ledger's append-only triggers (a batch copy would drop them).
- inbound_messages: channel (sms, whatsapp, …), from_address for channel addresses that are
  no phone number (from_phone becomes nullable), media, and the flagged-text columns.
- outbox.deadline_at (a re-driven row's new deadline; else created_at + its purpose's budget)
  and priority (0 stop replies, 1 help and welcome, 2 prompts and events), which claims walk.
- idempotency_keys: method, path and a lease; the key is unique per brand + method + path.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('subscriptions', sa.Column('opted_out_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.add_column('subscriptions', sa.Column('joined_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE subscriptions SET"
        " opted_out_at = (SELECT max(e.created_at) FROM consent_events e WHERE e.subscription_id = subscriptions.id"
        "                 AND e.to_status = 'unsubscribed'),"
        " joined_at = (SELECT max(e.created_at) FROM consent_events e WHERE e.subscription_id = subscriptions.id"
        "              AND e.to_status IN ('pendingDOI', 'subscribed'))"
    )
    op.add_column('consent_events', sa.Column('reason', sa.Text(), nullable=True))

    op.add_column('inbound_messages', sa.Column('from_address', sqlmodel.sql.sqltypes.AutoString(length=128),
                                                nullable=True))
    op.add_column('inbound_messages', sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16),
                                                server_default='sms', nullable=False))
    op.add_column('inbound_messages', sa.Column('media', sa.JSON(), nullable=True))
    op.add_column('inbound_messages', sa.Column('flagged', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('inbound_messages', sa.Column('flag_resolution', sqlmodel.sql.sqltypes.AutoString(length=16),
                                                nullable=True))
    op.add_column('inbound_messages', sa.Column('flag_resolved_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.add_column('inbound_messages', sa.Column('flag_resolved_by', sqlmodel.sql.sqltypes.AutoString(length=254),
                                                nullable=True))
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.alter_column('from_phone', existing_type=sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        batch_op.create_index('ix_inbound_messages_brand_flagged_id', ['brand', 'flagged', 'id'], unique=False)

    op.add_column('outbox', sa.Column('deadline_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.add_column('outbox', sa.Column('priority', sa.SmallInteger(), server_default='2', nullable=False))
    op.add_column('outbox', sa.Column('dispatched_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.execute("UPDATE outbox SET priority = CASE WHEN purpose = 'stop' THEN 0"
               " WHEN purpose IN ('help', 'welcome', 'already_subscribed', 'doi_expired') THEN 1 ELSE 2 END")
    op.create_index('ix_outbox_priority_due', 'outbox', ['priority', 'status', 'next_attempt_at'], unique=False)

    op.add_column('idempotency_keys', sa.Column('method', sqlmodel.sql.sqltypes.AutoString(length=8),
                                                server_default='POST', nullable=False))
    op.add_column('idempotency_keys', sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=512),
                                                server_default='', nullable=False))
    op.add_column('idempotency_keys', sa.Column('lease_until', app.db.UtcDateTime(timezone=True), nullable=True))
    # Keys stored before this migration had no scope: they were all brand-wide; they expire
    # within 24 h anyway, so they are dropped rather than guessed at.
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_constraint('uq_idempotency_keys_brand_key', type_='unique')
        batch_op.create_unique_constraint('uq_idempotency_keys_scope', ['brand', 'method', 'path', 'key'])
        batch_op.alter_column('method', server_default=None)
        batch_op.alter_column('path', server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_constraint('uq_idempotency_keys_scope', type_='unique')
        batch_op.create_unique_constraint('uq_idempotency_keys_brand_key', ['brand', 'key'])
        batch_op.drop_column('lease_until')
        batch_op.drop_column('path')
        batch_op.drop_column('method')
    op.drop_index('ix_outbox_priority_due', table_name='outbox')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('dispatched_at')
        batch_op.drop_column('priority')
        batch_op.drop_column('deadline_at')
    op.execute("DELETE FROM inbound_messages WHERE from_phone IS NULL")
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_messages_brand_flagged_id')
        batch_op.alter_column('from_phone', existing_type=sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False)
        for column in ('flag_resolved_by', 'flag_resolved_at', 'flag_resolution', 'flagged', 'media', 'channel',
                       'from_address'):
            batch_op.drop_column(column)
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('joined_at')
        batch_op.drop_column('opted_out_at')
    # Plain DROP COLUMN (SQLite 3.35+ has it): a batch copy would drop the ledger's triggers.
    op.execute("ALTER TABLE consent_events DROP COLUMN reason")
