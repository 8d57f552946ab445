"""Console accounts: one brand each, passwords stored as argon2id hashes only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection

from app.console.roles import ROLES, Role
from app.console.throttle import forget_account
from app.errors import Conflict, InvalidInput, NotFound
from app.models import console_users

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" is only a way to burn CPU
MAX_EMAIL = 254
RESET_VALID_FOR = timedelta(hours=24)

# argon2id as OWASP's password storage guide recommends at least (19 MiB, 2 passes, 1 lane):
# ~40 ms a check here. argon2-cffi's defaults (64 MiB, 3 passes, 4 lanes) took 350-450 ms on
# two busy cores, time a sign-in holds a thread. A hash records its own parameters, so raising
# these later still verifies every stored hash.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Checked when the email is unknown, so a wrong email costs as long as a wrong password.
    # Made on first use, not at import: every optline process imports this module.
    return _HASHER.hash("optline: no such user")


@dataclass(frozen=True)
class ConsoleUser:
    """A console account as the console sees it (never the hash)."""

    id: int
    brand: str
    email: str
    created_at: datetime
    disabled_at: datetime | None
    signed_out_at: datetime | None
    last_sign_in_at: datetime | None
    role: str = Role.VIEWER.value

    @property
    def active(self) -> bool:
        """True unless the account was disabled."""
        return self.disabled_at is None


def normalise_email(raw: str) -> str:
    """The stored form of an email: trimmed, lower-case; InvalidInput when it is not one."""
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > MAX_EMAIL or any(c.isspace() for c in email):
        raise InvalidInput("not an email address", field="email")
    return email


def check_password_rules(password: str) -> None:
    """InvalidInput when a new password is too short or too long."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password must have at most {MAX_PASSWORD} characters", field="password")


def hash_password(password: str) -> str:
    """The argon2id hash of a new password (slow on purpose: call it off the event loop)."""
    check_password_rules(password)
    return _HASHER.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """True when `password` is the one hashed; a missing hash still costs one full check."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _user(row: sa.Row[tuple[object, ...]]) -> ConsoleUser:
    return ConsoleUser(row.id, row.brand, row.email, row.created_at, row.disabled_at, row.signed_out_at,
                       row.last_sign_in_at, row.role)


def check_role(role: str) -> Role:
    """The Role named `role`; InvalidInput naming the roles otherwise."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (roles: {', '.join(ROLES)})", field="role")
    return Role(role)


def create_user(conn: Connection, now: datetime, *, brand: str, email: str, password_hash: str,
                role: str = Role.VIEWER.value) -> ConsoleUser:
    """Add an account; Conflict when the email already has one (a disabled one is enabled again, not re-created)."""
    email = normalise_email(email)
    role = check_role(role).value
    existing = conn.execute(sa.select(console_users.c.disabled_at).where(console_users.c.email == email)).first()
    if existing is not None:
        hint = f": enable it with `optline users enable {email}`" if existing.disabled_at else ""
        raise Conflict(f"{email} already has a console account{' (disabled)' if hint else ''}{hint}", field="email")
    user_id = conn.execute(console_users.insert().values(
        brand=brand, email=email, password_hash=password_hash, created_at=now, role=role)).inserted_primary_key[0]
    return ConsoleUser(int(user_id), brand, email, now, None, None, None, role)


def _existing(conn: Connection, email: str) -> sa.Row[tuple[object, ...]]:
    email = normalise_email(email)
    row = conn.execute(sa.select(console_users).where(console_users.c.email == email)).first()
    if row is None:
        raise NotFound(f"no console account for {email}", field="email")
    return row


def enable_user(conn: Connection, now: datetime, *, email: str) -> ConsoleUser:
    """Let a disabled account sign in again (its old sessions stay void: they ended when it was disabled)."""
    row = _existing(conn, email)
    if row.disabled_at is not None:
        # Sessions issued before the account was disabled must not come back to life with it.
        conn.execute(console_users.update().where(console_users.c.id == row.id)
                     .values(disabled_at=None, signed_out_at=now))
    return replace(_user(row), disabled_at=None)


def set_role(conn: Connection, _now: datetime, *, email: str, role: str) -> ConsoleUser:
    """Give an account another role; it applies from the account's next request."""
    row = _existing(conn, email)
    role = check_role(role).value
    conn.execute(console_users.update().where(console_users.c.id == row.id).values(role=role))
    return replace(_user(row), role=role)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_reset(conn: Connection, now: datetime, *, email: str,
                valid_for: timedelta = RESET_VALID_FOR) -> tuple[ConsoleUser, str]:
    """A one-time password reset token for the account (any earlier one stops working); the token is not stored."""
    row = _existing(conn, email)
    if row.disabled_at is not None:
        raise Conflict(f"{row.email} is disabled: enable it first (`optline users enable {row.email}`)",
                       field="email")
    token = secrets.token_urlsafe(32)
    conn.execute(console_users.update().where(console_users.c.id == row.id).values(
        reset_token_hash=_token_hash(token), reset_expires_at=now + valid_for))
    return _user(row), token


def reset_holder(conn: Connection, now: datetime, *, token: str) -> ConsoleUser | None:
    """The enabled account whose unexpired reset token this is, or None."""
    if not 20 <= len(token) <= 100:
        return None
    row = conn.execute(sa.select(console_users).where(console_users.c.reset_token_hash == _token_hash(token))).first()
    if row is None or row.disabled_at is not None or row.reset_expires_at is None or row.reset_expires_at <= now:
        return None
    return _user(row)


def finish_reset(conn: Connection, now: datetime, *, token: str, password_hash: str) -> ConsoleUser:
    """Set the new password of the token's account, use the token up, and end every session; NotFound if unusable."""
    user = reset_holder(conn, now, token=token)
    if user is None:
        raise NotFound("this reset link is unknown, used or expired")
    # Conditional on the token still being there: two submissions of one link set one password.
    done = conn.execute(console_users.update().where(
        console_users.c.id == user.id, console_users.c.reset_token_hash == _token_hash(token)).values(
        password_hash=password_hash, reset_token_hash=None, reset_expires_at=None, signed_out_at=now)).rowcount
    if done != 1:
        raise NotFound("this reset link is unknown, used or expired")
    forget_account(conn, email=user.email)
    return user


def change_password(conn: Connection, now: datetime, *, user_id: int, password_hash: str) -> None:
    """Set a signed-in account's new password and end its sessions everywhere (the caller issues a new one)."""
    conn.execute(console_users.update().where(console_users.c.id == user_id).values(
        password_hash=password_hash, signed_out_at=now, reset_token_hash=None, reset_expires_at=None))


def list_users(conn: Connection, *, brand: str | None = None) -> list[ConsoleUser]:
    """Every account (of one brand when asked), oldest first."""
    query = sa.select(console_users).order_by(console_users.c.id)
    if brand is not None:
        query = query.where(console_users.c.brand == brand)
    return [_user(row) for row in conn.execute(query)]


def disable_user(conn: Connection, now: datetime, *, email: str) -> ConsoleUser:
    """Disable an account; its sessions stop working at their next request (disabling twice keeps the first time)."""
    row = _existing(conn, email)
    if row.disabled_at is None:
        conn.execute(console_users.update().where(console_users.c.id == row.id)
                     .values(disabled_at=now, reset_token_hash=None, reset_expires_at=None))
    user = _user(row)
    return user if user.disabled_at else replace(user, disabled_at=now)


def credentials(conn: Connection, *, email: str) -> tuple[ConsoleUser, str] | None:
    """The account and its hash for a sign-in, or None for an email with no account."""
    row = conn.execute(sa.select(console_users).where(console_users.c.email == email)).first()
    return None if row is None else (_user(row), row.password_hash)


def user_by_id(conn: Connection, *, user_id: int) -> ConsoleUser | None:
    """The account a session names, or None."""
    row = conn.execute(sa.select(console_users).where(console_users.c.id == user_id)).first()
    return None if row is None else _user(row)


def note_sign_in(conn: Connection, now: datetime, *, user_id: int) -> None:
    """Record when the account last signed in."""
    conn.execute(console_users.update().where(console_users.c.id == user_id).values(last_sign_in_at=now))


def sign_out_everywhere(conn: Connection, now: datetime, *, user_id: int) -> None:
    """Void every session of the account issued until now."""
    conn.execute(console_users.update().where(console_users.c.id == user_id).values(signed_out_at=now))
