"""The web console at /console: a brand's people see counts, timelines, the ledger and API keys.

Its own room: `pages` (routes), `accounts` (console users and passwords), `sessions`
(signed cookies, CSRF, sign-in throttling), `queries` (every read it makes), `chart` (the
30-day bars, pure), `commands` (`optline users`), with `templates/` and `static/` beside them.
"""
