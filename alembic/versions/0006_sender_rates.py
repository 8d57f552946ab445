"""each sender's send rate, shared by every process

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 17:25:00.000000

A long code may send one text a second, a toll-free number three, a short code or a
Messaging Service a hundred; every `serve` and `worker` process on the database must keep to
that together, so where each sender stands (its GCRA theoretical arrival time) lives in one
row per sender rather than in a process's memory. See app/ratelimit.py.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sender_rates',
    sa.Column('sender', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tat_us', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sender')
    )


def downgrade() -> None:
    op.drop_table('sender_rates')
