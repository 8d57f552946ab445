"""optline's domain exceptions, one tree, translated to HTTP in one place (app.web.problems).

    OptlineError
    ├── ConfigError            bad keywords.yaml or settings; start-up stops with its message
    ├── InvalidInput           a client sent something we refuse (HTTP 4xx)
    │   ├── InvalidPhone       not a phone number we can put in E.164
    │   ├── InvalidPayload     a provider payload missing or mangling a field
    │   ├── NotFound           no such thing for this brand (404)
    │   ├── Conflict           the request collides with another in flight, or with a newer opt-out (409)
    │   │   └── OptedOut       the phone opted out itself; only the phone may rejoin (409)
    │   ├── PayloadTooLarge    a body over the route's limit (413)
    │   ├── UnsupportedMediaType  a body that is not JSON (415)
    │   └── Unprocessable      well-formed but semantically refused (422)
    ├── Unauthorized           no or bad API key (401)
    └── DatabaseUnavailable    the database cannot be reached (503, providers retry)

Providers raise their own `app.providers.base.SendError`; it never reaches HTTP.
"""

from __future__ import annotations


class OptlineError(Exception):
    """Root of every error optline raises on purpose."""


class ConfigError(OptlineError):
    """Configuration that cannot be used; the message is one line, with file:line for YAML."""


class InvalidInput(OptlineError):
    """Input a client must fix; `field` names the offending field when there is one."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, errors: list[tuple[str, str]] | None = None,
                 extra: dict[str, object] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors if errors is not None else ([(field, message)] if field else [])
        self.extra = extra or {}  # problem+json extension members


class InvalidPhone(InvalidInput):
    """A phone number that cannot be parsed into E.164."""

    status = 422


class InvalidPayload(InvalidInput):
    """A provider webhook payload we cannot act on."""

    status = 400


class NotFound(InvalidInput):
    """Nothing by that reference, for this brand."""

    status = 404


class Conflict(InvalidInput):
    """Another request with the same key is still in flight, or consent older than an opt-out."""

    status = 409


class OptedOut(Conflict):
    """The phone opted out itself: only the phone may subscribe again (`extra["optOut"]`: when, source, scope)."""


class PayloadTooLarge(InvalidInput):
    """A request body over the route's size limit."""

    status = 413


class UnsupportedMediaType(InvalidInput):
    """A body in a media type the route does not take."""

    status = 415


class Unprocessable(InvalidInput):
    """Well-formed input that optline refuses."""

    status = 422


class Unauthorized(OptlineError):
    """Missing, unknown or revoked API key."""


class DatabaseUnavailable(OptlineError):
    """The database cannot be reached; callers answer 503 so providers retry."""
