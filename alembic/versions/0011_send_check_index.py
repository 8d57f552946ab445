"""the send check reads subscriptions from one index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:50:00.000000

`ix_subscriptions_brand_phone` (brand, phone) becomes (brand, phone, program, status,
opted_out_at): every lookup of a phone's subscriptions still walks it by (brand, phone), and
the send check's (app.sendcheck) finds each phone's programs, statuses and opt-out times in
the index alone, without a visit to the table for each row (SQLite: "USING COVERING INDEX").
The columns it adds are already in other indexes of the table, so no update that left it
alone before touches it now other than those changing them.
"""
from __future__ import annotations

from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_subscriptions_brand_phone_program_status', 'subscriptions',
                    ['brand', 'phone', 'program', 'status', 'opted_out_at'])
    op.drop_index('ix_subscriptions_brand_phone', table_name='subscriptions')


def downgrade() -> None:
    op.create_index('ix_subscriptions_brand_phone', 'subscriptions', ['brand', 'phone'])
    op.drop_index('ix_subscriptions_brand_phone_program_status', table_name='subscriptions')
