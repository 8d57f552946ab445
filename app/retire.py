"""A keywords file may not silently drop what people are still subscribed through.

A brand, program or sender taken out of keywords.yaml while phones are subscribed (or asked to
confirm) through it would leave those people texting a number that no longer answers their
STOP. So start-up, `optline reload` (every process's reload) and `optline check` compare the
file with the subscriptions the database holds and refuse a file that drops one of them,
naming it, unless the file says it was meant: a top-level `retired:` section lists the brands,
programs (`brand/program`) and senders taken out on purpose. A STOP to a retired number is
still honoured (app.inbound ends whatever the phone joined through it).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.errors import ConfigError
from app.keywords import Rules
from app.senders import sender_key
from app.subscriptions import Status

LIVE = (Status.SUBSCRIBED.value, Status.PENDING.value)


@dataclass(frozen=True)
class Live:
    """Subscriptions still live (subscribed or pendingDOI) in one program through one sender."""

    brand: str
    program: str
    sender: str | None  # the sender joined through; None for rows from before it was recorded
    count: int


def live_routes(conn: Connection) -> list[Live]:
    """Every (brand, program, sender joined through) that has live subscriptions, with how many."""
    rows = conn.execute(sa.text(
        "SELECT brand, program, joined_via, count(*) FROM subscriptions WHERE status IN (:a, :b)"
        " GROUP BY brand, program, joined_via ORDER BY brand, program, joined_via"), {"a": LIVE[0], "b": LIVE[1]})
    return [Live(brand, program, sender, count) for brand, program, sender, count in rows]


def dropped(rules: Rules, live: list[Live]) -> list[str]:
    """What `rules` drops that still has live subscriptions and is not retired, one line each."""
    retired = rules.retired
    brands, programs = retired.get("brands", frozenset()), retired.get("programs", frozenset())
    senders = {sender_key(s) for s in retired.get("senders", frozenset())}
    problems: dict[str, int] = {}
    for row in live:
        brand = rules.brands.get(row.brand)
        if brand is None:
            if row.brand not in brands:
                problems[f"brand {row.brand!r}"] = problems.get(f"brand {row.brand!r}", 0) + row.count
            continue
        program = brand.programs.get(row.program)
        if program is None:
            name = f"{row.brand}/{row.program}"
            if name not in programs and row.brand not in brands:
                problems[f"program {name!r}"] = problems.get(f"program {name!r}", 0) + row.count
            continue
        if row.sender is not None and sender_key(row.sender) not in {sender_key(s) for s in program.senders} \
                and sender_key(row.sender) not in senders:
            name = f"sender {row.sender!r} of {row.brand}/{row.program}"
            problems[name] = problems.get(name, 0) + row.count
    return [f"{what} is not in the file but {count} phone{'s are' if count != 1 else ' is'} still subscribed "
            "or asked to confirm through it" for what, count in problems.items()]


def check_rules_keep_subscribers(rules: Rules, engine: Engine) -> None:
    """ConfigError naming the first thing `rules` drops that still has subscribers (see `dropped`)."""
    with engine.connect() as conn:
        problems = dropped(rules, live_routes(conn))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{rules.path}: {problems[0]}{more}; put it back, or list it under retired: "
                          "if it was taken out on purpose (docs/keywords.md#retired)")


__all__ = ["Live", "check_rules_keep_subscribers", "dropped", "live_routes"]
