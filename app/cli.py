"""optline serve | worker | migrate | check | simulate | keys | export | users | ledger | erase | retention."""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

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
    from app.http_protocol import configure
    from app.keywords import load_rules
    from app.logs import setup_logging
    from app.main import check_database
    from app.settings import load_settings

    settings = load_settings()
    rules = load_rules(settings.keywords)
    check_event_secrets(rules)
    check_database(settings, rules)
    setup_logging(settings.log_level)
    # log_config=None: uvicorn's loggers propagate to our JSON handler instead of its own.
    options: dict[str, Any] = dict(
        factory=True, host=args.host, port=args.port, workers=args.workers, loop="uvloop",
        http=configure(settings.header_timeout_seconds),
        log_level=settings.log_level.lower(), access_log=False, timeout_graceful_shutdown=30, log_config=None,
    )
    if args.workers <= 1:
        uvicorn.run("app.main:app_from_env", **options)
        return 0
    # uvicorn.run's multi-process path, with a supervisor that passes SIGHUP (a keywords
    # reload) on to its children instead of restarting them.
    from app.reload import forwarding_supervisor

    config = uvicorn.Config("app.main:app_from_env", **options)
    forwarding_supervisor()(config, sockets=[config.bind_socket()]).run()
    return 0


def cmd_worker(_args: argparse.Namespace) -> int:
    """Run the outbox sender and the DOI sweep only."""
    from app.events import check_event_secrets
    from app.keywords import load_rules
    from app.logs import setup_logging
    from app.main import build_state, check_database, listen_for_reload, start_background, stop_background
    from app.reload import unregister
    from app.settings import load_settings

    settings = load_settings()
    rules = load_rules(settings.keywords)
    check_event_secrets(rules)
    check_database(settings, rules)
    setup_logging(settings.log_level)

    async def main() -> None:
        state = build_state(settings, rules=rules)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await start_background(state, sender=True)
        pid_file = listen_for_reload(state, "worker")  # its sender and sweep use the rules too
        log.info("worker %s sending", state.sender.worker_id if state.sender else "?")
        await stop.wait()
        log.info("worker stopping: finishing sends in flight")
        unregister(pid_file)
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

    path: str | None = args.file
    providers: tuple[str, ...] | None = None
    settings = None
    try:
        settings = load_settings()
        path = path or settings.keywords
        # Senders naming a provider this environment does not run are warned about.
        providers = settings.providers
    except ConfigError:
        if not path:
            raise  # a file named on the command line is checked alone when the environment is broken
    report = check(path, providers=providers)
    for finding in report.errors:
        print(f"error: {finding}")
    for finding in report.warnings:
        print(f"warning: {finding}")
    if report.errors:
        return 1
    dropped = _dropped_subscribers(path, settings.database_url if settings is not None else None)
    for problem in dropped:
        print(f"error: {path}: {problem}; list it under retired: if it was taken out on purpose")
    if dropped:
        return 1
    from app.keywords import load_rules
    from app.rules.scope import describe

    for brand in load_rules(path).brands.values():
        print(describe(brand))
    print(f"{path}: ok ({len(report.warnings)} warning{'s' if len(report.warnings) != 1 else ''})")
    return 0


def _dropped_subscribers(path: str, database_url: str | None) -> list[str]:
    """What the keywords file at `path` drops that still has subscribers in the database (app.retire).

    The file alone is checked when no database is configured or reachable: said on stderr.
    """
    import sqlalchemy as sa

    from app.db import make_engine
    from app.keywords import load_rules
    from app.retire import dropped, live_routes

    if not database_url:
        return []
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and os.path.exists(url.database)):
        return []  # no database yet: nobody is subscribed
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            live = live_routes(conn)
    except sa.exc.SQLAlchemyError as exc:
        print(f"note: subscribers not compared (database: {type(exc).__name__})", file=sys.stderr)
        return []
    finally:
        engine.dispose()
    return dropped(load_rules(path), live)


def cmd_reload(_args: argparse.Namespace) -> int:
    """Check keywords.yaml, then ask every running serve and worker process to load it."""
    from app.keywords import check
    from app.reload import signal_all
    from app.settings import load_settings

    settings = load_settings()
    report = check(settings.keywords)
    errors = [str(finding) for finding in report.errors]
    if not errors:
        errors = [f"{settings.keywords}: {problem}; list it under retired: if it was taken out on purpose"
                  for problem in _dropped_subscribers(settings.keywords, settings.database_url)]
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        return _fail("not reloaded: the running processes keep the rules they have")
    pids = signal_all(settings.run_dir)
    if not pids:
        return _fail(f"no running optline serve or worker registered in {settings.run_dir}")
    print(f"asked {len(pids)} process{'es' if len(pids) != 1 else ''} to reload {settings.keywords} "
          f"(pids {', '.join(map(str, pids))}); /readyz shows the sha256 each one runs")
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


def _known_brand(brand: str, keywords: str) -> int | None:
    """None when keywords.yaml has this brand, else the failure (one line naming the known brands)."""
    from app.keywords import load_rules

    rules = load_rules(keywords)
    if brand in rules.brands:
        return None
    return _fail(f"unknown brand {brand!r}; {keywords} has {', '.join(sorted(rules.brands))}")


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list and revoke brand API keys."""
    from app.auth import create_key, list_keys, revoke_key
    from app.db import make_engine, run_in_transaction
    from app.main import check_database
    from app.settings import load_settings

    settings = load_settings()
    if args.keys_command == "create" and (failed := _known_brand(args.brand, settings.keywords)) is not None:
        return failed
    check_database(settings)
    engine = make_engine(settings.database_url, writer=True)
    try:
        if args.keys_command == "create":
            info, key = run_in_transaction(engine, lambda c, now: create_key(c, now, brand=args.brand, name=args.name))
            print(f"created key {info.prefix} for brand {info.brand}; store it now, it is not shown again:")
            print(key)
        elif args.keys_command == "list":
            print(f"{'PREFIX':<8}  {'BRAND':<16} {'STATUS':<18} {'CREATED (UTC)':<16}  NAME")
            for info in run_in_transaction(engine, lambda c, now: list_keys(c)):
                state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
                print(f"{info.prefix:<8}  {info.brand:<16} {state:<18} {info.created_at:%Y-%m-%d %H:%M}  {info.name or ''}")
        else:
            info = run_in_transaction(engine, lambda c, now: revoke_key(c, now, key_or_prefix=args.key))
            print(f"revoked key {info.prefix} of brand {info.brand}; every process refuses it from now on")
    finally:
        engine.dispose()
    return 0


def parse_since(text: str) -> datetime:
    """An ISO 8601 time with a zone, or a date alone (midnight UTC); ValueError otherwise."""
    value = text.strip()
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), time(0, tzinfo=UTC))
    since = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if since.tzinfo is None:
        raise ValueError("no time zone")
    return since


def cmd_outbox(args: argparse.Namespace) -> int:
    """Re-drive failed outbox rows that are still allowed (a provider outage outlived their deadline)."""
    from app.db import make_engine, run_in_transaction
    from app.main import check_database, deadlines
    from app.outbox.queue import redrive
    from app.settings import load_settings

    settings = load_settings()
    if args.brand is not None and (failed := _known_brand(args.brand, settings.keywords)) is not None:
        return failed
    check_database(settings)
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError:
            return _fail("--since must be a date (2026-11-26, midnight UTC) or an ISO 8601 time with a zone "
                         "(2026-11-26T09:00:00Z)")
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
    if (failed := _known_brand(args.brand, settings.keywords)) is not None:
        return failed
    query = sa.select(consent_events).where(consent_events.c.brand == args.brand).order_by(consent_events.c.id)
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError:
            return _fail("--since must be a date (2026-11-26, midnight UTC) or an ISO 8601 time with a zone "
                         "(2026-11-26T09:00:00Z)")
        query = query.where(consent_events.c.created_at >= since)
    check_database(settings)
    from app.console.queries import csv_cell

    engine = make_engine(settings.database_url)
    columns = [c.name for c in consent_events.columns]
    writer = csv.writer(sys.stdout, quoting=csv.QUOTE_ALL)  # see csv_cell
    writer.writerow(columns)
    try:
        with engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(query):
                values = row._mapping
                # The console's CSV rule: JSON as JSON, and no free text a spreadsheet would run.
                writer.writerow([csv_cell(c, values[c]) for c in columns])
    finally:
        engine.dispose()
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default; keeps the layout readable at 100 columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Required options have no default, and a None default is spelled out in the help itself.
        if action.required or action.default is None or isinstance(action, argparse._StoreTrueAction):
            return action.help  # (a flag is off unless given)
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option says what it does and its default."""
    parser = argparse.ArgumentParser(
        prog="optline", formatter_class=_Help,
        description="Inbound SMS keyword and double-opt-in gateway. Settings come from OPTLINE_* environment "
                    "variables or a .env file (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_Help)

    serve = command("serve", "serve the webhooks and the API (and the outbox sender unless "
                             "OPTLINE_INPROCESS_WORKER=0); SIGHUP reloads keywords.yaml")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    serve.set_defaults(func=cmd_serve)

    command("worker", "run the outbox sender and the DOI-expiry sweep only; SIGHUP reloads keywords.yaml"
            ).set_defaults(func=cmd_worker)
    command("migrate", "migrate the database (OPTLINE_DATABASE_URL) to the newest schema").set_defaults(func=cmd_migrate)
    command("reload", "check keywords.yaml, then make every running serve and worker process on this machine "
                      "load it (found by their pid files in OPTLINE_RUN_DIR)").set_defaults(func=cmd_reload)

    check = command("check", "validate keywords.yaml: errors (exit 1) and compliance warnings")
    check.add_argument("file", nargs="?", default=None,
                       help="the keywords file (default: OPTLINE_KEYWORDS, else the project's keywords.yaml)")
    check.set_defaults(func=cmd_check)

    simulate = command("simulate", "run one inbound text through the real pipeline and print the reply")
    simulate.add_argument("--from", required=True, metavar="NUMBER",
                          help="the texting phone, E.164 (or whatsapp:+1…, rcs:+1…, messenger:ID) (required)")
    simulate.add_argument("--to", required=True, metavar="NUMBER",
                          help="the brand's number, a sender in keywords.yaml (required)")
    simulate.add_argument("--dry-run", action="store_true",
                          help="print what the text would do (rule, transitions, reply) and write nothing")
    simulate.add_argument("text", help="the text, as the phone would send it")
    simulate.set_defaults(func=cmd_simulate)

    keys = command("keys", "manage brand API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="make a key (printed once, alone on the last line)",
                                 description="make a key (printed once, alone on the last line)", formatter_class=_Help)
    create.add_argument("--brand", required=True, help="the brand it acts for, a key of keywords.yaml (required)")
    create.add_argument("--name", default=None, help="a label for `keys list` (default: none)")
    keys_sub.add_parser("list", help="every key, with its prefix and status", formatter_class=_Help)
    revoke = keys_sub.add_parser("revoke", help="revoke a key; every process refuses it at once",
                                 description="revoke a key; every process refuses it at once", formatter_class=_Help)
    revoke.add_argument("key", metavar="PREFIX_OR_KEY", help="the prefix `keys list` shows, or the whole key")
    keys.set_defaults(func=cmd_keys)

    outbox = command("outbox", "operate the outbox")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    retry = outbox_sub.add_parser("retry", help="re-queue failed rows that are still allowed, with a new deadline",
                                  description="re-queue failed rows that are still allowed, with a new deadline",
                                  formatter_class=_Help)
    retry.add_argument("--since", default=None, metavar="DATE_OR_TIME",
                       help="only rows that failed at or after then: 2026-11-26 (midnight UTC) or "
                            "2026-11-26T09:00:00Z (default: all)")
    retry.add_argument("--brand", default=None, help="only this brand's rows (default: every brand)")
    outbox.set_defaults(func=cmd_outbox)

    export = command("export", "export data")
    export_sub = export.add_subparsers(dest="export_command", required=True, metavar="WHAT")
    consent = export_sub.add_parser("consent", help="the consent ledger of one brand as CSV on stdout",
                                    description="the consent ledger of one brand as CSV on stdout",
                                    formatter_class=_Help)
    consent.add_argument("--brand", required=True, help="a brand key of keywords.yaml (required)")
    consent.add_argument("--since", default=None, metavar="DATE_OR_TIME",
                         help="only events from then on: 2026-11-26 (midnight UTC) or 2026-11-26T09:00:00Z "
                              "(default: the whole ledger)")
    export.set_defaults(func=cmd_export)

    from app.import_cli import add_parser as add_import_parser

    add_import_parser(sub, formatter_class=_Help)
    from app.console.commands import add_parser as add_users_parser

    add_users_parser(sub, formatter_class=_Help)
    from app.proof_commands import add_parser as add_proof_parser

    add_proof_parser(sub, formatter_class=_Help)
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
    except BrokenPipeError:
        # `optline export consent … | head`: the reader has all it wants; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
