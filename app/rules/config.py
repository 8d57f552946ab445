"""The consent-rule fields of keywords.yaml, read and checked with the rest of the file (app.keywords).

Brand: `opt_out_scope: brand | sender` (default brand) and `quiet_hours: {start: "09:00", end:
"20:00"}` (narrows the law's window, never widens it). Program: `max_per_day: N` and
`marketing: true`. The loader calls these with itself; nothing here imports it back.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yaml.nodes import Node

SCOPES = ("brand", "sender")
# The FCC's revoke-all rule (47 CFR 64.1200(a)(10), FCC 24-24) is in force from this day: a
# plain opt-out then covers every text from the brand, not the programs of one number.
REVOKE_ALL_FROM = date(2027, 1, 31)
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_MAX_PER_DAY = 1000


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


def load_brand_fields(loader: Any, brand: Any, fields: dict[str, tuple[Node, Node]], where: str) -> None:
    """opt_out_scope and quiet_hours of one brand."""
    if "opt_out_scope" in fields:
        kn, vn = fields["opt_out_scope"]
        brand.opt_out_scope_line = _line(kn)
        value = loader.text(vn, f"{where}.opt_out_scope")
        if value is not None and value not in SCOPES:
            loader.error(_line(vn), f"{where}.opt_out_scope must be 'brand' (every program) or 'sender', not '{value}'")
        elif value is not None:
            brand.opt_out_scope = value
    if "quiet_hours" in fields:
        kn, vn = fields["quiet_hours"]
        parts = loader.mapping(vn, f"{where}.quiet_hours", _line(kn), ("start", "end"), ("start", "end")) or {}
        bounds: list[time] = []
        for name in ("start", "end"):
            if name in parts:
                text = loader.text(parts[name][1], f"{where}.quiet_hours.{name}")
                m = _HHMM.fullmatch(text or "")
                if text is not None and m is None:
                    loader.error(_line(parts[name][1]), f"{where}.quiet_hours.{name}: '{text}' is not a time like 09:00")
                elif m is not None:
                    bounds.append(time(int(m.group(1)), int(m.group(2))))
        if len(bounds) == 2:
            if bounds[0] >= bounds[1]:
                loader.error(_line(kn), f"{where}.quiet_hours: start must be before end (the window is one day's)")
            else:
                brand.quiet_hours = (bounds[0], bounds[1])


def load_program_fields(loader: Any, program: Any, fields: dict[str, tuple[Node, Node]], where: str) -> None:
    """max_per_day and marketing of one program."""
    if "max_per_day" in fields:
        vn = fields["max_per_day"][1]
        text = loader.text(vn, f"{where}.max_per_day")
        if text is not None:
            if not text.isdigit() or not 1 <= int(text) <= _MAX_PER_DAY:
                loader.error(_line(vn), f"{where}.max_per_day must be a whole number from 1 to {_MAX_PER_DAY}")
            else:
                program.max_per_day = int(text)
    if "marketing" in fields:
        value = loader.boolean(fields["marketing"][1], f"{where}.marketing")
        if value is not None:
            program.marketing = value


def brand_warnings(loader: Any, brand: Any) -> None:
    """`sender` scope once revoke-all is in force."""
    today: date = getattr(loader, "today", None) or date.today()
    if brand.opt_out_scope == "sender" and today > REVOKE_ALL_FROM:
        loader.warn(
            brand.opt_out_scope_line or brand.line,
            f"brand '{brand.key}': opt_out_scope 'sender' after {REVOKE_ALL_FROM.isoformat()}: the FCC's revoke-all "
            "rule (47 CFR 64.1200(a)(10)) makes a plain STOP end every text from the brand; use 'brand'",
        )
