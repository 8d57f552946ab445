"""`optline users create | list | disable`: console accounts, from the command line only."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from app.errors import InvalidInput


def add_parser(sub: argparse._SubParsersAction, *,  # type: ignore[type-arg]
               formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter) -> None:
    """Register `optline users` on the CLI's subcommands."""

    def command(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, description=help, formatter_class=formatter_class)

    users = command(sub, "users", "manage web console accounts (they sign in at /console)")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    create = command(users_sub, "create", "make an account that sees one brand")
    create.add_argument("--brand", required=True, help="the brand (a key of keywords.yaml) the account sees")
    create.add_argument("--email", required=True, help="the email the person signs in with")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (default: ask twice)")
    listing = command(users_sub, "list", "every account, with its brand and state")
    listing.add_argument("--brand", help="only this brand's accounts (default: all)")
    disable = command(users_sub, "disable", "stop an account signing in; its sessions end at once")
    disable.add_argument("email", help="the account's email")
    users.set_defaults(func=run)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise InvalidInput("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    """Carry out one `optline users` command."""
    from app.console.accounts import (
        check_password_rules, create_user, disable_user, hash_password, list_users, normalise_email,
    )
    from app.db import make_engine, run_in_transaction
    from app.keywords import load_rules
    from app.main import check_database
    from app.settings import load_settings

    settings = load_settings()
    if args.users_command == "create":
        rules = load_rules(settings.keywords)
        if args.brand not in rules.brands:
            raise InvalidInput(f"unknown brand {args.brand!r} (keywords.yaml has {', '.join(sorted(rules.brands))})")
        email = normalise_email(args.email)
        check_database(settings)
        password = _password(args)
        check_password_rules(password)
        password_hash = hash_password(password)
    else:
        check_database(settings)
    engine = make_engine(settings.database_url, writer=True)
    try:
        if args.users_command == "create":
            user = run_in_transaction(engine, lambda c, now: create_user(c, now, brand=args.brand, email=email,
                                                                        password_hash=password_hash))
            print(f"created console user {user.email} for brand {user.brand}")
        elif args.users_command == "list":
            users = run_in_transaction(engine, lambda c, now: list_users(c, brand=args.brand))
            print(f"{'EMAIL':<40} {'BRAND':<16} {'STATE':<22} CREATED")
            for user in users:
                state = f"disabled {user.disabled_at:%Y-%m-%d}" if user.disabled_at else "active"
                print(f"{user.email:<40} {user.brand:<16} {state:<22} {user.created_at:%Y-%m-%d %H:%M}")
        else:
            user = run_in_transaction(engine, lambda c, now: disable_user(c, now, email=args.email))
            print(f"disabled console user {user.email} of brand {user.brand}")
    finally:
        engine.dispose()
    return 0
