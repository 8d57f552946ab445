"""Console roles: what each account may do, checked on the server for every page and form.

Each role can do everything the roles below it can:
- `viewer` reads every page (counts, subscribers, timelines, ledger, analytics, operations,
  keywords, the playground) and changes nothing but its own password;
- `compliance` also acts on consent: opt a phone out, decide flagged texts, download exports;
- `owner` also manages API keys (and, from the command line, the brand's console accounts).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A console account's role (console_users.role)."""

    VIEWER = "viewer"  # reads only
    COMPLIANCE = "compliance"  # reads, opt-outs, flagged texts, exports
    OWNER = "owner"  # all of the above, and API keys


_RANK = {Role.VIEWER: 0, Role.COMPLIANCE: 1, Role.OWNER: 2}
ROLES = tuple(r.value for r in Role)


def allows(role: str, needed: Role) -> bool:
    """True when an account with `role` may do what needs `needed` (an unknown role may do nothing)."""
    try:
        return _RANK[Role(role)] >= _RANK[needed]
    except ValueError:
        return False


__all__ = ["ROLES", "Role", "allows"]
