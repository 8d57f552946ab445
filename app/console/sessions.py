"""Console sessions in signed cookies, CSRF tokens bound to them, and one-time flashes.

A session cookie holds `{"u": user id, "s": session nonce, "t": issued at}` signed with
the process key (app.signing, purpose `console.session`). Nothing is stored server-side,
so every request re-reads the account: a disabled account or one signed out since `t` is
refused at once. A CSRF token is the session nonce signed for another purpose
(`console.csrf`); before sign-in, the nonce of a short-lived pre-session cookie stands in.
"""

from __future__ import annotations

import hmac
import secrets
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
FLASH_COOKIE = "optline_console_flash"
FLASH_SECONDS = 300


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
        self._flash = Signer(key, "console.flash")
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

    def flash(self, response: Response, value: str, *, session: Session, now: datetime) -> None:
        """Hand `value` to this session's next page, once (a new API key after its POST-redirect-GET)."""
        signed = self._flash.dumps({"v": value, "s": session.nonce, "t": now.timestamp()})
        self._set(response, FLASH_COOKIE, signed, FLASH_SECONDS)

    def has_flash(self, request: Request) -> bool:
        """True when the browser holds a flash (the page must then `clear_flash`)."""
        return FLASH_COOKIE in request.cookies

    def clear_flash(self, response: Response) -> None:
        """Delete the flash from the browser: it is shown once."""
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, secure=self.secure, httponly=True, samesite="lax")

    def read_flash(self, request: Request, *, session: Session, now: datetime) -> str | None:
        """The value `flash` handed this session (None when none, another session's, or stale)."""
        raw = request.cookies.get(FLASH_COOKIE)
        if raw is None:
            return None
        data = self._flash.loads(raw)
        if not isinstance(data, dict) or data.get("s") != session.nonce or not isinstance(data.get("v"), str):
            return None
        issued = data.get("t")
        if not isinstance(issued, (int, float)) or not issued <= now.timestamp() < issued + FLASH_SECONDS:
            return None
        return data["v"]  # type: ignore[no-any-return]

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, secure=self.secure, httponly=True,
                            samesite="lax")
