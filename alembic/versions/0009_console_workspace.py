"""console: sign-in throttle shared by every process, roles, password resets

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 19:40:00.000000

The console's sign-in throttle lived in each process's memory and locked an email out for
everyone; it now lives in `console_sign_in_attempts`, one row per email and client address
(and one per address), so every process slows the same attacker and nobody else.
The console's analytics read `consent_rollup`, the ledger counted per brand, program, UTC hour,
source and keyword, kept up incrementally (`rollup_state` says how far). The subscriber list
filtered by status gets its index. Console accounts get a role (existing accounts keep everything they could do: owner) and a
one-time password reset token (its hash only).
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_sign_in_attempts',
    sa.Column('account', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_failed_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('blocked_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('account', 'address')
    )
    op.create_index(op.f('ix_console_sign_in_attempts_last_failed_at'), 'console_sign_in_attempts',
                    ['last_failed_at'], unique=False)
    # Plain ADD COLUMNs (no batch copy): every account made before roles existed could do everything.
    op.add_column('console_users', sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                             server_default='owner'))
    op.add_column('console_users', sa.Column('reset_token_hash', sqlmodel.sql.sqltypes.AutoString(length=64),
                                             nullable=True))
    op.add_column('console_users', sa.Column('reset_expires_at', app.db.UtcDateTime(timezone=True), nullable=True))
    op.create_table('consent_rollup',
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('program', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hour', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('keyword', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('joins', sa.Integer(), nullable=False),
    sa.Column('confirmations', sa.Integer(), nullable=False),
    sa.Column('opt_outs', sa.Integer(), nullable=False),
    sa.Column('subscribed_in', sa.Integer(), nullable=False),
    sa.Column('subscribed_out', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('brand', 'program', 'hour', 'source', 'keyword'),
    sqlite_with_rowid=False,
    )
    op.create_table('consent_rollup_series',
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('program', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hour', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('joins', sa.Integer(), nullable=False),
    sa.Column('confirmations', sa.Integer(), nullable=False),
    sa.Column('opt_outs', sa.Integer(), nullable=False),
    sa.Column('subscribed_in', sa.Integer(), nullable=False),
    sa.Column('subscribed_out', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('brand', 'program', 'hour'),
    sqlite_with_rowid=False,
    )
    op.create_table('rollup_state',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('seen_id', sa.BigInteger(), nullable=False),
    sa.Column('seen_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    # The subscriber list filtered by status walks this in phone order.
    op.create_index('ix_subscriptions_brand_program_status_phone', 'subscriptions',
                    ['brand', 'program', 'status', 'phone'], unique=False)


def downgrade() -> None:
    op.drop_table('rollup_state')
    op.drop_table('consent_rollup_series')
    op.drop_table('consent_rollup')
    op.drop_index('ix_subscriptions_brand_program_status_phone', table_name='subscriptions')
    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.drop_column('reset_expires_at')
        batch_op.drop_column('reset_token_hash')
        batch_op.drop_column('role')
    op.drop_index(op.f('ix_console_sign_in_attempts_last_failed_at'), table_name='console_sign_in_attempts')
    op.drop_table('console_sign_in_attempts')
