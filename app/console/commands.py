"""`optline users create | list | disable | enable | role | reset-password`: console accounts, from the
command line only."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from app.console.roles import ROLES
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
    create.add_argument("--role", choices=ROLES, default="viewer",
                        help="viewer reads; compliance also opts phones out, decides flagged texts and exports; "
                             "owner also manages API keys (default: viewer)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (default: ask twice)")
    listing = command(users_sub, "list", "every account, with its brand, role and state")
    listing.add_argument("--brand", help="only this brand's accounts (default: all)")
    disable = command(users_sub, "disable", "stop an account signing in; its sessions end at once")
    disable.add_argument("email", help="the account's email")
    enable = command(users_sub, "enable", "let a disabled account sign in again (its old sessions stay ended)")
    enable.add_argument("email", help="the account's email")
    role = command(users_sub, "role", "give an account another role (from its next request)")
    role.add_argument("email", help="the account's email")
    role.add_argument("role", choices=ROLES, help="the new role")
    reset = command(users_sub, "reset-password",
                    "print a one-time link where the person chooses a new password (valid 24 hours, once; "
                    "any earlier link stops working)")
    reset.add_argument("email", help="the account's email")
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
        check_password_rules, create_user, disable_user, enable_user, hash_password, list_users, normalise_email,
        set_role, start_reset,
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
    command = args.users_command
    try:
        if command == "create":
            user = run_in_transaction(engine, lambda c, now: create_user(c, now, brand=args.brand, email=email,
                                                                        password_hash=password_hash, role=args.role))
            print(f"created console user {user.email} ({user.role}) for brand {user.brand}")
        elif command == "list":
            users = run_in_transaction(engine, lambda c, now: list_users(c, brand=args.brand))
            print(f"{'EMAIL':<40} {'BRAND':<16} {'ROLE':<11} {'STATE':<22} CREATED")
            for user in users:
                state = f"disabled {user.disabled_at:%Y-%m-%d}" if user.disabled_at else "active"
                print(f"{user.email:<40} {user.brand:<16} {user.role:<11} {state:<22} {user.created_at:%Y-%m-%d %H:%M}")
        elif command == "disable":
            user = run_in_transaction(engine, lambda c, now: disable_user(c, now, email=args.email))
            print(f"disabled console user {user.email} of brand {user.brand}")
        elif command == "enable":
            user = run_in_transaction(engine, lambda c, now: enable_user(c, now, email=args.email))
            print(f"enabled console user {user.email} of brand {user.brand}")
        elif command == "role":
            user = run_in_transaction(engine, lambda c, now: set_role(c, now, email=args.email, role=args.role))
            print(f"console user {user.email} of brand {user.brand} is now {user.role}")
        else:
            user, token = run_in_transaction(engine, lambda c, now: start_reset(c, now, email=args.email))
            print(f"one-time link for {user.email} (valid 24 hours, works once; give it to the person only):")
            print(f"{settings.public_url.rstrip('/')}/console/reset/{token}")
    finally:
        engine.dispose()
    return 0
