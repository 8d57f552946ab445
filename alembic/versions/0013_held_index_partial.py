"""the held texts' index holds only held texts

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:55:00.000000

`ix_outbox_brand_held_until` (brand, held_until) held every outbox row. On a table PostgreSQL
has no statistics for yet (a new database on launch day), it weighs indexes by their size, and
it chose this one over (brand, phone, status) to cancel a phone's queued texts at a STOP:
reading every row of the brand for each STOP (2 ms each with a few thousand rows, seen with
auto_explain in `make bench`). Only held texts carry a held_until, and every query of it asks
for `held_until > :now`, which implies the index's condition on both databases.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_HELD = "held_until IS NOT NULL"


def upgrade() -> None:
    op.drop_index('ix_outbox_brand_held_until', table_name='outbox')
    op.create_index('ix_outbox_brand_held_until', 'outbox', ['brand', 'held_until'],
                    sqlite_where=sa.text(_HELD), postgresql_where=sa.text(_HELD))


def downgrade() -> None:
    op.drop_index('ix_outbox_brand_held_until', table_name='outbox')
    op.create_index('ix_outbox_brand_held_until', 'outbox', ['brand', 'held_until'])
