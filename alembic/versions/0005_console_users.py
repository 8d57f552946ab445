"""console users, and the ledger read by time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 14:45:00.000000

The web console signs people in with their own accounts (argon2 hashes only), each bound
to one brand. The console's 30-day chart and the ledger's since/until filters read consent
events by brand and time; without the index they walked every event of the brand.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('password_hash', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('disabled_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('signed_out_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_sign_in_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_users_brand'), ['brand'], unique=False)

    # A plain CREATE INDEX, never a batch copy: the copy would drop SQLite's append-only triggers.
    op.create_index('ix_consent_events_brand_created_at', 'consent_events', ['brand', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_consent_events_brand_created_at', table_name='consent_events')

    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_users_brand'))

    op.drop_table('console_users')
