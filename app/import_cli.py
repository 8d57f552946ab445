"""`optline import opt-outs FILE --brand B`: an opt-out list from a file (CSV, or a JSON array), as the API imports it."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_import(args: argparse.Namespace) -> int:
    """Import an opt-out list; prints the batch id, the counts and the first bad rows by line."""
    from app import suppression
    from app.db import lock_phones, make_engine, utcnow
    from app.keywords import load_rules
    from app.main import check_database
    from app.settings import load_settings

    settings = load_settings()
    rules = load_rules(settings.keywords)
    if args.brand not in rules.brands:
        print(f"optline: unknown brand {args.brand!r} (brands: {', '.join(rules.brands)})", file=sys.stderr)
        return 2
    brand = rules.brands[args.brand]
    kind = args.format or ("json" if args.file.lower().endswith(".json") else "csv")
    check_database(settings)
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            batch_id = suppression.start(conn, utcnow(), brand=brand.key, origin="cli", api_key_id=None)
        tally = suppression.Tally(batch_id=batch_id)
        reader = suppression.Reader(kind)
        now = utcnow()

        def records() -> Any:
            with open(args.file, "rb") as handle:
                while data := handle.read(1 << 20):
                    yield from reader.feed(data)
            yield from reader.close()

        for rows in suppression.chunks(brand, tally, records(), now):
            with engine.begin() as conn:
                lock_phones(conn, [row.phone for row in rows])
                applied, unchanged = suppression.apply_rows(conn, utcnow(), brand=brand, rows=rows,
                                                            batch_id=batch_id, api_key_id=None)
            tally.applied += applied
            tally.unchanged += unchanged
        with engine.begin() as conn:
            suppression.finish(conn, utcnow(), brand=brand, tally=tally)
    finally:
        engine.dispose()
    for line, message in tally.errors:
        print(f"line {line}: {message}", file=sys.stderr)
    print(f"batch {tally.batch_id}: {tally.rows} rows, {tally.applied} applied, {tally.unchanged} already opted out, "
          f"{tally.rejected} rejected")
    return 0


def add_parser(sub: Any, *, formatter_class: Any) -> None:
    """The `import` command and its `opt-outs` action."""
    help_ = "import data"
    imp = sub.add_parser("import", help=help_, description=help_, formatter_class=formatter_class)
    what = imp.add_subparsers(dest="import_command", required=True, metavar="WHAT")
    text = ("an opt-out list: each row opts its phone out (source import, one batch id); phones already "
            "opted out change nothing, so a second import of the same file changes nothing")
    opt_outs = what.add_parser("opt-outs", help=text, description=text, formatter_class=formatter_class)
    opt_outs.add_argument("file", metavar="FILE", help="CSV with a header naming phoneNumber (and optionally "
                                                       "optedOutAt, program), or a JSON array of such objects")
    opt_outs.add_argument("--brand", required=True, help="a brand key of keywords.yaml (required)")
    opt_outs.add_argument("--format", choices=("csv", "json"), default=None,
                          help="the file's format (default: json for a .json file, else csv)")
    imp.set_defaults(func=cmd_import)
