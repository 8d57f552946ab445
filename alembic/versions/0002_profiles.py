"""profiles and idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:30:00.000000

Profiles are unique per brand on external_id, phone and email among live rows only
(partial unique indexes, `WHERE deleted_at IS NULL`, which SQLite and PostgreSQL both
support): a deleted profile stays as a tombstone so its id keeps answering 404 and the
subscriptions that pointed at it are detached, not orphaned.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_LIVE = 'deleted_at IS NULL'


def upgrade() -> None:
    op.create_table('profiles',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
    sa.Column('first_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('last_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('deleted_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.create_index('ix_profiles_brand_updated_at_id', ['brand', 'updated_at', 'id'], unique=False)
        for name, column in (('external_id', 'external_id'), ('phone', 'phone'), ('email', 'email')):
            batch_op.create_index(
                f'uq_profiles_brand_{name}', ['brand', column], unique=True,
                sqlite_where=sa.text(_LIVE), postgresql_where=sa.text(_LIVE),
            )

    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('response_headers', sa.JSON(), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('brand', 'key', name='uq_idempotency_keys_brand_key')
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index('ix_idempotency_keys_expires_at', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_keys_expires_at')

    op.drop_table('idempotency_keys')
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_index('uq_profiles_brand_email')
        batch_op.drop_index('uq_profiles_brand_phone')
        batch_op.drop_index('uq_profiles_brand_external_id')
        batch_op.drop_index('ix_profiles_brand_updated_at_id')

    op.drop_table('profiles')
