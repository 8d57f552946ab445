"""The process's secret key, and values signed with it so optline can tell its own from a forgery.

One key serves every purpose, each with its own salt (`purpose`): list cursors, console
sessions, CSRF tokens. OPTLINE_SECRET_KEY sets it (several processes or machines must
share one); unset, a random key is made on first use and kept in OPTLINE_SECRET_KEY_FILE
(`var/secret.key`, mode 0600), so one machine's processes agree and restarts keep it.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from app.errors import ConfigError
from app.settings import Settings


def secret_key(settings: Settings) -> str:
    """OPTLINE_SECRET_KEY, else the key kept in OPTLINE_SECRET_KEY_FILE (made on first use)."""
    if settings.secret_key:
        return settings.secret_key
    return _key_file(settings.secret_key_file)


@lru_cache(maxsize=8)
def _key_file(path: str) -> str:
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not each write their own key.
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"OPTLINE_SECRET_KEY is unset and {path} cannot be created: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
            out.flush()
            os.fsync(out.fileno())
    try:
        key = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(key) < 32:
        raise ConfigError(f"{path} holds no usable key (fewer than 32 characters); delete it to make a new one")
    return key


class Signer:
    """Signs JSON-able values for one purpose; `loads` returns None for anything it did not sign."""

    def __init__(self, key: str, purpose: str):
        self._serializer = URLSafeSerializer(key, salt=f"optline.{purpose}")

    def dumps(self, value: Any) -> str:
        """The value, signed, as URL-safe text."""
        return str(self._serializer.dumps(value))

    def loads(self, token: str) -> Any | None:
        """The value `dumps` signed, or None for a forged, altered or malformed token."""
        try:
            return self._serializer.loads(token)
        except (BadSignature, ValueError, TypeError, UnicodeError, RecursionError):
            return None
