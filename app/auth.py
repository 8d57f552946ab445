"""Brand-scoped API keys: created once, shown once, stored as SHA-256 hashes only.

A key looks like `olk_<prefix>_<secret>`; the prefix (8 chars) names it in `keys list`
and `keys revoke`. Keys carry 190+ bits of randomness, so a fast hash is safe here (a
password hash is for low-entropy secrets) and keeps every API call cheap.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.errors import NotFound, Unauthorized
from app.models import api_keys


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
    key = f"olk_{prefix}_{secrets.token_urlsafe(24)}"
    key_id = conn.execute(
        api_keys.insert().values(brand=brand, name=name, prefix=prefix, key_hash=hash_key(key), created_at=now)
    ).inserted_primary_key[0]
    return ApiKeyInfo(int(key_id), brand, name, prefix, now, None), key


def list_keys(conn: Connection) -> list[ApiKeyInfo]:
    """Every key, oldest first."""
    rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.id)).all()
    return [ApiKeyInfo(r.id, r.brand, r.name, r.prefix, r.created_at, r.revoked_at) for r in rows]


def revoke_key(conn: Connection, now: datetime, *, prefix: str) -> ApiKeyInfo:
    """Revoke the key with this prefix (revoking twice keeps the first time)."""
    row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).first()
    if row is None:
        raise NotFound(f"no key with prefix {prefix}", field="prefix")
    if row.revoked_at is None:
        conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=now))
    return ApiKeyInfo(row.id, row.brand, row.name, row.prefix, row.created_at, row.revoked_at or now)


class KeyCache:
    """Looks keys up by hash, remembering answers for a few seconds so each API call skips a query.

    A revoked key stops working within `ttl` seconds in every process.
    """

    def __init__(self, engine: Engine, ttl: float = 5.0):
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ApiKeyInfo | None]] = {}

    def authenticate(self, key: str | None) -> ApiKeyInfo:
        """The live key for this secret, or Unauthorized."""
        if not key:
            raise Unauthorized("missing API key: send x-api-key or Authorization: Bearer")
        digest = hash_key(key)
        hit = self._cache.get(digest)
        if hit is None or hit[0] < time.monotonic():
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest)).first()
            info = ApiKeyInfo(row.id, row.brand, row.name, row.prefix, row.created_at, row.revoked_at) if row else None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic() + self.ttl, info)
        else:
            info = hit[1]
        if info is None or info.revoked_at is not None:
            raise Unauthorized("unknown or revoked API key")
        return info
