"""/console/keywords: the loaded keywords.yaml for the brand, read-only (the file stays the source of
truth, reviewed like code): programs, keywords per language, messages, senders and rates, the
opt-out scope and quiet hours when configured, `optline check`'s warnings, and the file's sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.console.web import Ctx, page
from app.keywords import Brand, Finding, Rules, check


def _about_brand(finding: Finding, brand: str) -> bool:
    # check's messages name a brand as 'acme' or a program as 'acme/deals'; other brands' stay hidden.
    return f"'{brand}'" in finding.message or f"'{brand}/" in finding.message


def _on_disk(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _facts(rules: Rules, brand: Brand, providers: list[str]) -> dict[str, Any]:
    report = check(rules.path, providers=providers)
    senders = {s: rules.sender_config(s) for program in brand.programs.values() for s in program.senders}
    return {
        "warnings": [f for f in report.warnings if _about_brand(f, brand.key)],
        "errors": [f for f in report.errors if _about_brand(f, brand.key)],
        "file_errors": len(report.errors),
        "disk_sha256": _on_disk(rules.path),
        "senders": senders,
    }


@page("console:keywords")
async def keywords(ctx: Ctx) -> Response:
    """GET /console/keywords: what keywords.yaml says for this brand, and what `optline check` warns."""
    rules, brand = ctx.state.rules, ctx.brand
    providers = list(getattr(ctx.state.settings, "providers", None) or []) or None
    facts = await run_in_threadpool(_facts, rules, brand, providers)  # reads and parses the file: off the loop
    extra = {name: getattr(brand, name) for name in ("opt_out_scope", "quiet_hours", "timezone")
             if getattr(brand, name, None) not in (None, "", ())}
    return ctx.render("keywords.html", rules=rules, loaded_sha256=rules.sha256, extra=extra, **facts)
