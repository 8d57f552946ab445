"""consent rules: held texts, texts the brand reports, opt-out imports

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 19:40:00.000000

Quiet hours and daily caps hold a text in the outbox (`held_until`, `held_reason`) instead
of dropping it; the brand's own sends count toward caps (`brand_sends`); each imported
opt-out list is a batch (`opt_out_imports`) its consent events name; the suppression list
pages by (brand, opted_out_at, id). See app/rules/ and app/holds.py.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('held_until', app.db.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('held_reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
    op.create_index('ix_outbox_brand_held_until', 'outbox', ['brand', 'held_until'])
    op.create_index('ix_subscriptions_brand_opted_out_at', 'subscriptions', ['brand', 'opted_out_at', 'id'])
    op.create_table('brand_sends',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('program', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('sent_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('api_key_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_brand_sends_brand_phone_program_sent_at', 'brand_sends',
                    ['brand', 'phone', 'program', 'sent_at'])
    op.create_table('opt_out_imports',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('origin', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('api_key_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('applied', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_opt_out_imports_brand', 'opt_out_imports', ['brand'])


def downgrade() -> None:
    op.drop_index('ix_opt_out_imports_brand', table_name='opt_out_imports')
    op.drop_table('opt_out_imports')
    op.drop_index('ix_brand_sends_brand_phone_program_sent_at', table_name='brand_sends')
    op.drop_table('brand_sends')
    op.drop_index('ix_subscriptions_brand_opted_out_at', table_name='subscriptions')
    op.drop_index('ix_outbox_brand_held_until', table_name='outbox')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('held_reason')
        batch.drop_column('held_until')
