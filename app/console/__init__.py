"""The web console at /console: a brand's people's daily workspace.

Its own room, one concern a module: `pages` (which path answers what), `web` (the signed-in
request, roles, CSRF, templates), `headers` (security headers on every response), `signin`
(sign-in, reset links, own password), `throttle` (failed sign-ins, in the database), `accounts`
and `roles` (console users), `sessions` (signed cookies), `overview` (programs, ledger),
`subscribers` and `subscribers_query` (a program's list and CSV), `phone`, `analytics` and
`rollup` (the ledger counted per hour), `operations`, `keywords_page`, `playground`, `flagged`
and `flags`, `keys`, `queries` (the shared reads), `chart` (SVG geometry, pure), `commands`
(`optline users`), with `templates/` and `static/` beside them.
"""
