"""Console sessions in signed cookies, CSRF tokens bound to them, and sign-in throttling.

A session cookie holds `{"u": user id, "s": session nonce, "t": issued at}` signed with
the process key (app.signing, purpose `console.session`). Nothing is stored server-side,
so every request re-reads the account: a disabled account or one signed out since `t` is
refused at once. A CSRF token is the session nonce signed for another purpose
(`console.csrf`); before sign-in, the nonce of a short-lived pre-session cookie stands in.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from app.console.accounts import ConsoleUser
from app.settings import Settings
from app.signing import Signer, secret_key

SESSION_COOKIE = "optline_console"
PRE_SESSION_COOKIE = "optline_console_pre"
COOKIE_PATH = "/console"
SESSION_SECONDS = 12 * 3600  # a working day; then sign in again
PRE_SESSION_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who, and the nonce its CSRF tokens carry."""

    user_id: int
    nonce: str
    issued_at: float  # seconds since the epoch


class SessionCodec:
    """Issues and reads session cookies and CSRF tokens for one process key."""

    def __init__(self, settings: Settings):
        key = secret_key(settings)
        self._session = Signer(key, "console.session")
        self._csrf = Signer(key, "console.csrf")
        # Browsers send a Secure cookie back only over HTTPS: set it whenever optline is served that way.
        self.secure = settings.public_url.startswith("https://")

    def issue(self, response: Response, *, user_id: int, now: datetime) -> Session:
        """Sign the browser in: a new nonce (never the pre-session one, so a planted cookie gains nothing)."""
        session = Session(user_id, secrets.token_urlsafe(16), now.timestamp())
        value = self._session.dumps({"u": session.user_id, "s": session.nonce, "t": session.issued_at})
        self._set(response, SESSION_COOKIE, value, SESSION_SECONDS)
        response.delete_cookie(PRE_SESSION_COOKIE, path=COOKIE_PATH, secure=self.secure, httponly=True, samesite="lax")
        return session

    def read(self, request: Request, *, now: datetime) -> Session | None:
        """The request's session when its cookie is ours and not expired (the account is checked by the caller)."""
        data = self._session.loads(request.cookies.get(SESSION_COOKIE, ""))
        if not isinstance(data, dict):
            return None
        user_id, nonce, issued = data.get("u"), data.get("s"), data.get("t")
        if not isinstance(user_id, int) or not isinstance(nonce, str) or not isinstance(issued, (int, float)):
            return None
        if not issued <= now.timestamp() < issued + SESSION_SECONDS:
            return None
        return Session(user_id, nonce, float(issued))

    def still_valid(self, session: Session, user: ConsoleUser | None) -> bool:
        """True when the account exists, is enabled, and has not signed out since the session began."""
        if user is None or not user.active:
            return False
        return user.signed_out_at is None or session.issued_at > user.signed_out_at.timestamp()

    def clear(self, response: Response) -> None:
        """Remove the session cookie from the browser."""
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=self.secure, httponly=True, samesite="lax")

    def pre_session(self, request: Request) -> tuple[str, bool]:
        """The nonce of the sign-in form's CSRF token: the browser's pre-session cookie's, or a new one (True)."""
        nonce = request.cookies.get(PRE_SESSION_COOKIE, "")
        if 16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum():
            return nonce, False
        return secrets.token_urlsafe(16), True

    def remember_pre_session(self, response: Response, nonce: str) -> None:
        """Give the browser its pre-session cookie."""
        self._set(response, PRE_SESSION_COOKIE, nonce, PRE_SESSION_SECONDS)

    def csrf_token(self, nonce: str) -> str:
        """The token every form of this session carries."""
        return self._csrf.dumps(nonce)

    def csrf_ok(self, token: str | None, nonce: str) -> bool:
        """True when `token` was made for this nonce."""
        value = self._csrf.loads(token or "")
        return isinstance(value, str) and hmac.compare_digest(value.encode(), nonce.encode())

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, secure=self.secure, httponly=True,
                            samesite="lax")


class Throttle:
    """At most `limit` failed sign-ins per key in a sliding `window` of seconds (per process).

    Keys are the email and the client address, so one address cannot try many emails and
    many addresses cannot try one email without each being slowed.
    """

    def __init__(self, *, limit: int, window: float, max_keys: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when it may now."""
        if key not in self._failures:
            return 0
        failures = self._recent(key)
        if len(failures) < self.limit:
            return 0
        return max(1, int(failures[0] + self.window - time.monotonic()) + 1)

    def failed(self, key: str) -> None:
        """Count one failed sign-in for `key`."""
        if len(self._failures) >= self.max_keys:
            # A flood of distinct keys must not grow memory without bound; forget the oldest half.
            for stale in list(self._failures)[: self.max_keys // 2]:
                del self._failures[stale]
        self._recent(key).append(time.monotonic())

    def succeeded(self, key: str) -> None:
        """Forget `key`'s failures."""
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        horizon = time.monotonic() - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
        return failures
