"""the send check reads subscriptions from one index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:50:00.000000

`ix_subscriptions_brand_phone_program_status` (brand, phone, program, status, opted_out_at):
the send check (app.sendcheck) finds each phone's programs, statuses and opt-out times in the
index alone, without a visit to the table for each row (SQLite: "USING COVERING INDEX";
PostgreSQL: an index-only scan once the table is vacuumed).

The narrow (brand, phone) index stays: on a table PostgreSQL has no statistics for yet (a new
database on launch day, a first import), it weighs indexes by their size, and with the wide
index alone it chose (brand, program, phone) for a lookup by phone, reading the whole brand
for each phone.
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


def downgrade() -> None:
    op.drop_index('ix_subscriptions_brand_phone_program_status', table_name='subscriptions')
