"""Brand-scoped API keys: created once, shown once, stored as SHA-256 hashes only.

A key looks like `olk_<prefix>_<secret>`; the prefix (8 chars) names it in `keys list`;
`keys revoke` takes the prefix or the whole key. Keys carry 190+ bits of randomness, so a fast hash is safe here (a
password hash is for low-entropy secrets) and keeps every API call cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.errors import DatabaseUnavailable, NotFound, Unauthorized
from app.models import api_keys
from app.sql import pg_sql

KEY_PREFIX = "olk_"
# olk_<8 hex>_<token_urlsafe(24): 32 characters>
_WHOLE_KEY = re.compile(r"olk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as the API sees it (never the secret)."""

    id: int
    brand: str
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: Connection, now: datetime, *, brand: str, name: str | None) -> tuple[ApiKeyInfo, str]:
    """Make a key for `brand`; returns its record and the key itself (shown once, never stored)."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    key_id = conn.execute(
        api_keys.insert().values(brand=brand, name=name, prefix=prefix, key_hash=hash_key(key), created_at=now)
    ).inserted_primary_key[0]
    return ApiKeyInfo(int(key_id), brand, name, prefix, now, None), key


def list_keys(conn: Connection) -> list[ApiKeyInfo]:
    """Every key, oldest first."""
    rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.id)).all()
    return [ApiKeyInfo(r.id, r.brand, r.name, r.prefix, r.created_at, r.revoked_at) for r in rows]


def revoke_key(conn: Connection, now: datetime, *, key_or_prefix: str) -> ApiKeyInfo:
    """Revoke the key named by its prefix (as `keys list` shows it) or by the whole key; revoking twice keeps the first time."""
    value = key_or_prefix.strip()
    if _WHOLE_KEY.fullmatch(value):
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == hash_key(value))).first()
        missing = "no such key (it may belong to another optline database)"
    else:
        prefix = value.removeprefix(KEY_PREFIX)
        row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).first()
        missing = f"no key with prefix {prefix}"
    if row is None:
        raise NotFound(missing, field="key")
    if row.revoked_at is None:
        conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=now))
    return ApiKeyInfo(row.id, row.brand, row.name, row.prefix, row.created_at, row.revoked_at or now)


class KeyCache:
    """Looks keys up by hash for every API call.

    What a key is (its id, brand, name) never changes, so it is remembered after the first
    lookup; whether it is revoked is asked of the database on every call, so `optline keys
    revoke` takes effect at once in every process. Unknown keys are not remembered either:
    a key created a moment ago works at once.

    The question is one primary-key read on a connection kept for it in autocommit: a pooled
    connection cost four round trips on PostgreSQL (ping, BEGIN, the read, ROLLBACK), about
    1 ms; this costs one.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._known: dict[str, ApiKeyInfo] = {}
        self._lock = threading.Lock()
        self._conn: Any = None  # the pool's proxy of the kept connection
        self._pg = engine.dialect.name == "postgresql"

    def authenticate(self, key: str | None) -> ApiKeyInfo:
        """The live key for this secret, or Unauthorized."""
        if not key:
            raise Unauthorized("missing API key: send x-api-key or Authorization: Bearer")
        digest = hash_key(key)
        info = self._known.get(digest)
        if info is None:
            row = self._fetch(_BY_HASH, {"h": digest})
            if row is None:
                raise Unauthorized("unknown or revoked API key")
            created = row[4] if isinstance(row[4], datetime) else datetime.fromisoformat(row[4]).replace(tzinfo=UTC)
            info = ApiKeyInfo(int(row[0]), row[1], row[2], row[3], created, None)
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[digest] = info
            revoked = row[5] is not None
        else:
            row = self._fetch(_REVOKED, {"id": info.id})
            revoked = row is None or row[0] is not None
        if revoked:
            raise Unauthorized("unknown or revoked API key")
        return info

    def _fetch(self, sql: str, params: dict[str, Any]) -> Any:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self.engine.raw_connection()
                        if self._pg:  # SQLite connections are in autocommit already (app.db)
                            self._conn.driver_connection.autocommit = True
                    cur = self._conn.driver_connection.cursor()
                    cur.execute(pg_sql(sql) if self._pg else sql, params)
                    return cur.fetchone()
                except Exception as exc:  # noqa: BLE001 - any driver error: the connection is suspect
                    # A dropped connection: open another once; a second failure is a 503.
                    self.close()
                    if attempt == 2:
                        raise DatabaseUnavailable("cannot check the API key: the database is unavailable") from exc
        return None

    def close(self) -> None:
        """Let go of the kept connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()


_BY_HASH = "SELECT id, brand, name, prefix, created_at, revoked_at FROM api_keys WHERE key_hash = :h"
_REVOKED = "SELECT revoked_at FROM api_keys WHERE id = :id"
