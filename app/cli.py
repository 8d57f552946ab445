"""optline serve | worker | migrate | check | simulate | keys | export."""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from app.errors import ConfigError, DatabaseUnavailable, InvalidInput, OptlineError

log = logging.getLogger("optline")


def _fail(message: str) -> int:
    print(f"optline: {message}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the webhooks and the API (and, by default, the outbox sender)."""
    import uvicorn

    from app.events import check_event_secrets
    from app.keywords import load_rules
    from app.logs import setup_logging
    from app.main import check_database
    from app.settings import load_settings

    settings = load_settings()
    check_event_secrets(load_rules(settings.keywords))
    check_database(settings)
    setup_logging(settings.log_level)
    # log_config=None: uvicorn's loggers propagate to our JSON handler instead of its own.
    uvicorn.run(
        "app.main:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
        loop="uvloop", http="httptools", log_level=settings.log_level.lower(), access_log=False,
        timeout_graceful_shutdown=30, log_config=None,
    )
    return 0


def cmd_worker(_args: argparse.Namespace) -> int:
    """Run the outbox sender and the DOI sweep only."""
    from app.events import check_event_secrets
    from app.keywords import load_rules
    from app.logs import setup_logging
    from app.main import build_state, check_database, start_background, stop_background
    from app.settings import load_settings

    settings = load_settings()
    rules = load_rules(settings.keywords)
    check_event_secrets(rules)
    check_database(settings)
    setup_logging(settings.log_level)

    async def main() -> None:
        state = build_state(settings, rules=rules)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await start_background(state, sender=True)
        log.info("worker %s sending", state.sender.worker_id if state.sender else "?")
        await stop.wait()
        log.info("worker stopping: finishing sends in flight")
        await stop_background(state)
        log.info("worker stopped")

    asyncio.run(main())
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Migrate the database to the newest schema."""
    from app.migrate import upgrade
    from app.settings import load_settings

    settings = load_settings()
    try:
        upgrade(settings.database_url)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database ({str(exc.orig).strip().splitlines()[0]})") from None
    print("database migrated to head")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate keywords.yaml: errors (exit 1) and compliance warnings."""
    from app.keywords import check
    from app.settings import load_settings

    path = args.file or load_settings().keywords
    report = check(path)
    for finding in report.errors:
        print(f"error: {finding}")
    for finding in report.warnings:
        print(f"warning: {finding}")
    if report.errors:
        return 1
    print(f"{path}: ok ({len(report.warnings)} warning{'s' if len(report.warnings) != 1 else ''})")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run one inbound text through the real pipeline and print its reply; only its own reply is sent.

    With --dry-run, print what the text would do (normalised text, the rule that matched,
    every transition, the reply and its language) and write nothing.
    """
    from functools import partial

    from app.dryrun import dry_run
    from app.inbound import InboundJob
    from app.main import build_state, check_database
    from app.phone import inbound_address
    from app.providers.base import CHANNEL_SMS, InboundSms
    from app.providers.console import ConsoleProvider
    from app.settings import load_settings

    settings = load_settings()
    check_database(settings)
    try:
        sender = inbound_address(getattr(args, "from"))
    except InvalidInput as exc:
        return _fail(f"--from: {exc.message}")
    provider = ConsoleProvider()
    state = build_state(settings, provider=provider)
    sms = InboundSms(
        provider="simulate", message_id="SIM" + secrets.token_hex(16), account_id=None, from_phone=sender.phone,
        to=args.to, service_id=None, body=args.text, num_media=0, opt_out_type=None,
        params={"From": sender.raw, "To": args.to, "Body": args.text}, channel=sender.channel,
        from_address=None if sender.channel == CHANNEL_SMS else sender.raw,
    )
    locks = [sender.phone] if sender.phone else []
    assert state.sender is not None
    try:
        if args.dry_run:
            report = state.writer.call(partial(dry_run, sms=sms, rules=state.rules), locks=locks)
            print("\n".join(report.lines()))
            return 0
        result = state.writer.call(InboundJob(sms, state.rules), locks=locks)
        if result.outbox_id is not None:
            sender_ = state.sender
            outbox_id = result.outbox_id

            async def deliver() -> None:
                await sender_.send_now(outbox_id)  # this text's reply only, never anyone else's

            state.writer.start()
            try:
                asyncio.run(deliver())
            finally:
                state.writer.stop()
    finally:
        state.sender.close()
        state.writer.stop()
    print(f"[{result.kind}{' ' + result.program if result.program else ''}]")
    print(result.reply if result.reply is not None else "(no reply)")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list and revoke brand API keys."""
    from app.auth import create_key, list_keys, revoke_key
    from app.db import make_engine, run_in_transaction
    from app.keywords import load_rules
    from app.main import check_database
    from app.settings import load_settings

    settings = load_settings()
    check_database(settings)
    engine = make_engine(settings.database_url, writer=True)
    try:
        if args.keys_command == "create":
            rules = load_rules(settings.keywords)
            if args.brand not in rules.brands:
                return _fail(f"unknown brand {args.brand!r} (keywords.yaml has {', '.join(sorted(rules.brands))})")
            info, key = run_in_transaction(engine, lambda c, now: create_key(c, now, brand=args.brand, name=args.name))
            print(f"created key {info.prefix} for brand {info.brand}; store it now, it is not shown again:")
            print(key)
        elif args.keys_command == "list":
            for info in run_in_transaction(engine, lambda c, now: list_keys(c)):
                state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
                print(f"{info.prefix}  {info.brand:<16} {state:<18} {info.created_at:%Y-%m-%d %H:%M}  {info.name or ''}")
        else:
            info = run_in_transaction(engine, lambda c, now: revoke_key(c, now, prefix=args.prefix))
            print(f"revoked key {info.prefix} of brand {info.brand}")
    finally:
        engine.dispose()
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """Re-drive failed outbox rows that are still allowed (a provider outage outlived their deadline)."""
    from app.db import make_engine, run_in_transaction
    from app.main import check_database, deadlines
    from app.outbox import redrive
    from app.settings import load_settings

    settings = load_settings()
    check_database(settings)
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            return _fail("--since must be an ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
        if since.tzinfo is None:
            return _fail("--since must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    engine = make_engine(settings.database_url, writer=True)
    try:
        count = run_in_transaction(engine, lambda conn, now: redrive(conn, now, since=since, brand=args.brand,
                                                                     deadlines=deadlines(settings)))
    finally:
        engine.dispose()
    print(f"re-queued {count} failed row{'s' if count != 1 else ''}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the consent ledger of one brand as CSV to stdout."""
    from app.db import make_engine
    from app.main import check_database
    from app.models import consent_events
    from app.settings import load_settings

    settings = load_settings()
    check_database(settings)
    query = sa.select(consent_events).where(consent_events.c.brand == args.brand).order_by(consent_events.c.id)
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            return _fail("--since must be an ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
        if since.tzinfo is None:
            return _fail("--since must carry a time zone, e.g. 2026-01-01T00:00:00Z")
        query = query.where(consent_events.c.created_at >= since)
    engine = make_engine(settings.database_url)
    columns = [c.name for c in consent_events.columns]
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    try:
        with engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(query):
                values = row._mapping
                writer.writerow(
                    [values[c].isoformat() if isinstance(values[c], datetime) else
                     ("" if values[c] is None else values[c]) for c in columns]
                )
    finally:
        engine.dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="optline", description="Inbound SMS keyword and double-opt-in gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve webhooks and the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run the outbox sender only").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="migrate the database").set_defaults(func=cmd_migrate)

    check = sub.add_parser("check", help="validate keywords.yaml")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_check)

    simulate = sub.add_parser("simulate", help="run one inbound text through the pipeline")
    simulate.add_argument("--from", required=True, metavar="NUMBER",
                          help="the texting phone, E.164 (or whatsapp:+1…, rcs:+1…, messenger:ID)")
    simulate.add_argument("--to", required=True, metavar="NUMBER", help="the brand's number (a sender in keywords.yaml)")
    simulate.add_argument("--dry-run", action="store_true",
                          help="print what the text would do (rule, transitions, reply) and write nothing")
    simulate.add_argument("text", help="the text, as the phone would send it")
    simulate.set_defaults(func=cmd_simulate)

    keys = sub.add_parser("keys", help="manage brand API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("--brand", required=True)
    create.add_argument("--name")
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("prefix")
    keys.set_defaults(func=cmd_keys)

    outbox = sub.add_parser("outbox", help="operate the outbox")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    retry = outbox_sub.add_parser("retry", help="re-queue failed rows that are still allowed, with a new deadline")
    retry.add_argument("--since", help="only rows that failed at or after this ISO 8601 time (default: all)")
    retry.add_argument("--brand", help="only this brand's rows (default: every brand)")
    outbox.set_defaults(func=cmd_outbox)

    export = sub.add_parser("export", help="export data")
    export_sub = export.add_subparsers(dest="export_command", required=True)
    consent = export_sub.add_parser("consent", help="the consent ledger as CSV")
    consent.add_argument("--brand", required=True)
    consent.add_argument("--since")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `optline` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _fail(str(exc))
    except DatabaseUnavailable as exc:
        return _fail(str(exc))
    except OptlineError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
