"""an index for claiming stop replies first

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:10:00.000000

The outbox claim looks for due stop replies before anything else; without this index it
walked every queued row to find them (40 ms a claim behind 20,000 prompts, holding
SQLite's write lock).
"""
from __future__ import annotations

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_purpose_due', 'outbox', ['purpose', 'status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_purpose_due', table_name='outbox')
