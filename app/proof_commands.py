"""`optline ledger verify | checkpoint`, `optline erase` and `optline retention`: proving consent from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from app.errors import InvalidInput


def add_parser(sub: argparse._SubParsersAction, *,  # type: ignore[type-arg]
               formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter) -> None:
    """Register `optline ledger`, `optline erase` and `optline retention` on the CLI's subcommands."""

    def command(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, description=help, formatter_class=formatter_class)

    ledger = command(sub, "ledger", "prove the consent ledger is intact")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    verify = command(ledger_sub, "verify", "walk every chain and checkpoint; exit 1 naming the first broken event")
    verify.add_argument("--brand", default=None, help="only this brand's chains (default: every brand)")
    verify.add_argument("--checkpoint", default=None, metavar="HASH",
                        help="a checkpoint hash kept outside optline: fail unless the ledger still has it (default: none)")
    command(ledger_sub, "checkpoint", "seal every chain head that moved since the last checkpoint; print its hash")
    ledger.set_defaults(func=run_ledger)
    erase = command(sub, "erase", "erase a number from a brand: its personal data and texts go, its opt-outs stay")
    erase.add_argument("--brand", required=True, help="a brand key of keywords.yaml (required)")
    erase.add_argument("--phone", required=True, help="the number, E.164 or national for the brand's region (required)")
    erase.set_defaults(func=run_erase)
    retention = command(sub, "retention", "blank message bodies older than OPTLINE_BODY_RETENTION_DAYS "
                                          "(opt-outs and the consent ledger are never purged)")
    retention.add_argument("--days", type=int, default=None,
                           help="the age in days (default: OPTLINE_BODY_RETENTION_DAYS; nothing when unset)")
    retention.set_defaults(func=run_retention)


def _setup() -> Any:
    from app import ledger
    from app.main import check_database
    from app.settings import load_settings
    from app.proof import ledger_key

    settings = load_settings()
    check_database(settings)
    ledger.configure(ledger_key(settings))
    return settings


def run_ledger(args: argparse.Namespace) -> int:
    """Carry out `optline ledger verify` or `optline ledger checkpoint`."""
    from app.db import make_engine, run_in_transaction
    from app.keywords import load_rules
    from app.ledger_verify import verify
    from app.proof import seal

    settings = _setup()
    engine = make_engine(settings.database_url, writer=args.ledger_command == "checkpoint")
    try:
        if args.ledger_command == "checkpoint":
            rules = load_rules(settings.keywords)
            checkpoint = run_in_transaction(engine, lambda conn, now: seal(conn, now, rules=rules))
            if checkpoint is None:
                print("no chain moved since the last checkpoint")
            else:
                print(f"checkpoint {checkpoint.id}: {checkpoint.heads} chain heads sealed")
                print(checkpoint.hash)
            return 0
        with engine.connect() as conn:
            found = verify(conn, brand=args.brand, expect_checkpoint=args.checkpoint)
    finally:
        engine.dispose()
    scope = f"brand {args.brand}" if args.brand else "every brand"
    if found.ok:
        print(f"ledger intact ({scope}): {found.events} events in {found.chains} chains, "
              f"{found.checkpoints} checkpoints" + (f", latest {found.latest_checkpoint}" if found.latest_checkpoint
                                                   else ""))
        return 0
    first = found.first
    assert first is not None
    print(f"ledger BROKEN ({scope}): {first}")
    total = len(found.problems) + found.more_problems
    for problem in found.problems[1:20]:
        print(f"  also: {problem}")
    if total > 1:
        print(f"{total} problems in all")
    return 1


def run_erase(args: argparse.Namespace) -> int:
    """Carry out `optline erase`."""
    from app.db import make_engine, run_in_transaction
    from app.erasure import erase
    from app.keywords import load_rules
    from app.phone import to_e164

    settings = _setup()
    rules = load_rules(settings.keywords)
    if args.brand not in rules.brands:
        raise InvalidInput(f"unknown brand {args.brand!r} (keywords.yaml has {', '.join(sorted(rules.brands))})")
    phone = to_e164(args.phone, rules.brands[args.brand].default_region)
    engine = make_engine(settings.database_url, writer=True)
    try:
        counts = run_in_transaction(engine, lambda conn, now: erase(conn, now, brand=args.brand, phone=phone),
                                    locks=[phone])
    finally:
        engine.dispose()
    print(f"erased {phone} from {args.brand}: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def run_retention(args: argparse.Namespace) -> int:
    """Carry out `optline retention`."""
    from app.db import make_engine, run_in_transaction
    from app.erasure import expire_bodies

    settings = _setup()
    days = args.days if args.days is not None else settings.body_retention_days
    if days is None:
        print("no retention set (OPTLINE_BODY_RETENTION_DAYS): nothing blanked")
        return 0
    if days < 1:
        raise InvalidInput("--days must be 1 or more")
    engine = make_engine(settings.database_url, writer=True)
    total = 0
    try:
        while True:  # in slices, so no transaction holds the writer long
            n = run_in_transaction(engine, lambda conn, now: expire_bodies(conn, now, days=days))
            total += n
            if n == 0:
                break
    finally:
        engine.dispose()
    print(f"blanked {total} message bodies older than {days} days (opt-outs and the consent ledger kept)")
    return 0
