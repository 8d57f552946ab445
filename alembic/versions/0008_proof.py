"""proof: the consent ledger chained and sealed by checkpoints, the rules and replies it was made under, erasures

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 19:30:00.000000

- consent_events gains its chain (phone_key, chain_seq, prev_hash, hash), the content hash of
  the inbound text, the keywords.yaml sha256 in force and the reply sent with it. Added with
  ADD COLUMN on both engines (a batch copy on SQLite would drop the triggers), then every
  existing event is chained, per brand and phone in id order (their rules and replies were
  never recorded and stay empty).
- ledger_heads (each chain's newest link), ledger_checkpoints and ledger_checkpoint_heads
  (the seals), erasures (an erased number's keyed hash, per brand).
- The append-only trigger now lets exactly one UPDATE through: an erasure, which may only
  replace the number with its pseudonym and blank the inbound text. DELETE is still refused.
"""
from __future__ import annotations

from collections import defaultdict

from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes
import app.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# Every column of consent_events as of this migration but the two an erasure may change
# (phone, raw_text): an UPDATE that touches any of these is refused.
_FROZEN = ("id", "subscription_id", "brand", "program", "event", "from_status", "to_status", "source", "keyword",
           "provider_message_id", "api_key_id", "consent_source", "consent_proof", "consented_at", "reason",
           "created_at", "phone_key", "chain_seq", "prev_hash", "hash", "raw_text_sha256", "rules_sha256",
           "reply_purpose", "reply_text", "reply_sha256")
_ERASURE_ONLY = ("(NEW.raw_text IS NULL OR NEW.raw_text = OLD.raw_text)"
                 " AND (NEW.phone = OLD.phone OR NEW.phone = '~' || substr(OLD.phone_key, 1, 19))")


def upgrade() -> None:
    for name, kind in (("phone_key", sqlmodel.sql.sqltypes.AutoString(length=64)), ("chain_seq", sa.BigInteger()),
                       ("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64)),
                       ("hash", sqlmodel.sql.sqltypes.AutoString(length=64)),
                       ("raw_text_sha256", sqlmodel.sql.sqltypes.AutoString(length=64)),
                       ("rules_sha256", sqlmodel.sql.sqltypes.AutoString(length=64)),
                       ("reply_purpose", sqlmodel.sql.sqltypes.AutoString(length=32)), ("reply_text", sa.Text()),
                       ("reply_sha256", sqlmodel.sql.sqltypes.AutoString(length=64))):
        op.add_column('consent_events', sa.Column(name, kind, nullable=True))
    op.create_table('ledger_heads',
    sa.Column('phone_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('phone_key', 'brand')
    )
    op.create_table('ledger_checkpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('heads', sa.BigInteger(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('hash')
    )
    op.create_table('ledger_checkpoint_heads',
    sa.Column('checkpoint_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('phone_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('checkpoint_id', 'brand', 'phone_key')
    )
    op.create_index('ix_ledger_checkpoint_heads_chain', 'ledger_checkpoint_heads', ['brand', 'phone_key', 'seq'],
                    unique=False)
    op.create_table('erasures',
    sa.Column('phone_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('brand', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('erased_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('phone_key', 'brand')
    )
    _drop_update_trigger()
    _backfill()
    op.create_index('uq_consent_events_chain', 'consent_events', ['brand', 'phone_key', 'chain_seq'], unique=True)
    _erase_only_trigger()


def _backfill() -> None:
    """Chain the events already stored, per brand and phone in id order, and set each chain's head."""
    from app.ledger import GENESIS, event_hash, phone_key, sha256_text

    conn = op.get_bind()
    events = sa.table(
        'consent_events', *(sa.column(c) for c in (
            'id', 'subscription_id', 'brand', 'program', 'phone', 'event', 'from_status', 'to_status', 'source',
            'keyword', 'provider_message_id', 'raw_text', 'api_key_id', 'consent_source', 'reason', 'phone_key',
            'chain_seq', 'prev_hash', 'hash', 'raw_text_sha256')),
        sa.column('consent_proof', sa.JSON()), sa.column('consented_at', app.db.UtcDateTime(timezone=True)),
        sa.column('created_at', app.db.UtcDateTime(timezone=True)))
    heads: dict[tuple[str, str], tuple[int, str, object]] = {}
    keys: dict[str, str] = {}
    updates = []
    for row in conn.execute(sa.select(*(c for c in events.c if c.name not in (
            'phone_key', 'chain_seq', 'prev_hash', 'hash', 'raw_text_sha256'))).order_by(events.c.id)).mappings():
        values = dict(row)
        key = keys.get(values['phone']) or keys.setdefault(values['phone'], phone_key(values['phone']))
        seq, prev, _at = heads.get((values['brand'], key), (0, GENESIS, None))
        values.update(phone_key=key, chain_seq=seq + 1, prev_hash=prev, raw_text_sha256=sha256_text(values['raw_text']),
                      rules_sha256=None, reply_purpose=None, reply_sha256=None)
        values['hash'] = event_hash(prev, values)
        heads[(values['brand'], key)] = (seq + 1, values['hash'], values['created_at'])
        updates.append({'b_id': values['id'], **{c: values[c] for c in (
            'phone_key', 'chain_seq', 'prev_hash', 'hash', 'raw_text_sha256')}})
    if updates:
        conn.execute(events.update().where(events.c.id == sa.bindparam('b_id')).values(
            phone_key=sa.bindparam('phone_key'), chain_seq=sa.bindparam('chain_seq'),
            prev_hash=sa.bindparam('prev_hash'), hash=sa.bindparam('hash'),
            raw_text_sha256=sa.bindparam('raw_text_sha256')), updates)
        heads_table = sa.table('ledger_heads', sa.column('phone_key'), sa.column('brand'), sa.column('seq'),
                               sa.column('hash'), sa.column('updated_at', app.db.UtcDateTime(timezone=True)))
        conn.execute(heads_table.insert(), [
            {'phone_key': key, 'brand': brand, 'seq': seq, 'hash': digest, 'updated_at': at}
            for (brand, key), (seq, digest, at) in heads.items()])


def _drop_update_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER consent_events_append_only ON consent_events")
        op.execute("CREATE TRIGGER consent_events_append_only BEFORE DELETE ON consent_events "
                   "FOR EACH ROW EXECUTE FUNCTION optline_append_only()")
    else:
        op.execute("DROP TRIGGER consent_events_no_update")


def _erase_only_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        same = " AND ".join(f"NEW.{c}::text IS NOT DISTINCT FROM OLD.{c}::text" for c in _FROZEN)
        op.execute(
            "CREATE FUNCTION optline_erase_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF {_ERASURE_ONLY} AND {same} THEN RETURN NEW; END IF; "
            "RAISE EXCEPTION '% is append-only (an erasure may only blank the number and the text)', TG_TABLE_NAME; "
            "END $$")
        op.execute("CREATE TRIGGER consent_events_erase_only BEFORE UPDATE ON consent_events "
                   "FOR EACH ROW EXECUTE FUNCTION optline_erase_only()")
    else:
        same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _FROZEN)
        op.execute(
            f"CREATE TRIGGER consent_events_erase_only BEFORE UPDATE ON consent_events WHEN NOT ({_ERASURE_ONLY}"
            f" AND {same}) BEGIN SELECT RAISE(ABORT, 'consent_events is append-only (an erasure may only blank the"
            " number and the text)'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER consent_events_erase_only ON consent_events")
        op.execute("DROP FUNCTION optline_erase_only()")
        op.execute("DROP TRIGGER consent_events_append_only ON consent_events")
        op.execute("CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events "
                   "FOR EACH ROW EXECUTE FUNCTION optline_append_only()")
    else:
        op.execute("DROP TRIGGER consent_events_erase_only")
        op.execute("CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events "
                   "BEGIN SELECT RAISE(ABORT, 'consent_events is append-only'); END")
    op.drop_index('uq_consent_events_chain', table_name='consent_events')
    op.drop_table('erasures')
    op.drop_index('ix_ledger_checkpoint_heads_chain', table_name='ledger_checkpoint_heads')
    op.drop_table('ledger_checkpoint_heads')
    op.drop_table('ledger_checkpoints')
    op.drop_table('ledger_heads')
    for name in ('reply_sha256', 'reply_text', 'reply_purpose', 'rules_sha256', 'raw_text_sha256', 'hash',
                 'prev_hash', 'chain_seq', 'phone_key'):
        op.drop_column('consent_events', name)
