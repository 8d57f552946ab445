"""only the phone reopens what the phone closed; a STOP is honoured by the sender joined through

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 20:00:00.000000

- subscriptions.phone_opted_out_at and phone_opted_out_source: an opt-out the phone made itself
  (a texted STOP on any channel, a carrier or provider opt-out signal) that the phone has not
  undone by joining again. While set, no API, import or console path may subscribe or prompt
  the phone in that program. Backfilled from the ledger: the latest such opt-out, unless the
  phone joined again by SMS after it.
- subscriptions.joined_via: the sender (number, short code or Messaging Service) the phone
  joined through, backfilled from `sender`; with an index by phone, so a STOP to a number that
  keywords.yaml no longer routes still ends what the phone joined through it.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

PHONE_SOURCES = "('sms', 'carrier', 'whatsapp', 'messenger', 'rcs')"


def upgrade() -> None:
    op.add_column('subscriptions', sa.Column('phone_opted_out_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.add_column('subscriptions', sa.Column('phone_opted_out_source', sqlmodel.sql.sqltypes.AutoString(length=16),
                                             nullable=True))
    op.add_column('subscriptions', sa.Column('joined_via', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
    op.execute(
        "UPDATE subscriptions SET phone_opted_out_at = (SELECT max(e.created_at) FROM consent_events e"
        " WHERE e.subscription_id = subscriptions.id AND e.to_status = 'unsubscribed'"
        f" AND e.source IN {PHONE_SOURCES})"
    )
    op.execute(
        "UPDATE subscriptions SET phone_opted_out_at = NULL WHERE phone_opted_out_at IS NOT NULL AND EXISTS ("
        " SELECT 1 FROM consent_events e WHERE e.subscription_id = subscriptions.id AND e.source = 'sms'"
        " AND e.event IN ('join', 'join_single', 'confirm') AND e.created_at > subscriptions.phone_opted_out_at)"
    )
    op.execute(
        "UPDATE subscriptions SET phone_opted_out_source = (SELECT e.source FROM consent_events e"
        " WHERE e.subscription_id = subscriptions.id AND e.created_at = subscriptions.phone_opted_out_at"
        f" AND e.to_status = 'unsubscribed' AND e.source IN {PHONE_SOURCES} ORDER BY e.id DESC LIMIT 1)"
        " WHERE phone_opted_out_at IS NOT NULL"
    )
    op.execute("UPDATE subscriptions SET joined_via = sender WHERE joined_at IS NOT NULL")
    op.create_index('ix_subscriptions_phone_joined_via', 'subscriptions', ['phone', 'joined_via'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscriptions_phone_joined_via', table_name='subscriptions')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('joined_via')
        batch_op.drop_column('phone_opted_out_source')
        batch_op.drop_column('phone_opted_out_at')
