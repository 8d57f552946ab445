"""console counts: subscriptions per status kept up, the analytics rollup by day

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:00:00.000000

`subscription_counts` holds signed amounts whose sum per (brand, program, status) is how many
subscriptions are in it: every status write adds to it in its own transaction
(app.status_counts); this backfills it with one COUNT(*). `consent_rollup_days` and
`consent_rollup_day_series` are consent_rollup by day in each time zone of `rollup_zones`;
they fill themselves from the hourly rollup when a serve process first asks for a zone
(app.console.rollup), so nothing is backfilled here. Two indexes serve the operations page
(app.console.operations): consent events by (brand, event, created_at), for the day's STOPs,
and the failed texts by (brand, created_at), a partial index.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_FAILED = "status IN ('failed', 'undelivered')"
_COUNTS = ('joins', 'confirmations', 'opt_outs', 'subscribed_in', 'subscribed_out')


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table('subscription_counts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('brand', _text(64), nullable=False),
    sa.Column('program', _text(64), nullable=False),
    sa.Column('status', _text(16), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_subscription_counts_brand_program_status', 'subscription_counts',
                    ['brand', 'program', 'status'])
    op.execute("INSERT INTO subscription_counts (brand, program, status, n)"
               " SELECT brand, program, status, count(*) FROM subscriptions GROUP BY brand, program, status")
    op.create_table('consent_rollup_days',
    sa.Column('brand', _text(64), nullable=False),
    sa.Column('zone', _text(64), nullable=False),
    sa.Column('program', _text(64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('source', _text(16), nullable=False),
    sa.Column('keyword', _text(64), nullable=False),
    *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
    sa.PrimaryKeyConstraint('brand', 'zone', 'program', 'day', 'source', 'keyword'),
    sqlite_with_rowid=False
    )
    op.create_table('consent_rollup_day_series',
    sa.Column('brand', _text(64), nullable=False),
    sa.Column('zone', _text(64), nullable=False),
    sa.Column('program', _text(64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
    sa.PrimaryKeyConstraint('brand', 'zone', 'program', 'day'),
    sqlite_with_rowid=False
    )
    # The operations page: the day's STOPs, and the failed texts of a day (a partial index).
    op.create_index('ix_consent_events_brand_event_created_at', 'consent_events', ['brand', 'event', 'created_at'])
    op.create_index('ix_outbox_failed_brand_created_at', 'outbox', ['brand', 'created_at'],
                    sqlite_where=sa.text(_FAILED), postgresql_where=sa.text(_FAILED))
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite' and bind.execute(sa.text(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")).scalar():
        # A database someone has run ANALYZE on: the new indexes get their figures too, or
        # SQLite's planner trusts its defaults for them over the measured figures of the others
        # (the ledger page, newest first, would sort the brand's whole ledger).
        for index in ('ix_consent_events_brand_event_created_at', 'ix_outbox_failed_brand_created_at',
                      'ix_subscription_counts_brand_program_status'):
            op.execute(f'ANALYZE {index}')
    op.create_table('rollup_zones',
    sa.Column('zone', _text(64), nullable=False),
    sa.Column('added_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('zone')
    )


def downgrade() -> None:
    op.drop_table('rollup_zones')
    op.drop_index('ix_outbox_failed_brand_created_at', table_name='outbox')
    op.drop_index('ix_consent_events_brand_event_created_at', table_name='consent_events')
    op.drop_table('consent_rollup_day_series')
    op.drop_table('consent_rollup_days')
    op.drop_index('ix_subscription_counts_brand_program_status', table_name='subscription_counts')
    op.drop_table('subscription_counts')
