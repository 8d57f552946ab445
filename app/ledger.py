"""The tamper-evident consent ledger: each event linked to the one before it, heads sealed by checkpoints.

Design (docs/proof.md says it for operators):
- One hash chain per brand and phone. Every write to a phone already holds that phone's lock
  (app.db.lock_phones; SQLite's single writer), so appending to its chain needs no lock of
  its own and no row every writer shares: no global hotspot. `ledger_heads` holds each
  chain's newest link; the unique (brand, phone_key, chain_seq) index refuses a fork.
- An event's hash covers the previous hash and the event's columns, but never a plaintext
  an erasure removes: the number enters as `phone_key` (HMAC-SHA256 under the ledger key)
  and the inbound text as `raw_text_sha256`. Erasing the number (replaced by a pseudonym)
  and the text (nulled) leaves every hash as it was.
- A checkpoint seals every head that moved since the previous checkpoint, and links to that
  checkpoint: deleting the newest events of a chain, or rewriting a whole chain, no longer
  matches a sealed head; a brand that keeps checkpoint hashes outside optline can prove that
  nothing sealed was rewritten even by someone who recomputed every table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from app.sql import Raw

GENESIS = "0" * 64  # the previous hash of a chain's first event, and of the first checkpoint
PSEUDONYM_PREFIX = "~"  # an erased number is stored as "~" + the first 19 hex digits of its keyed hash

# The columns an event's hash covers, in this order (with the previous hash before them).
CHAINED = ("subscription_id", "brand", "program", "phone_key", "chain_seq", "event", "from_status", "to_status",
           "source", "keyword", "provider_message_id", "raw_text_sha256", "api_key_id", "consent_source",
           "consent_proof", "consented_at", "reason", "created_at", "rules_sha256", "reply_purpose", "reply_sha256")
CHAIN_COLUMNS = ("phone_key", "chain_seq", "prev_hash", "hash", "raw_text_sha256", "rules_sha256", "reply_purpose",
                 "reply_text", "reply_sha256")

_key: bytes | None = None


def configure(key: bytes) -> None:
    """Use `key` for the keyed hash of numbers (app.proof.ledger_key makes it from the settings)."""
    global _key
    _key = key


def _the_key() -> bytes:
    if _key is None:
        # A process that never configured the key (a script, a migration run by alembic itself):
        # the settings from the environment, as every optline process reads them.
        from app.settings import load_settings
        from app.signing import secret_key

        settings = load_settings()
        configure(key_from(settings.ledger_key, secret_key(settings)))
    assert _key is not None
    return _key


def key_from(ledger_key: str | None, secret: str) -> bytes:
    """The ledger's HMAC key: OPTLINE_LEDGER_KEY when set, else one derived from the secret key."""
    if ledger_key:
        return ledger_key.encode()
    return hmac.new(secret.encode(), b"optline ledger phone key", hashlib.sha256).digest()


def phone_key(phone: str) -> str:
    """The keyed hash of a number: the chain's name, and what an erasure keeps."""
    return hmac.new(_the_key(), phone.encode(), hashlib.sha256).hexdigest()


def pseudonym(key: str) -> str:
    """What an erased number's columns hold instead of it (20 characters, like the longest E.164)."""
    return PSEUDONYM_PREFIX + key[:19]


def sha256_text(text: str | None) -> str | None:
    """The content hash of a text, None for none."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def _canon(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


# Canonical JSON: sorted keys (consent_proof), no spaces, UTF-8 as is. Built once: json.dumps
# with options makes a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
_TIMES = frozenset({"consented_at", "created_at"})
_POSITIONS = tuple((c, c in _TIMES) for c in CHAINED)


def event_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """The hash of one event: the previous hash and the CHAINED columns, as canonical JSON."""
    values = [prev_hash]
    for column, is_time in _POSITIONS:
        value = row[column]
        values.append(value.astimezone(UTC).isoformat(timespec="microseconds") if is_time and value is not None
                      else value)
    return hashlib.sha256(_CANONICAL.encode(values).encode()).hexdigest()


def link(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """Fill the chain columns of these new consent events (in order) and move their chains' heads.

    The caller holds the locks of the rows' phones and inserts the rows in this transaction.
    """
    if not rows:
        return
    raw = Raw(conn)
    for row in rows:
        row["phone_key"] = phone_key(row["phone"])
        row["raw_text_sha256"] = sha256_text(row.get("raw_text"))
        row.setdefault("rules_sha256", None)
        row.setdefault("reply_purpose", None)
        row.setdefault("reply_text", None)
        row["reply_sha256"] = sha256_text(row.get("reply_text"))
    heads = {(r["brand"], r["phone_key"]): (r["seq"], r["hash"]) for r in by_keys(
        raw, "ledger_heads", "brand, phone_key, seq, hash", sorted({row["phone_key"] for row in rows}))}
    for row in rows:
        chain = (row["brand"], row["phone_key"])
        seq, prev = heads.get(chain, (0, GENESIS))
        row.update(chain_seq=seq + 1, prev_hash=prev)
        row["hash"] = event_hash(prev, row)
        heads[chain] = (seq + 1, row["hash"])
    moved = {(row["brand"], row["phone_key"]) for row in rows}
    raw.insert_rows("ledger_heads", ("phone_key", "brand", "seq", "hash", "updated_at"), [
        {"phone_key": key, "brand": brand, "seq": heads[(brand, key)][0], "hash": heads[(brand, key)][1],
         "updated_at": now} for brand, key in sorted(moved)],
        on_conflict="(phone_key, brand) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                    " updated_at = excluded.updated_at")


def by_keys(raw: Raw, table: str, columns: str, keys: list[str]) -> list[dict[str, Any]]:
    """The rows of `table` whose phone_key is one of `keys`: one index probe a key on both engines.

    PostgreSQL joins a key list with a hash join over a scan of the whole table (the plan it
    picks for `IN (SELECT …)`), which grows with the ledger: a LATERAL probe per key does not.
    """
    params: dict[str, Any] = {}
    each = raw.each("keys", keys, params)
    if raw.pg:
        sql = f"SELECT {columns} FROM {each} CROSS JOIN LATERAL (SELECT * FROM {table} WHERE phone_key = keys.value) t"
    else:
        sql = f"SELECT {columns} FROM {table} WHERE phone_key IN (SELECT value FROM {each})"
    return raw.rows(sql, params)


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as written: its id, hash, the one before it, how many heads it sealed, when."""

    id: int
    hash: str
    prev_hash: str
    heads: int
    created_at: datetime

    def json(self) -> dict[str, Any]:
        """The API's shape."""
        return {"id": self.id, "hash": self.hash, "prevHash": self.prev_hash, "heads": self.heads,
                "createdAt": _canon(self.created_at)}


def checkpoint_hash(prev_hash: str, heads: Iterable[Sequence[Any]]) -> str:
    """The hash of a checkpoint: the previous checkpoint's hash and its (brand, phone_key, seq, hash) heads, sorted."""
    body = json.dumps([prev_hash, sorted([list(h) for h in heads])], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def latest_checkpoint(conn: Connection) -> Checkpoint | None:
    """The newest checkpoint, or None before the first."""
    rows = Raw(conn).rows("SELECT id, hash, prev_hash, heads, created_at FROM ledger_checkpoints ORDER BY id DESC LIMIT 1")
    return _checkpoint(rows[0]) if rows else None


def _checkpoint(row: dict[str, Any]) -> Checkpoint:
    created = row["created_at"]
    if isinstance(created, str):  # SQLite through Raw: the stored text
        created = datetime.fromisoformat(created)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return Checkpoint(id=row["id"], hash=row["hash"], prev_hash=row["prev_hash"], heads=row["heads"],
                      created_at=created)


def list_checkpoints(conn: Connection, *, before_id: int | None = None, limit: int = 100) -> list[Checkpoint]:
    """Checkpoints, newest first (keyset paging by id)."""
    where = "WHERE id < :before" if before_id is not None else ""
    rows = Raw(conn).rows(f"SELECT id, hash, prev_hash, heads, created_at FROM ledger_checkpoints {where}"
                          " ORDER BY id DESC LIMIT :limit", {"before": before_id, "limit": limit})
    return [_checkpoint(r) for r in rows]


def write_checkpoint(conn: Connection, now: datetime) -> Checkpoint | None:
    """Seal every chain head that moved since the last checkpoint; None when none moved."""
    raw = Raw(conn)
    if raw.pg:
        # Two processes checkpointing at once would both link to the same previous checkpoint.
        raw.execute("SELECT pg_advisory_xact_lock(hashtext('optline-ledger-checkpoint'))")
    last = latest_checkpoint(conn)
    prev = last.hash if last is not None else GENESIS
    moved = raw.rows(
        "SELECT h.brand, h.phone_key, h.seq, h.hash FROM ledger_heads h WHERE NOT EXISTS ("
        " SELECT 1 FROM ledger_checkpoint_heads c WHERE c.brand = h.brand AND c.phone_key = h.phone_key"
        " AND c.seq = h.seq) ORDER BY h.brand, h.phone_key")
    if not moved:
        return None
    heads = [(r["brand"], r["phone_key"], r["seq"], r["hash"]) for r in moved]
    digest = checkpoint_hash(prev, heads)
    [checkpoint_id] = raw.insert_rows("ledger_checkpoints", ("prev_hash", "hash", "heads", "created_at"),
                                      [{"prev_hash": prev, "hash": digest, "heads": len(heads), "created_at": now}],
                                      ids=True)
    raw.insert_rows("ledger_checkpoint_heads", ("checkpoint_id", "brand", "phone_key", "seq", "hash"), [
        {"checkpoint_id": checkpoint_id, "brand": b, "phone_key": k, "seq": s, "hash": h} for b, k, s, h in heads])
    return Checkpoint(id=checkpoint_id, hash=digest, prev_hash=prev, heads=len(heads), created_at=now)


def checkpoint_brands(conn: Connection, checkpoint_id: int) -> list[str]:
    """The brands whose chains a checkpoint sealed."""
    return [r["brand"] for r in Raw(conn).rows(
        "SELECT DISTINCT brand FROM ledger_checkpoint_heads WHERE checkpoint_id = :id ORDER BY brand",
        {"id": checkpoint_id})]


__all__ = ["CHAINED", "CHAIN_COLUMNS", "GENESIS", "Checkpoint", "by_keys", "checkpoint_hash", "configure", "event_hash",
           "key_from", "latest_checkpoint", "link", "list_checkpoints", "phone_key", "pseudonym", "sha256_text",
           "write_checkpoint"]
